"""Operating the pipeline: Ctrl-C/SIGTERM during training, a killed worker failing the stage or
retried by Prefect from its checkpoint, and two runs on one project."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
import yaml

from pipeline.config import load_params
from pipeline.model_store import load_model
from pipeline.runtime import project_lock
from pipeline.training.barrier import WORKER_NAME
from pipeline.training.trainer import train_model

from .conftest import PROJECT_ROOT, seed_mlflow_store
from .training.test_failures import torch_workers, wait_gone

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]  # stage commands


def stage(module: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ | {"PYTHONPATH": str(PROJECT_ROOT)})


def start_training(prepared_dir: Path, project: Path, **train: object) -> subprocess.Popen[str]:
    """The data_parallel training stage, for 500 epochs (it is stopped long before), in
    ``project`` with these ``train`` settings."""
    seed_mlflow_store(project)
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
    stderr = StderrLines(process)
    stderr.wait_for("[train data_parallel] epoch 1/")  # inside the training loop
    assert len(workers := torch_workers(root)) == 2, workers
    everything = [root, *root.children(recursive=True)]
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)

    assert process.returncode == 130
    assert "interrupted: the stage stopped its workers" in stderr.text()
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
    stderr = StderrLines(process)
    stderr.wait_for("[train data_parallel] epoch 1/")  # rank 0 finished an epoch: in the loop
    rank_1 = wait_for_worker(psutil.Process(process.pid), rank=1, process=process)
    rank_1.send_signal(signal.SIGKILL)
    process.wait(timeout=180)
    text = stderr.text()

    assert process.returncode == 1
    assert f"worker rank 1 of 2 was killed by SIGKILL (signal 9, pid {rank_1.pid})" in text
    assert re.search(r"killed by SIGKILL \(signal 9, pid \d+\) during epoch \d+, step \d+",
                     text), text
    assert time.monotonic() - started < 300  # ended by the death, not by train.timeout_s
    assert not (tmp_path / "model").exists()
    (child,) = [r for r in project_runs(tmp_path) if r.data.tags.get("scheme") == "data_parallel"]
    assert child.info.status == "FAILED"
    assert "was killed by SIGKILL" in child.data.tags["error"]
    assert mlflow.MlflowClient(tracking_uri(tmp_path)).search_registered_models() == []


def test_a_killed_worker_is_retried_by_prefect_from_its_checkpoint_to_the_same_parameters(
        prepared_dir: Path, tmp_path: Path, spark: object) -> None:
    every = 5  # 27 steps an epoch: epoch 1's last line comes after the checkpoint of step 25
    process = start_training(prepared_dir, tmp_path, epochs=8, retries=1, timeout_s=300,
                             checkpoint_every=every)
    stderr = StderrLines(process)
    try:
        # a checkpoint is on disk, 7 epochs to go (generous: Spark's start on a busy machine)
        stderr.wait_for("[train data_parallel] epoch 1/8", seconds=600)
        rank_1 = wait_for_worker(psutil.Process(process.pid), rank=1, process=process)
        rank_1.send_signal(signal.SIGKILL)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:  # the test failed on the way: stop the stage, its workers
            process.terminate()
            process.wait(timeout=120)
    text = stderr.text()
    assert process.returncode == 0, text

    (child,) = [r for r in project_runs(tmp_path) if r.data.tags.get("scheme") == "data_parallel"]
    assert child.info.status == "FINISHED"
    assert child.data.tags["train_attempts"] == "2"  # the retry shows in MLflow, with its cause
    failure = child.data.tags["train_attempt_1_error"]
    assert f"worker rank 1 of 2 was killed by SIGKILL (signal 9, pid {rank_1.pid})" in failure
    assert (killed := re.search(r"killed by SIGKILL \(signal 9, pid \d+\) during epoch \d+, "
                                r"step (\d+)", failure)), failure
    killed_at = int(killed.group(1))
    # the retry started at the last checkpoint before the kill and ran only the remaining steps
    resumed, steps = (int(child.data.metrics[k]) for k in ("resumed_from_step", "steps"))
    assert f"[checkpoint] resuming from step {resumed} " in text
    # (a kill inside the save of step `killed_at` may leave the one before it the last)
    assert 0 < resumed <= killed_at <= resumed + every and resumed % every == 0
    assert child.data.metrics["steps_run"] == steps - resumed

    # the same training on the same 2 workers, never interrupted and without checkpoints
    config = load_params(tmp_path / "params.yaml").for_scheme("data_parallel")
    _, uninterrupted = train_model(spark, config.train, config.model, prepared_dir)
    assert steps == uninterrupted.steps
    trained = load_model(tmp_path / "model")[0].state_dict()
    for key, expected in uninterrupted.state_dict.items():  # exactly: resume is promised exact
        torch.testing.assert_close(trained[key], expected, rtol=0, atol=0)
    assert not (tmp_path / "checkpoints" / "data_parallel").exists()  # cleared after success


class StderrLines:
    """A process's stderr, read line by line as it comes (so a test can wait for a line); its
    stdout is drained alongside."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.reader.start()
        threading.Thread(target=process.stdout.read, daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        for line in process.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("")  # end of output
            self.changed.notify_all()

    def wait_for(self, text: str, seconds: float = 240) -> None:
        """Return once a line containing ``text`` came; fail if the output ends without it."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.lines[-1:] == [""],
                timeout=seconds)
            assert found and any(text in line for line in self.lines), self.text()

    def text(self) -> str:
        self.reader.join(timeout=60)
        return "".join(self.lines)


def wait_for_worker(root: psutil.Process, rank: int, process: subprocess.Popen[str],
                    seconds: float = 180) -> psutil.Process:
    """The training worker process of ``rank`` below ``root`` (``landcover-r<rank>``), once it
    has started."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate(timeout=30)
        for worker in torch_workers(root):
            try:
                if worker.name() == WORKER_NAME.format(rank=rank):
                    return worker
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.5)
    raise AssertionError(f"no training worker of rank {rank} started within {seconds} s")


def test_a_second_pipeline_run_on_the_same_project_is_refused(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    with project_lock(tmp_path / ".landcover.lock"):
        process = stage("flows.pipeline", "--params", "params.yaml", cwd=tmp_path)
        _, stderr = process.communicate(timeout=180)
    assert process.returncode == 1
    assert "another pipeline run is in progress in this project" in stderr
    assert not (tmp_path / "data").exists()
