"""Parallelisation schemes: each launches training workers as Spark barrier tasks.

A scheme is chosen by name (``train.scheme`` in ``params.yaml``). Every scheme returns one ordinary
state dict of :class:`~pipeline.model.MultimodalCNN`, so evaluation treats all schemes alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pipeline.errors import TrainingError
from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.worker import train_worker


class TrainingScheme(ABC):
    """How the model and the data are laid out across ``workers`` Spark tasks."""

    name: ClassVar[str]

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"train.workers must be at least 1, got {workers}")
        self.workers = workers

    @abstractmethod
    def fit(self, spark: object, job: TrainJob) -> TrainResult:
        """Train on the Spark application ``spark`` and return rank 0's result."""


class DataParallel(TrainingScheme):
    """N full replicas; gradients all-reduced by DistributedDataParallel over gloo.

    Workers run as Spark barrier tasks started by ``TorchDistributor`` (``local_mode=False``), so
    the same code runs on a local master or a cluster.
    """

    name = "data_parallel"

    def fit(self, spark: object, job: TrainJob) -> TrainResult:
        """Run :func:`train_worker` on ``self.workers`` barrier tasks."""
        from pyspark.ml.torch.distributor import TorchDistributor

        slots = _task_slots(spark)
        if slots is not None and self.workers > slots:
            raise TrainingError(
                f"train.workers is {self.workers} but the Spark application has only {slots} "
                "task slots, so the barrier stage could never start. Fix: lower train.workers "
                "or give Spark more cores (spark.master, e.g. local[4], or more executors)"
            )
        distributor = TorchDistributor(num_processes=self.workers, local_mode=False,
                                       use_gpu=False)
        try:
            result = distributor.run(train_worker, job)
        except Exception as exc:
            raise TrainingError(f"{self.name} training on Spark failed: {exc}") from exc
        if not isinstance(result, TrainResult):
            raise TrainingError(f"{self.name} training returned no result from rank 0")
        return result


SCHEMES: dict[str, type[TrainingScheme]] = {DataParallel.name: DataParallel}


def scheme_for(name: str, workers: int) -> TrainingScheme:
    """The scheme registered as ``name``."""
    if name not in SCHEMES:
        raise ValueError(f"train.scheme must be one of {sorted(SCHEMES)}, got {name!r}")
    return SCHEMES[name](workers)


def _task_slots(spark: object) -> int | None:
    """How many tasks the application can run at once, when Spark can tell."""
    context = spark.sparkContext  # type: ignore[attr-defined]
    task_cpus = int(context.getConf().get("spark.task.cpus", "1"))
    parallelism = context.defaultParallelism
    if context.master.startswith("local"):
        return parallelism // task_cpus
    return None  # executors may still be joining a cluster: let the barrier stage wait
