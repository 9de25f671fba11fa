"""Operating the pipeline: Ctrl-C/SIGTERM during training, and two runs on one project."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from pipeline.runtime import project_lock

from .conftest import PROJECT_ROOT
from .training.test_failures import torch_workers, wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]  # stage commands


def stage(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)})


def start_training(prepared_dir: Path, project: Path, **train: object) -> subprocess.Popen[str]:
    """The data_parallel training stage, for 500 epochs (it is stopped long before), in
    ``project`` with these ``train`` settings."""
    params = project / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"epochs": 500, "batch_size": 16,
                                                "compare": ["data_parallel"], **train}}))
    return stage("flows.train", "--params", str(params), "--scheme", "data_parallel",
                 "--data", str(prepared_dir), "--out", str(project / "model"), cwd=project)


def tracking_uri(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def project_runs(project: Path) -> list[mlflow.entities.Run]:
    """Every MLflow run of the project's experiment."""
    client = mlflow.MlflowClient(tracking_uri(project))
    return client.search_runs([client.get_experiment_by_name("landcover-synthetic")
                               .experiment_id])


def test_sigterm_during_training_stops_every_worker_and_fails_the_run(
        prepared_dir: Path, tmp_path: Path) -> None:
    process = start_training(prepared_dir, tmp_path)
    root = psutil.Process(process.pid)
    deadline = time.monotonic() + 180
    while len(workers := torch_workers(root)) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate(timeout=30)
        time.sleep(1)
    assert len(workers) >= 2
    everything = [root, *root.children(recursive=True)]
    time.sleep(3)  # well inside the training loop
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130
    assert "interrupted: the stage stopped its workers" in stderr
    assert wait_gone(everything, 60) == []  # no orphan: workers, Spark, its Python daemons
    assert not (tmp_path / "model").exists()
    runs = project_runs(tmp_path)
    (child,) = [r for r in runs if r.data.tags.get("scheme") == "data_parallel"]
    assert child.info.status == "FAILED"
    assert {r.info.status for r in runs} == {"FAILED"}  # its pipeline (parent) run too


def test_a_worker_killed_mid_epoch_fails_the_stage_and_its_run_and_leaves_no_model(
        prepared_dir: Path, tmp_path: Path) -> None:
    # retries: 0, or the stage would resume from its last checkpoint and finish (see README)
    process = start_training(prepared_dir, tmp_path, timeout_s=300, retries=0)
    started = time.monotonic()
    rank_1 = wait_for_worker(psutil.Process(process.pid), rank=1, process=process)
    time.sleep(3)  # well inside the training loop
    rank_1.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=180)

    assert process.returncode == 1
    assert f"worker rank 1 of 2 was killed by SIGKILL (signal 9, pid {rank_1.pid})" in stderr
    assert re.search(r"during epoch \d+, step \d+", stderr)
    assert time.monotonic() - started < 300  # ended by the death, not by train.timeout_s
    assert not (tmp_path / "model").exists()
    (child,) = [r for r in project_runs(tmp_path) if r.data.tags.get("scheme") == "data_parallel"]
    assert child.info.status == "FAILED"
    assert "was killed by SIGKILL" in child.data.tags["error"]
    assert mlflow.MlflowClient(tracking_uri(tmp_path)).search_registered_models() == []


def wait_for_worker(root: psutil.Process, rank: int, process: subprocess.Popen[str],
                    seconds: float = 180) -> psutil.Process:
    """The training worker process of ``rank`` below ``root`` (a child of a torchrun agent),
    once it has started."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate(timeout=30)
        for agent in torch_workers(root):
            try:
                if "torch.distributed.run" not in " ".join(agent.cmdline()):
                    continue
                for worker in agent.children():
                    if worker.environ().get("RANK") == str(rank):
                        return worker
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.5)
    raise AssertionError(f"no training worker of rank {rank} started within {seconds} s")


def test_a_second_pipeline_run_on_the_same_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("{}\n")
    with project_lock(tmp_path / ".landcover.lock"):
        process = stage("flows.pipeline", "--params", "params.yaml", cwd=tmp_path)
        _, stderr = process.communicate(timeout=180)
    assert process.returncode == 1
    assert "another pipeline run is in progress in this project" in stderr
    assert not (tmp_path / "data").exists()
