"""The stage host of ``make run``: stage commands run in one warm process, as they would alone.

One host (a real process with its own Spark application) serves the module's stage commands
in order, as ``dvc repro`` under ``make run`` hands them over: their output and exit status
reach the command, a failed or interrupted stage leaves the host serving the next one, and
without a host the command runs the stage itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from flows.layout import LAYOUT
from flows.stage import HOST_VARIABLE
from flows.stage_host import StageHost

from .conftest import PROJECT_ROOT, SMALL_PARAMS, merge
from .training.test_failures import torch_workers, wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]  # stage commands

PARAMS = merge(SMALL_PARAMS, {"train": {"epochs": 1, "compare": ["data_parallel"]}})


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hosted")
    base = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(base, PARAMS)))
    return root


@pytest.fixture(scope="module")
def host(project: Path, prefect_api: dict[str, str]) -> Iterator[dict[str, str]]:
    """A stage host in ``project`` whose output (and its Spark tasks') goes to a file."""
    with open(project / "host.log", "wb") as output, \
            StageHost(dict(os.environ), root=project, output=output) as host:
        yield os.environ | host.wait_ready()


def stage(project: Path, env: dict[str, str], name: str, *args: str
          ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "flows.stage", name, *args], cwd=project,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(process: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def stage_time(project: Path, name: str) -> dict:
    return json.loads((project / LAYOUT.stage_times / f"{name}.json").read_text())


def test_stages_run_on_the_host_with_their_output_and_outputs(
        project: Path, host: dict[str, str]) -> None:
    status, output = finished(stage(project, host, "ingest", "--params", "params.yaml",
                                    "--out", "data/raw"))
    assert status == 0, output
    assert "ingested synthetic data" in output  # the stage's own lines reach its command
    assert (project / "data/raw").is_dir()
    assert stage_time(project, "ingest")["ran_on"] == "stage host"

    status, output = finished(stage(project, host, "prepare", "--params", "params.yaml",
                                    "--raw", "data/raw", "--out", "data/prepared"))
    assert status == 0, output
    assert (project / "data/prepared/manifest.json").is_file()
    prepared = stage_time(project, "prepare")
    assert prepared["ran_on"] == "stage host"
    assert "spark start" not in prepared["phases"]  # the host's application did the work


def test_a_failing_stage_reports_its_error_and_the_host_serves_the_next(
        project: Path, host: dict[str, str]) -> None:
    status, output = finished(stage(project, host, "train", "--params", "missing.yaml"))
    assert status == 1
    assert "error:" in output and "missing.yaml" in output
    assert "Traceback" not in output  # a user error reads as its message, as without a host

    status, output = finished(stage(project, host, "train", "--params", "params.yaml",
                                    "--scheme", "data_parallel", "--data", "data/prepared",
                                    "--out", "models/data_parallel"))
    assert status == 0, output
    assert "trained data_parallel on 2 workers" in output
    trained = stage_time(project, "train@data_parallel")
    assert trained["ran_on"] == "stage host" and "spark start" not in trained["phases"]


def host_process(project: Path) -> psutil.Process:
    [process] = [p for p in psutil.Process().children()
                 if "flows.stage_host" in " ".join(p.cmdline())]
    return process


def test_sigterm_to_a_hosted_stage_stops_its_workers_and_the_host_serves_on(
        project: Path, host: dict[str, str]) -> None:
    long = project / "long.yaml"
    long.write_text(yaml.safe_dump(merge(yaml.safe_load((project / "params.yaml").read_text()),
                                         {"train": {"epochs": 500, "batch_size": 16}})))
    log = project / "host.log"
    seen = len(log.read_bytes())
    process = stage(project, host, "train", "--params", str(long), "--scheme", "data_parallel",
                    "--data", "data/prepared", "--out", "models/long")
    deadline = time.monotonic() + 300
    while b"[train data_parallel] epoch 1/500" not in log.read_bytes()[seen:]:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)  # polling the workers' output (on the host's) for the signal
    workers = torch_workers(host_process(project))
    assert len(workers) == 2, workers
    process.send_signal(signal.SIGTERM)
    status, output = finished(process, timeout=120)

    assert status == 130, output
    assert "interrupted: the stage stopped its workers" in output
    assert wait_gone(workers, 60) == []
    assert not (project / "models/long").exists()
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    [interrupted] = client.search_runs(
        [client.get_experiment_by_name("landcover-synthetic").experiment_id],
        filter_string="params.`train.epochs` = '500' and tags.scheme = 'data_parallel'")
    assert interrupted.info.status == "FAILED"
    # the host, its Spark application included, runs the next stage
    status, output = finished(stage(project, host, "prepare", "--params", "params.yaml",
                                    "--raw", "data/raw", "--out", "data/prepared"))
    assert status == 0, output
    prepared = stage_time(project, "prepare")
    assert prepared["ran_on"] == "stage host" and "spark start" not in prepared["phases"]


@pytest.mark.parametrize("where", ["no host", "another project"])
def test_without_a_host_of_its_project_the_command_runs_the_stage_itself(
        where: str, project: Path, host: dict[str, str], tmp_path: Path) -> None:
    env = host if where == "another project" else \
        os.environ | {HOST_VARIABLE: str(tmp_path / "nobody.sock")}
    (tmp_path / "params.yaml").write_text((project / "params.yaml").read_text())
    status, output = finished(stage(tmp_path, env, "ingest", "--params", "params.yaml",
                                    "--out", "data/raw"))
    assert status == 0, output
    assert stage_time(tmp_path, "ingest")["ran_on"] == "own process"
