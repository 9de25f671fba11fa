"""The whole pipeline, as a user runs it: `dvc repro` in a fresh project, then the Prefect flow.

One project copy is shared by the steps, in order: each step starts from the state the previous
one left, as a user's project would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml

from .conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

SOURCES = ["pipeline", "flows", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]
SMALL = {
    "ingest": {"synthetic": {"height": 96, "width": 96, "region_scale_px": 6.0}},
    "prepare": {"patch_size": 7, "block_size": 16},
    "train": {"epochs": 2, "batch_size": 32, "compare": ["data_parallel", "branch_parallel"]},
    "evaluate": {"inference": {"samples": 1024, "repeats": 2}, "map": {"stride": 2}},
}
SCHEMES = SMALL["train"]["compare"]


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def sh(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def dvc(*args: str, cwd: Path) -> str:
    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd).stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in SOURCES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(params, SMALL), sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    dvc("config", "core.analytics", "false", cwd=root)
    return root


def runs(root: Path) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("landcover-synthetic")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def metrics_of(root: Path, scheme: str) -> dict[str, float]:
    return json.loads((root / "metrics" / f"{scheme}.json").read_text())


def test_dvc_repro_runs_every_stage_and_tracks_each_scheme(project: Path) -> None:
    out = sh(sys.executable, "-m", "dvc", "repro", cwd=project).stdout
    stages = ["ingest", "prepare", *(f"{s}@{scheme}" for scheme in SCHEMES
                                     for s in ("train", "evaluate"))]
    for stage in stages:
        assert f"Running stage '{stage}'" in out

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
        assert run.data.metrics["bytes_sent_per_step"] > 0
        assert run.data.metrics["traffic_ratio_measured_to_expected"] == pytest.approx(1.0)
        assert run.data.params["train.epochs"] == "2"
        # The evaluation: ablation, map and inference timing, in the file and in the run.
        for key in ("weighted_f1", "ablation_sar_overall_accuracy_drop"):  # quality: test_*
            assert run.data.metrics[f"test_{key}"] == pytest.approx(metrics[key])
        for key in ("map_predicted_pixels", "inference_samples_per_s",
                    "inference_ratio_to_single_process", "inference_batch_p95_ms",
                    "spark_startup_s"):
            assert run.data.metrics[key] == pytest.approx(metrics[key])
        assert metrics["inference_agreement"] == 1.0  # the deployment predicts what one process does
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
    assert sorted(r.info.run_id for r in latest) == sorted(r["run_id"] for r in result.values())
    for run in latest:
        scheme = run.data.tags["scheme"]
        assert run.data.params["train.epochs"] == "1"
        assert run.data.metrics["test_overall_accuracy"] == pytest.approx(
            metrics_of(project, scheme)["overall_accuracy"])
