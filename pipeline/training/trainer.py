"""The train stage's library entry point: from typed params and a prepared dataset to weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import ModelParams, TrainParams
from pipeline.data.dataset import PreparedDataset
from pipeline.model import ModelConfig
from pipeline.training.job import ParallelSettings, TrainJob, TrainResult
from pipeline.training.schemes import fit


def model_config(model: ModelParams, dataset: PreparedDataset) -> ModelConfig:
    """The network's shape: sizes from ``params.yaml``, inputs and classes from the data."""
    return ModelConfig(channels=dataset.channels, num_classes=len(dataset.class_names),
                       task=dataset.task, **model.shape())


def parallel_settings(train: TrainParams, scheme: str | None = None) -> ParallelSettings:
    """The parallelisation of ``scheme`` (default ``train.scheme``) from ``params.yaml``."""
    dp, mp = train.data_parallel, train.model_parallel
    return ParallelSettings(
        scheme=scheme or train.scheme, workers=train.workers,
        gradient_compression=dp.gradient_compression, powersgd_rank=dp.powersgd_rank,
        sync_every=dp.sync_every, bucket_cap_mb=dp.bucket_cap_mb, micro_batches=mp.micro_batches,
        activation_dtype=mp.activation_dtype, head_placement=mp.head_placement,
        pipeline_stages=mp.pipeline_stages, replicas=mp.replicas)


def make_job(train: TrainParams, model: ModelParams, data_dir: Path, scheme: str | None = None,
             threads_per_worker: int = 1, checkpoint_dir: Path | None = None) -> TrainJob:
    """The job every worker runs, built on the driver."""
    dataset = PreparedDataset.open(data_dir)
    return TrainJob(
        data_dir=str(Path(data_dir).resolve()), model=model_config(model, dataset),
        batch_size=train.batch_size, epochs=train.epochs, learning_rate=train.learning_rate,
        momentum=train.momentum, seed=train.seed, parallel=parallel_settings(train, scheme),
        threads_per_worker=threads_per_worker, timeout_s=train.timeout_s,
        checkpoint_dir=str(Path(checkpoint_dir).resolve()) if checkpoint_dir else None,
        checkpoint_every=train.checkpoint_every,
        timeline_interval_s=train.timeline_interval_s,
    )


def train_model(spark: Any, train: TrainParams, model: ModelParams, data_dir: Path,
                scheme: str | None = None,
                checkpoint_dir: Path | None = None) -> tuple[TrainJob, TrainResult]:
    """Train under ``scheme`` (default ``train.scheme``) on the Spark application ``spark``.

    Checkpoints to (and resumes from) ``checkpoint_dir`` when given.
    """
    task_cpus = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    job = make_job(train, model, data_dir, scheme, threads_per_worker=task_cpus,
                   checkpoint_dir=checkpoint_dir)
    patch_size = int(PreparedDataset.open(data_dir).manifest["patch_size"])
    return job, fit(spark, job, patch_size)
