"""landcover-mlops: the library behind the pipeline's stages.

Modules, one job each:
``config`` (typed ``params.yaml``), ``runtime`` (process environment), ``spark`` (SparkSession),
``data`` (scene generation, patch preparation, datasets), ``model`` (the multimodal CNN),
``training`` (parallelisation schemes), ``evaluation`` (scikit-learn metrics),
``tracking`` (MLflow), ``io`` (atomic writes).
"""

__version__ = "0.1.0"
