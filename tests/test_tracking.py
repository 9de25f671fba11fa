from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from pipeline.config import CompareParams, IngestParams, Params, TrackingParams
from pipeline.model import ModelConfig, MultimodalCNN
from pipeline.tracking import (
    MODEL_URI_TAG,
    PARENT_TAG,
    compared_runs,
    latest_pipeline_run,
    log_dataset,
    log_evaluation,
    log_pytorch_model,
    log_training,
    open_pipeline_run,
    register_best,
    resumed_run,
    run_reference,
    training_run,
)
from pipeline.training.job import TrainResult

from .conftest import seed_mlflow_store


@pytest.fixture
def params(tmp_path: Path) -> Params:
    seed_mlflow_store(tmp_path)  # its schema made once: these tests are about the runs
    tracking = TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return Params(tracking=tracking)


def client(params: Params) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(params.tracking.uri)


def tiny_model() -> MultimodalCNN:
    torch.manual_seed(0)
    return MultimodalCNN(ModelConfig(channels={"s2": 4, "s1": 2}, num_classes=3,
                                     branch_width=4, branch_depth=1, fusion_width=8))


def test_run_records_every_parameter_and_training_figures(params: Params, tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"weights")
    result = TrainResult(state_dict={"w": torch.zeros(1)}, steps=5, wall_time_s=1.5,
                         history=[{"epoch": 1, "loss": 0.9, "val_accuracy": 0.5},
                                  {"epoch": 2, "loss": 0.4, "val_accuracy": 0.8}])
    with training_run(params) as run:
        log_training(result, model_dir)
    stored = client(params).get_run(run.info.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.params == {k: str(v) for k, v in params.flat().items()}
    assert stored.data.metrics["training_time_s"] == 1.5
    history = client(params).get_metric_history(run.info.run_id, "epoch_loss")
    assert [m.value for m in history] == [0.9, 0.4]
    assert stored.data.tags["scheme"] == "data_parallel"
    assert stored.data.tags["world_size"] == "1"
    assert stored.data.tags["data_source"] == "synthetic"
    artifacts = client(params).list_artifacts(run.info.run_id, "model_files")
    assert [a.path for a in artifacts] == ["model_files/model.pt"]


def test_one_experiment_per_dataset(params: Params) -> None:
    scene = params.model_copy(update={"ingest": IngestParams(source="bigearthnet")})
    with training_run(params) as first:
        pass
    with training_run(scene) as second:
        pass
    experiments = {r: client(params).get_experiment(
        client(params).get_run(r).info.experiment_id).name
        for r in (first.info.run_id, second.info.run_id)}
    assert experiments == {first.info.run_id: "landcover-synthetic",
                           second.info.run_id: "landcover-bigearthnet"}


def test_stages_of_one_pipeline_run_share_one_parent(params: Params) -> None:
    parent = open_pipeline_run(params, "data-1")
    assert open_pipeline_run(params, "data-1") == parent  # a later stage finds it
    assert open_pipeline_run(params, "data-2") != parent  # other data: another pipeline run
    for scheme in ("data_parallel", "hybrid"):
        with training_run(params.for_scheme(scheme), run_name=scheme, parent_run_id=parent):
            pass
    stored = client(params).get_run(parent)
    children = compared_runs(params.tracking, stored)
    assert sorted(c.data.tags["scheme"] for c in children) == ["data_parallel", "hybrid"]
    assert {c.data.tags[PARENT_TAG] for c in children} == {parent}
    assert stored.info.status == "RUNNING"  # open until the compare stage closes it
    assert stored.data.params["train.batch_size"] == "64"
    assert "train.scheme" not in stored.data.params
    assert latest_pipeline_run(params).info.run_id != parent  # data-2's is newer


def test_failing_stage_marks_its_run_and_the_parent_failed(params: Params) -> None:
    parent = open_pipeline_run(params, "data")
    with pytest.raises(RuntimeError), training_run(params, parent_run_id=parent) as run:
        raise RuntimeError("worker 1 died")
    stored = client(params).get_run(run.info.run_id)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["error"] == "RuntimeError: worker 1 died"
    failed_parent = client(params).get_run(parent)
    assert failed_parent.info.status == "FAILED"
    assert failed_parent.data.tags["error"] == "RuntimeError: worker 1 died"
    assert open_pipeline_run(params, "data") != parent  # the next pipeline run starts afresh


def test_evaluation_lands_in_the_training_run(params: Params) -> None:
    with training_run(params) as run:
        pass
    reference = run_reference(run, params.tracking)
    with resumed_run(reference, params.tracking):
        log_evaluation({"overall_accuracy": 0.9, "kappa": 0.8})
    stored = client(params).get_run(run.info.run_id)
    assert stored.data.metrics["test_overall_accuracy"] == 0.9
    assert stored.data.metrics["test_kappa"] == 0.8
    assert stored.info.status == "FINISHED"


def test_training_data_is_a_dataset_input_with_its_source(params: Params,
                                                          tmp_path: Path) -> None:
    with training_run(params) as run:
        log_dataset(tmp_path, "f" * 64, "synthetic")
    inputs = client(params).get_run(run.info.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.name == "prepared-synthetic"
    assert str(tmp_path) in inputs[0].dataset.source
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"


def test_logged_model_loads_and_predicts_like_the_network(params: Params) -> None:
    model = tiny_model().eval()
    example = {"s2": torch.randn(3, 4, 5, 5), "s1": torch.randn(3, 2, 5, 5)}
    with training_run(params) as run:
        uri = log_pytorch_model(model, example)
    assert client(params).get_run(run.info.run_id).data.tags[MODEL_URI_TAG] == uri
    loaded = mlflow.pyfunc.load_model(uri)
    assert loaded.metadata.signature is not None
    stacked = torch.cat([example["s2"], example["s1"]], dim=1).numpy()
    predicted = loaded.predict(stacked)
    with torch.no_grad():
        expected = model(example).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def _scheme_run(params: Params, parent: str, scheme: str, accuracy: float | None,
                fail: bool = False, test_accuracy: float = 0.5) -> mlflow.entities.Run:
    config = params.for_scheme(scheme)
    try:
        with training_run(config, run_name=scheme, parent_run_id=parent) as run:
            log_pytorch_model(tiny_model(), {"s2": torch.randn(2, 4, 5, 5),
                                             "s1": torch.randn(2, 2, 5, 5)})
            if accuracy is not None:
                mlflow.log_metrics({"val_overall_accuracy": accuracy,
                                    "test_overall_accuracy": test_accuracy})
            if fail:
                raise RuntimeError("evaluation crashed")
    except RuntimeError:
        pass
    return client(params).get_run(run.info.run_id)


def test_best_complete_model_is_registered_with_an_alias(params: Params) -> None:
    parent = open_pipeline_run(params, "data")
    runs = [_scheme_run(params, parent, "data_parallel", 0.8),
            _scheme_run(params, parent, "hybrid", 0.9),
            _scheme_run(params, parent, "branch_parallel", None)]
    registered = register_best(params.tracking, CompareParams(), parent, runs)
    assert registered["scheme"] == "hybrid"
    version = client(params).get_model_version_by_alias("landcover-classifier", "champion")
    assert str(version.version) == registered["version"]
    assert version.tags["run_id"] == runs[1].info.run_id
    assert client(params).get_run(parent).data.tags["best_scheme"] == "hybrid"


def test_the_champion_is_chosen_on_the_validation_split(params: Params) -> None:
    parent = open_pipeline_run(params, "data")
    runs = [_scheme_run(params, parent, "data_parallel", 0.8, test_accuracy=0.95),
            _scheme_run(params, parent, "hybrid", 0.9, test_accuracy=0.7)]
    registered = register_best(params.tracking, CompareParams(), parent, runs)
    assert CompareParams().metric == "val_overall_accuracy"
    assert registered["scheme"] == "hybrid"  # the better validation figure, not test


def test_nothing_half_logged_is_registered(params: Params) -> None:
    parent = "unused"
    runs = [_scheme_run(params, None, "hybrid", 0.99, fail=True)]  # logged, then failed
    assert runs[0].info.status == "FAILED"
    assert register_best(params.tracking, CompareParams(), parent, runs) is None
    assert client(params).search_registered_models() == []
