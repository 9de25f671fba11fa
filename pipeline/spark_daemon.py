"""Spark's Python daemon, with the modules this project's tasks run imported before it forks.

Spark starts one Python daemon per executor and forks a Python worker from it for each task
(``spark.python.daemon.module``, set by :func:`pipeline.spark.spark_conf`). Forked from this
daemon, every worker starts with PyTorch, the model, the training loop, inference and the
raster windows already imported (and what PyTorch and NumPy would import lazily on the way:
``torch._dynamo``, which DDP's and the optimisers' constructors import, cost each training worker
process 2-5 s), instead of importing them itself: four workers importing
PyTorch at once on a 2-core machine took 25-32 s before their first task, 8-15 s from this
daemon (load 7-11; ``docs/operations.md``). Nothing here starts a thread, so forking stays
safe. The daemon itself is PySpark's.
"""

import numpy.ma  # noqa: F401  (np.quantile imports it on first use: the step-time quantiles)
import torch._dynamo  # noqa: F401  (DDP's and the optimisers' constructors import it: 2-5 s)
from pyspark import daemon

import pipeline.data.window_task  # noqa: F401  (rasterio: prepare's windows)
import pipeline.inference.data_parallel  # noqa: F401  (evaluate: inference and the map)
import pipeline.inference.landcover_map  # noqa: F401
import pipeline.inference.model_parallel  # noqa: F401
import pipeline.training.worker  # noqa: F401  (torch, the model, the strategies)

if __name__ == "__main__":
    daemon.manager()
