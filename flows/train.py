"""Train stage: the multimodal CNN on Spark under ``train.scheme``, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import ModelParams, TrainParams, load_params
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import dataset_fingerprint
from pipeline.model_store import save_model
from pipeline.spark import spark_session
from pipeline.tracking import RUN_FILE, log_training, run_reference, training_run
from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.trainer import train_model


@task(cache_policy=NO_CACHE)
def train_on_spark(spark: object, train: TrainParams, model: ModelParams,
                   data: str) -> tuple[TrainJob, TrainResult]:
    """Run distributed training on the Spark application ``spark``."""
    return train_model(spark, train, model, Path(data))


@flow(name="train", log_prints=True)
def train_flow(params: str = LAYOUT.params, data: str = LAYOUT.prepared,
               out: str = LAYOUT.models) -> dict:
    """Train on the prepared data in ``data``; write the model to ``out``; log an MLflow run."""
    config = load_params(params)
    with training_run(config, run_name=config.train.scheme,
                      tags={"data_hash": dataset_fingerprint(data)}) as run:
        with spark_session(config.spark) as spark:
            job, result = train_on_spark(spark, config.train, config.model, data)
        save_model(Path(out), result.state_dict, job.model,
                   PreparedDataset.open(data).class_names,
                   extra={"history.json": result.history,
                          RUN_FILE: run_reference(run, config.tracking)})
        log_training(result, Path(out))
    print(f"trained {config.train.scheme} on {result.world_size} workers in "
          f"{result.wall_time_s:.1f}s; MLflow run {run.info.run_id}")
    return {"run_id": run.info.run_id, "training_time_s": result.wall_time_s}


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.train [--params P] [--data DIR] [--out DIR]``."""
    run_stage(train_flow, __doc__,
              {"params": LAYOUT.params, "data": LAYOUT.prepared, "out": LAYOUT.models}, argv)


if __name__ == "__main__":
    main()
