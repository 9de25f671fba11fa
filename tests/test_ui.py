"""The MLflow UI in a real headless browser: where ``make ui`` sends the user renders the runs.

A store like a pipeline run leaves (a parent run, a child run per scheme, the parent's comparison
artifacts) is served by a real ``mlflow ui`` on 127.0.0.1; headless Chromium loads each page
``python -m pipeline.ui`` prints and the rendered DOM must show the run names, the compared
metric and the artifact names. Screenshots go to the test's temporary folder (not into git).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from pipeline.cluster import free_port
from pipeline.config import ALL_SCHEMES, Params, TrackingParams, TrainParams
from pipeline.tracking import COMPARED_TAG, open_pipeline_run, training_run, use_store
from pipeline.ui import (
    UI_ENVIRONMENT,
    artifacts_url,
    compare_url,
    landing_links,
    runs_url,
    ui_command,
)

from .conftest import seed_mlflow_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                 "(`apt-get install -y chromium`; .ci/run installs it)")]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("ui-store")
    seed_mlflow_store(root)
    params = Params(tracking=TrackingParams(uri=f"sqlite:///{root / 'mlflow.db'}"),
                    train=TrainParams(timeline_interval_s=0))
    parent = open_pipeline_run(params, "data-hash")
    children = []
    for scheme in ALL_SCHEMES:
        with training_run(params.for_scheme(scheme), run_name=scheme,
                          parent_run_id=parent) as run:
            mlflow.log_metric("test_overall_accuracy", 0.5 + 0.1 * len(children))
            children.append(run.info.run_id)
    client = mlflow.MlflowClient(params.tracking.uri)
    client.set_tag(parent, COMPARED_TAG, ",".join(children))
    (root / "comparison.md").write_text("| scheme | accuracy |\n")
    (root / "step_time.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    for name in ("comparison.md", "step_time.png"):
        client.log_artifact(parent, str(root / name), "comparison")
    return {"params": params, "root": root, "experiment": use_store(params), "parent": parent,
            "children": children}


@pytest.fixture(scope="module")
def ui(store: dict[str, object]) -> Iterator[str]:
    params = store["params"]
    assert isinstance(params, Params)
    port = free_port()
    root = store["root"]
    assert isinstance(root, Path)
    with (root / "ui.log").open("w") as log:
        server = subprocess.Popen(ui_command(params.tracking.uri, "127.0.0.1", port),
                                  env=os.environ | UI_ENVIRONMENT, stdout=log,
                                  stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # the server answers /health once it serves
        while True:
            assert server.poll() is None, (root / "ui.log").read_text()
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui did not answer in 240 s"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def render(url: str, shot: Path) -> str:
    """The DOM Chromium renders for ``url`` (after its scripts ran), and a screenshot (one
    browser start for both)."""
    done = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                           "--virtual-time-budget=30000", "--window-size=1600,1000",
                           f"--screenshot={shot}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=300)
    assert shot.is_file(), done.stderr[-2000:]
    return done.stdout


def test_make_ui_prints_the_runs_the_compare_view_and_the_comparison(
        store: dict[str, object]) -> None:
    params = store["params"]
    assert isinstance(params, Params)
    links = landing_links(params, "http://127.0.0.1:5000")
    eid, parent = str(store["experiment"]), str(store["parent"])
    assert links == [f"runs:       {runs_url('http://127.0.0.1:5000', eid)}",
                     f"compare:    {compare_url('http://127.0.0.1:5000', eid, store['children'])}",
                     "comparison: " + artifacts_url("http://127.0.0.1:5000", eid, parent,
                                                    "comparison")]
    tags = mlflow.MlflowClient(params.tracking.uri).get_experiment(eid).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_runs_list_shows_the_parent_and_every_scheme_run(
        ui: str, store: dict[str, object], tmp_path: Path) -> None:
    dom = render(runs_url(ui, str(store["experiment"])), tmp_path / "runs.png")
    for scheme in ALL_SCHEMES:
        assert f">{scheme}<" in dom, scheme
    assert ">pipeline-" in dom


def test_the_compare_view_shows_every_scheme_and_the_metric(
        ui: str, store: dict[str, object], tmp_path: Path) -> None:
    children = store["children"]
    assert isinstance(children, list)
    dom = render(compare_url(ui, str(store["experiment"]), children), tmp_path / "compare.png")
    for scheme in ALL_SCHEMES:
        assert scheme in dom, scheme
    assert "test_overall_accuracy" in dom


def test_the_parent_shows_its_comparison_artifacts(
        ui: str, store: dict[str, object], tmp_path: Path) -> None:
    url = artifacts_url(ui, str(store["experiment"]), str(store["parent"]), "comparison")
    dom = render(url, tmp_path / "artifacts.png")
    assert "comparison.md" in dom and "step_time.png" in dom
