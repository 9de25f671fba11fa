"""The train stage's library entry point: from typed params and a prepared dataset to weights."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ModelParams, TrainParams
from pipeline.data.dataset import PreparedDataset
from pipeline.model import ModelConfig
from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.schemes import scheme_for


def model_config(model: ModelParams, dataset: PreparedDataset) -> ModelConfig:
    """The network's shape: sizes from ``params.yaml``, inputs and classes from the data."""
    return ModelConfig(channels=dataset.channels, num_classes=len(dataset.class_names),
                       branch_width=model.branch_width, branch_depth=model.branch_depth,
                       fusion_width=model.fusion_width)


def make_job(train: TrainParams, model: ModelParams, data_dir: Path,
             threads_per_worker: int = 1) -> TrainJob:
    """The job every worker runs, built on the driver."""
    dataset = PreparedDataset.open(data_dir)
    return TrainJob(
        data_dir=str(Path(data_dir).resolve()), model=model_config(model, dataset),
        batch_size=train.batch_size, epochs=train.epochs, learning_rate=train.learning_rate,
        momentum=train.momentum, seed=train.seed, threads_per_worker=threads_per_worker,
        timeout_s=train.timeout_s,
    )


def train_model(spark: object, train: TrainParams, model: ModelParams,
                data_dir: Path) -> tuple[TrainJob, TrainResult]:
    """Train with the scheme ``train.scheme`` on the Spark application ``spark``."""
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))  # type: ignore[attr-defined]
    job = make_job(train, model, data_dir, threads_per_worker=task_cpus)
    return job, scheme_for(train.scheme, train.workers).fit(spark, job)
