"""Scheduled Prefect deployments on a real server, then DVC experiments, in one small project.

One project copy (one scheme, one epoch) is shared by the steps, in order, as a user's project:
``prefect deploy`` from ``prefect.yaml`` against a real ``prefect server start`` on loopback, a
worker runs a triggered deployment run of the pipeline; then ``dvc exp run -S`` changes the batch
size; then the DVC remote round-trips the outputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from flows.serve import deploy, start_worker, stop

from .conftest import dvc, make_project, sh

pytestmark = pytest.mark.slow

TINY = {
    "ingest": {"synthetic": {"height": 80, "width": 80, "region_scale_px": 6.0}},
    "prepare": {"patch_size": 7, "block_size": 16},
    "train": {"epochs": 1, "batch_size": 32, "workers": 1, "compare": ["data_parallel"]},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(tmp_path_factory.mktemp("orchestration") / "landcover", TINY)


@pytest.fixture(scope="module")
def prefect_env(prefect_api: dict[str, str]) -> dict[str, str]:
    """The environment of the session's Prefect server, with this interpreter's tools first."""
    return os.environ | prefect_api | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def test_a_deployment_of_prefect_yaml_runs_on_a_real_server(project: Path, prefect_env: dict,
                                                            tmp_path: Path) -> None:
    started = time.monotonic()
    deploy(project, prefect_env)
    for name, cron in (("nightly", "0 2 * * *"), ("weekly-comparison", "0 3 * * 0")):
        shown = sh(sys.executable, "-m", "prefect", "deployment", "inspect",
                   f"landcover-pipeline/{name}", cwd=project).stdout
        assert cron in shown, shown[-2000:]

    worker = start_worker(project, prefect_env, tmp_path / "worker.log")
    try:
        ran = sh(sys.executable, "-m", "prefect", "deployment", "run",
                 "landcover-pipeline/nightly", "--watch", "--watch-timeout", "400",
                 "--watch-interval", "3", cwd=project, timeout=450)
    finally:
        stop(worker)
    print(f"deploy + triggered run: {time.monotonic() - started:.1f}s")
    assert "Completed" in ran.stdout, ran.stdout[-2000:]

    # The Prefect-run pipeline left DVC as `dvc repro` would, and logged to the project's store.
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("landcover-synthetic")
    [parent] = client.search_runs([experiment.experiment_id],
                                  filter_string="tags.`landcover.role` = 'pipeline'")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["orchestrator"] == "prefect"
    [child] = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert child.data.tags["scheme"] == "data_parallel"
    assert child.data.metrics["test_overall_accuracy"] > 0.3


def exp_metrics(project: Path) -> list[dict]:
    rows = json.loads(dvc("exp", "show", "--json", cwd=project))
    found = []
    for row in rows:
        for exp in [row, *(e for ex in row.get("experiments") or []
                           for e in ex.get("revs", []))]:
            data = exp.get("data") or {}
            metrics = (data.get("metrics") or {}).get("reports/comparison.json", {})
            params = (data.get("params") or {}).get("params.yaml", {})
            if metrics.get("data"):
                found.append({"name": exp.get("name") or exp.get("rev"),
                              "batch_size": params["data"]["train"]["batch_size"],
                              **metrics["data"]["data_parallel"]})
    return found


def test_dvc_exp_run_with_a_new_batch_size_gives_a_new_experiment(project: Path) -> None:
    sh("git", "add", "-A", cwd=project)  # the deployment run's dvc.lock and metrics: baseline
    sh("git", "commit", "-q", "-m", "pipeline run", cwd=project)
    before = yaml.safe_load((project / "reports/comparison.json").read_text())["data_parallel"]

    out = dvc("exp", "run", "-S", "train.batch_size=16", cwd=project)
    assert "Running stage 'train@data_parallel'" in out
    assert "Running stage 'ingest'" not in out  # data unchanged: not rerun

    after = yaml.safe_load((project / "reports/comparison.json").read_text())["data_parallel"]
    # half the batch, twice the optimisation steps over the same epoch
    assert after["steps"] == pytest.approx(2 * before["steps"], abs=1)
    shown = exp_metrics(project)
    assert {(r["batch_size"], r["steps"]) for r in shown} >= {(32, before["steps"]),
                                                              (16, after["steps"])}
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=project))
    assert "data_parallel.steps" in diff["reports/comparison.json"]
    assert "data_parallel.test_overall_accuracy" in diff["reports/comparison.json"]
    plots = json.loads(dvc("plots", "show", "--json", cwd=project))
    assert any("comparison.csv" in json.dumps(v) for v in plots.values())


def test_outputs_round_trip_through_the_local_dvc_remote(project: Path) -> None:
    dvc("push", cwd=project)
    assert any((project / "dvc-remote").rglob("*"))
    sh("rm", "-rf", "data/prepared", ".dvc/cache", cwd=project)
    dvc("pull", cwd=project)
    assert (project / "data/prepared/manifest.json").is_file()
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
