"""MLflow tracking: one run per training, its evaluation logged into the same run.

The train stage creates the run and leaves its id in the model folder (``run.json``); the
evaluate stage reopens that run. A stage that raises leaves its run marked FAILED with the error
recorded as the ``error`` tag.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from pipeline.config import Params, TrackingParams
from pipeline.errors import DatasetError
from pipeline.training.job import TrainResult

RUN_FILE = "run.json"


@contextmanager
def _recording_errors() -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:5000])
        raise


@contextmanager
def training_run(params: Params, run_name: str | None = None,
                 tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run with every parameter of ``params`` logged; FAILED if the body raises."""
    mlflow.set_tracking_uri(params.tracking.uri)
    mlflow.set_experiment(params.tracking.experiment)
    with mlflow.start_run(run_name=run_name) as run, _recording_errors():
        mlflow.log_params(params.flat())
        mlflow.set_tags({"scheme": params.train.scheme, "spark_master": params.spark.master}
                        | (tags or {}))
        yield run


def log_training(result: TrainResult, model_dir: Path) -> None:
    """Log the training figures (time, traffic, CPU, memory, every worker's), the per-epoch
    curves and the model folder to the active run."""
    mlflow.set_tag("world_size", str(result.world_size))
    mlflow.log_metrics(result.metrics())
    for record in result.history:
        step = int(record["epoch"])
        mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"},
                           step=step)
    mlflow.log_artifacts(str(model_dir), artifact_path="model")


def run_reference(run: mlflow.ActiveRun, tracking: TrackingParams) -> dict[str, str]:
    """What a later stage needs to reopen ``run``."""
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
            "tracking_uri": tracking.uri}


def read_run_reference(model_dir: Path) -> dict[str, str]:
    """The run reference saved with a trained model."""
    path = Path(model_dir) / RUN_FILE
    if not path.is_file():
        raise DatasetError(path, "the model has no MLflow run reference",
                           "re-run the train stage (`dvc repro train`)")
    return json.loads(path.read_text())


@contextmanager
def resumed_run(reference: dict[str, str], tracking: TrackingParams) -> Iterator[mlflow.ActiveRun]:
    """Reopen the run a model was trained in; FAILED if the body raises."""
    mlflow.set_tracking_uri(tracking.uri)
    with mlflow.start_run(run_id=reference["run_id"]) as run, _recording_errors():
        yield run


def log_evaluation(metrics: dict[str, Any], prefix: str = "test_") -> None:
    """Log evaluation metrics to the active run."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()})


def log_evaluation_artifacts(folder: Path, artifact_path: str = "evaluation") -> None:
    """Log the files of an evaluation (reports, confusion matrix, map) to the active run."""
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
