"""Train stage: the multimodal CNN on Spark under one scheme, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import ModelParams, TrainParams, load_params
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepared_store import dataset_fingerprint
from pipeline.model_store import load_model, save_model
from pipeline.spark import spark_session
from pipeline.stage_clock import CLOCK, WORK
from pipeline.tracking import (
    RUN_FILE,
    dvc_out_hash,
    git_commit,
    log_dataset,
    log_pytorch_model,
    log_training,
    open_pipeline_run,
    record_attempt,
    run_reference,
    training_run,
)
from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.trainer import train_model


@task(cache_policy=NO_CACHE)
def train_on_spark(spark: object, train: TrainParams, model: ModelParams, data: str,
                   checkpoints: str, run_id: str) -> tuple[TrainJob, TrainResult]:
    """Run distributed training on the Spark application ``spark``.

    A retry resumes from the last checkpoint in ``checkpoints``. Each attempt is recorded on the
    MLflow run ``run_id`` (``train_attempts``, and a failed attempt's error).
    """
    attempt = task_run.run_count  # 1, then 2 on the first retry
    try:
        out = train_model(spark, train, model, Path(data), checkpoint_dir=Path(checkpoints))
    except Exception as exc:
        record_attempt(run_id, attempt, exc)
        raise
    record_attempt(run_id, attempt)
    return out


@flow(name="train", log_prints=True)
def train_flow(params: str = LAYOUT.params, data: str = LAYOUT.prepared,
               out: str | None = None, scheme: str | None = None) -> dict:
    """Train under ``scheme`` (default ``train.scheme``) on the prepared data in ``data``.

    Writes the model to ``out`` (default ``models/<scheme>``) and logs an MLflow run named after
    the scheme, nested under the open pipeline run of these parameters and data (opened if
    there is none), with every parameter, provenance tags, the data as dataset input, the
    traffic, CPU and memory figures of every worker and the model (``mlflow.pytorch``).
    """
    config = load_params(params).for_scheme(scheme)
    scheme = config.train.scheme
    out = out or LAYOUT.model_dir(scheme)
    data_hash = dataset_fingerprint(data)
    provenance = {"data_hash": data_hash, "git_commit": git_commit(),
                  "dvc_data_md5": dvc_out_hash(LAYOUT.lock, data)}
    parent = open_pipeline_run(config, data_hash, tags=provenance)
    with training_run(config, run_name=scheme, tags=provenance, parent_run_id=parent) as run:
        log_dataset(data, data_hash, config.ingest.source)
        with spark_session(config.spark) as spark, CLOCK.phase("worker launch and results"):
            job, result = train_on_spark.with_options(retries=config.train.retries)(
                spark, config.train, config.model, data, LAYOUT.checkpoint_dir(scheme),
                run.info.run_id)
            CLOCK.add(WORK, result.wall_time_s)  # the workers' training loop
        with CLOCK.phase("model saved and logged"):
            dataset = PreparedDataset.open(data)
            save_model(Path(out), result.state_dict, job.model, dataset.class_names,
                       extra={"history.json": result.history, "workers.json": result.workers,
                              RUN_FILE: run_reference(run, config.tracking)
                              | {"parent_run_id": parent}})
            log_training(result, Path(out))
            example, _ = dataset.split("train").batch(list(range(2)))
            log_pytorch_model(load_model(Path(out))[0], example)
    print(f"trained {scheme} on {result.world_size} workers in {result.wall_time_s:.1f}s "
          f"({result.metrics()['payload_bytes_sent_per_step']:,.0f} payload bytes sent per "
          "step); "
          f"MLflow run {run.info.run_id}")
    return {"run_id": run.info.run_id, "scheme": scheme, **result.metrics()}


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.train [--params P] [--scheme S] [--data DIR] [--out DIR]``."""
    run_stage(train_flow, __doc__, {"params": LAYOUT.params, "scheme": None,
                                    "data": LAYOUT.prepared, "out": None}, argv,
              tracked=True)


if __name__ == "__main__":
    main()
