"""The whole pipeline, as a user runs it: `dvc repro` in a fresh project, then the Prefect flow.

One project copy is shared by the steps, in order: each step starts from the state the previous
one left, as a user's project would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from .conftest import SMALL_PARAMS, dvc, make_project, sh

pytestmark = pytest.mark.slow

SCHEMES = SMALL_PARAMS["train"]["compare"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_api: dict[str, str]) -> Path:
    """The user's project; its stage commands report to the session's Prefect server."""
    return make_project(tmp_path_factory.mktemp("project") / "landcover", SMALL_PARAMS)


def store(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def runs(root: Path, role: str = "scheme") -> list[mlflow.entities.Run]:
    client = store(root)
    experiment = client.get_experiment_by_name("landcover-synthetic")
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`landcover.role` = '{role}'",
                              order_by=["attributes.start_time ASC"])


def assert_one_parent_with_a_child_per_scheme(root: Path, parent: mlflow.entities.Run,
                                              children: list[mlflow.entities.Run]) -> None:
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.tags["scheme"] for c in children) == sorted(SCHEMES)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    # every child has the same parameter and metric names: the compare view lines them up
    assert len({frozenset(c.data.params) for c in children}) == 1
    assert len({frozenset(c.data.metrics) for c in children}) == 1
    for child in children:
        for tag in ("scheme", "world_size", "git_commit", "data_hash", "dvc_data_md5",
                    "data_source", "model_uri"):
            assert child.data.tags.get(tag) not in (None, "", "unknown"), tag
        assert child.inputs.dataset_inputs[0].dataset.digest == child.data.tags["data_hash"][:36]
    artifacts = {a.path for a in store(root).list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/comparison.md",
            "comparison/accuracy_vs_bytes_sent.png",
            "comparison/accuracy_vs_training_time.png"} <= artifacts
    version = store(root).get_model_version_by_alias("landcover-classifier", "champion")
    assert version.tags["pipeline_run_id"] == parent.info.run_id
    best = max(children, key=lambda c: c.data.metrics["val_overall_accuracy"])  # not on test
    assert version.tags["run_id"] == best.info.run_id


def metrics_of(root: Path, scheme: str) -> dict[str, float]:
    return json.loads((root / "metrics" / f"{scheme}.json").read_text())


def test_dvc_repro_runs_every_stage_and_tracks_each_scheme(project: Path) -> None:
    out = sh(sys.executable, "-m", "dvc", "repro", cwd=project).stdout
    stages = ["ingest", "prepare", *(f"{s}@{scheme}" for scheme in SCHEMES
                                     for s in ("train", "evaluate")), "compare"]
    for stage in stages:
        assert f"Running stage '{stage}'" in out
    # each stage recorded its wall time, for the benchmark report's split of `make run`
    times = [json.loads(p.read_text()) for p in (project / "logs" / "stage_times").glob("*.json")]
    assert sorted(t["stage"] for t in times) == sorted(stages)
    assert all(t["seconds"] > 0 for t in times)

    by_scheme = {run.data.tags["scheme"]: run for run in runs(project)}
    assert sorted(by_scheme) == sorted(SCHEMES)
    for scheme, run in by_scheme.items():
        metrics = metrics_of(project, scheme)
        assert metrics["overall_accuracy"] > 0.5  # six classes: chance is ~0.17
        assert run.info.status == "FINISHED"
        assert run.data.params["train.scheme"] == scheme
        assert run.data.metrics["test_overall_accuracy"] == pytest.approx(
            metrics["overall_accuracy"])
        assert run.data.metrics["test_kappa"] == pytest.approx(metrics["kappa"])
        assert run.data.metrics["training_time_s"] > 0
        assert run.data.metrics["payload_bytes_sent_per_step"] > 0
        assert run.data.metrics["payload_ratio_counted_to_modelled"] == pytest.approx(1.0)
        assert run.data.params["train.epochs"] == "2"
        # The evaluation: ablation, map and inference timing, in the file and in the run.
        assert run.data.metrics["val_overall_accuracy"] == pytest.approx(  # selects the model
            metrics["val_overall_accuracy"])
        for key in ("weighted_f1", "ablation_sar_overall_accuracy_drop"):  # quality: test_*
            assert run.data.metrics[f"test_{key}"] == pytest.approx(metrics[key])
        for key in ("map_predicted_pixels", "inference_samples_per_s",
                    "inference_ratio_to_single_process", "inference_batch_p95_ms",
                    "spark_startup_s"):
            assert run.data.metrics[key] == pytest.approx(metrics[key])
        # the deployment predicts what one process does
        assert metrics["inference_agreement"] == 1.0
        reports = project / "reports" / scheme
        for name in ("confusion_matrix.png", "per_class.csv", "landcover_map.tif",
                     "landcover_map.png", "inference.json", "ablation.json"):
            assert (reports / name).is_file(), name
        artifacts = {a.path for a in mlflow.MlflowClient(
            f"sqlite:///{project / 'mlflow.db'}").list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/landcover_map.tif" in artifacts
    # Equivalent schemes at equal global batch and epochs reach comparable accuracy.
    accuracies = [metrics_of(project, s)["overall_accuracy"] for s in SCHEMES]
    assert max(accuracies) - min(accuracies) <= 0.02
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {o["path"] for o in lock["ingest"]["outs"]} == {"data/raw"}
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert run.data.tags["data_hash"] == manifest["fingerprint"]  # the run names its data
    assert (project / "data/prepared/preview.png").is_file()
    [parent] = runs(project, "pipeline")
    assert_one_parent_with_a_child_per_scheme(project, parent, list(by_scheme.values()))
    assert "data_parallel" in (project / "reports/comparison.md").read_text()
    table = sh(sys.executable, "-m", "pipeline.report", cwd=project).stdout
    assert parent.info.run_id in table and "branch_parallel" in table
    # the cost model's step time next to the measured one, per scheme, in the parent run
    plan = json.loads((project / "reports/plan.json").read_text())
    assert sorted(plan) == sorted(SCHEMES)
    for scheme, run in by_scheme.items():
        modelled = parent.data.metrics[f"{scheme}_modelled_step_s"]
        measured = parent.data.metrics[f"{scheme}_measured_step_s"]
        assert modelled == pytest.approx(plan[scheme]["step_s"])
        assert measured == pytest.approx(run.data.metrics["step_s_p50"])
        assert parent.data.metrics[f"{scheme}_modelled_to_measured_step"] == pytest.approx(
            modelled / measured)
    assert "step s (modelled)" in table and "modelled ÷ measured" in table


def test_dvc_metrics_show_lists_every_scheme(project: Path) -> None:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=project))
    files = next(iter(shown.values()))["data"]
    for scheme in SCHEMES:
        assert "inference_samples_per_s" in files[f"metrics/{scheme}.json"]["data"]


def test_after_dvc_repro_the_pipeline_is_up_to_date(project: Path) -> None:
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
    assert "Running stage" not in dvc("repro", cwd=project)


def test_prefect_pipeline_flow_leaves_dvc_up_to_date(project: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline_flow

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "train" in dvc("status", cwd=project)  # the change is seen as pending

    monkeypatch.chdir(project)
    with prefect_test_harness(server_startup_timeout=120):
        result = pipeline_flow(params="params.yaml")

    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
    assert "Running stage" not in dvc("repro", cwd=project)
    latest = runs(project)[len(SCHEMES):]
    assert sorted(r.info.run_id for r in latest) == sorted(
        r["run_id"] for r in result["schemes"].values())
    parent = store(project).get_run(result["parent_run_id"])
    assert parent.data.tags["orchestrator"] == "prefect"
    assert_one_parent_with_a_child_per_scheme(project, parent, latest)
    for run in latest:
        scheme = run.data.tags["scheme"]
        assert run.data.params["train.epochs"] == "1"
        assert run.data.metrics["test_overall_accuracy"] == pytest.approx(
            metrics_of(project, scheme)["overall_accuracy"])
