"""Faults during training: a killed worker is named with its step, a hung one is stopped, and a
rerun resumes from the last checkpoint to the same parameters as an uninterrupted run."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch

from pipeline.errors import TrainingError
from pipeline.training import Fault, ParallelSettings, TrainJob, TrainResult, fit, world_size
from pipeline.training.barrier import WORKER_NAME
from pipeline.training.worker import train_worker

from ..conftest import SMALL_PREPARE
from .test_schemes import job_for

pytestmark = pytest.mark.slow

RESUMABLE = {"data_parallel": ParallelSettings(scheme="data_parallel", workers=2),
             "branch_parallel": ParallelSettings(scheme="branch_parallel")}


def torch_workers(root: psutil.Process | None = None) -> list[psutil.Process]:
    """The training worker processes (``landcover-r<rank>``) below ``root`` (default: this
    test process)."""
    found = []
    for process in (root or psutil.Process()).children(recursive=True):
        try:
            if process.name().startswith(WORKER_NAME.format(rank="")):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those of ``processes`` still running after up to ``seconds``."""
    _, alive = psutil.wait_procs(processes, timeout=seconds)
    return alive


def wait_until_no_workers(seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := torch_workers()) and time.monotonic() < deadline:
        time.sleep(1)
    return left


KILLED = {**RESUMABLE,
          "pipeline_parallel": ParallelSettings(scheme="pipeline_parallel", micro_batches=2),
          "hybrid": ParallelSettings(scheme="hybrid", replicas=2)}


@pytest.fixture(scope="module")
def killed(spark: object, prepared_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TrainJob, str, float]]:
    """Each scheme trained until worker 1 is SIGKILLed in step 5, mid-epoch (the checkpoint of
    step 4 on disk): the job, the error message and how long the run took to end."""
    out = {}
    for scheme, settings in KILLED.items():
        job = replace(job_for(("tiny_7px", prepared_dir), settings), max_steps=6, timeout_s=60,
                      checkpoint_dir=str(tmp_path_factory.mktemp(f"ckpt-{scheme}")),
                      checkpoint_every=2)
        started = time.monotonic()
        with pytest.raises(TrainingError) as info:
            fit(spark, replace(job, fault=Fault(rank=1, step=5, kind="kill")),
                SMALL_PREPARE.patch_size)
        out[scheme] = (job, str(info.value), time.monotonic() - started)
    return out


@pytest.mark.parametrize("scheme", list(KILLED))
def test_killed_worker_is_named_with_its_step(
        scheme: str, killed: dict[str, tuple[TrainJob, str, float]]) -> None:
    job, message, took = killed[scheme]
    assert (f"worker rank 1 of {world_size(job)} was killed by SIGKILL (signal 9, pid "
            in message), message
    assert "during epoch 1, step 5" in message, message
    assert took < job.timeout_s  # ended because the worker died, not by the timeout
    assert wait_until_no_workers(30) == []


@pytest.mark.parametrize("scheme", list(RESUMABLE))
def test_rerun_resumes_to_the_uninterrupted_parameters(
        scheme: str, killed: dict[str, tuple[TrainJob, str, float]], spark: object) -> None:
    job = killed[scheme][0]
    assert (Path(job.checkpoint_dir) / "position.json").is_file()
    resumed: TrainResult = fit(spark, job, SMALL_PREPARE.patch_size)
    uninterrupted = train_worker(replace(job, parallel=ParallelSettings(workers=1),
                                         checkpoint_dir=None))
    assert resumed.steps == uninterrupted.steps == 6
    # started at the checkpoint of step 4 and ran steps 5 and 6 only (a restart would run 6)
    assert (resumed.resumed_from_step, resumed.steps_run) == (4, 2)
    for key, expected in uninterrupted.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], expected, rtol=1e-5, atol=1e-6)
    assert not Path(job.checkpoint_dir).exists()  # cleared after success


def test_hanging_worker_is_stopped_after_the_timeout(spark: object, prepared_dir: Path) -> None:
    job = replace(job_for(("tiny_7px", prepared_dir), ParallelSettings(scheme="pipeline_parallel")),
                  max_steps=5, fault=Fault(rank=0, step=2, kind="hang"), timeout_s=8)
    started = time.monotonic()  # (the driver's clock starts first: its timeout ends the run)
    with pytest.raises(TrainingError, match=r"train.timeout_s = 8 s|failed at epoch 1, step 2"):
        fit(spark, job, SMALL_PREPARE.patch_size)
    assert time.monotonic() - started < 120
    assert wait_until_no_workers(60) == []
