from pathlib import Path

import mlflow
import pytest
import torch

from pipeline.config import Params, TrackingParams
from pipeline.tracking import (
    log_evaluation,
    log_training,
    resumed_run,
    run_reference,
    training_run,
)
from pipeline.training.job import TrainResult


@pytest.fixture
def params(tmp_path: Path) -> Params:
    tracking = TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="unit")
    return Params(tracking=tracking)


def test_run_records_every_parameter_and_training_figures(params: Params, tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"weights")
    result = TrainResult(state_dict={"w": torch.zeros(1)}, steps=5, wall_time_s=1.5,
                         history=[{"epoch": 1, "loss": 0.9, "val_accuracy": 0.5},
                                  {"epoch": 2, "loss": 0.4, "val_accuracy": 0.8}])
    with training_run(params) as run:
        log_training(result, model_dir)
    client = mlflow.MlflowClient(params.tracking.uri)
    stored = client.get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {k: str(v) for k, v in params.flat().items()}
    assert stored.data.metrics["training_time_s"] == 1.5
    assert [m.value for m in client.get_metric_history(run.info.run_id, "epoch_loss")] == [0.9, 0.4]
    assert stored.data.tags["scheme"] == "data_parallel"
    assert stored.data.tags["world_size"] == "1"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.pt"]


def test_failing_stage_marks_the_run_failed_with_the_error(params: Params) -> None:
    with pytest.raises(RuntimeError), training_run(params) as run:
        raise RuntimeError("worker 1 died")
    stored = mlflow.MlflowClient(params.tracking.uri).get_run(run.info.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["error"] == "RuntimeError: worker 1 died"


def test_evaluation_lands_in_the_training_run(params: Params) -> None:
    with training_run(params) as run:
        pass
    reference = run_reference(run, params.tracking)
    with resumed_run(reference, params.tracking):
        log_evaluation({"overall_accuracy": 0.9, "kappa": 0.8})
    stored = mlflow.MlflowClient(params.tracking.uri).get_run(run.info.run_id)
    assert stored.data.metrics["test_overall_accuracy"] == 0.9
    assert stored.data.metrics["test_kappa"] == 0.8
    assert stored.info.status == "FINISHED"
