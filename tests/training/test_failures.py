"""A worker that crashes or hangs ends the run within a bounded time, with a clear error."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from pipeline.errors import TrainingError
from pipeline.training import Fault, ParallelSettings, fit

from ..conftest import SMALL_PREPARE
from .test_schemes import job_for

pytestmark = pytest.mark.slow


def torch_workers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "torch_run_process_wrapper" in cmdline or "torch.distributed.run" in cmdline:
            found.append(process)
    return found


def wait_until_no_workers(seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (left := torch_workers()) and time.monotonic() < deadline:
        time.sleep(1)
    return left


def test_crashing_worker_is_named_with_its_step(spark: object, prepared_dir: Path) -> None:
    job = replace(job_for(prepared_dir, ParallelSettings(scheme="data_parallel", workers=2)),
                  max_steps=5, fault=Fault(rank=1, step=2, kind="crash"), timeout_s=60)
    with pytest.raises(TrainingError, match=r"worker rank 1 of 2 failed at epoch 1, step 2: "
                                            r"RuntimeError: injected fault"):
        fit(spark, job, SMALL_PREPARE.patch_size)
    assert wait_until_no_workers(30) == []


def test_hanging_worker_is_stopped_after_the_timeout(spark: object, prepared_dir: Path) -> None:
    job = replace(job_for(prepared_dir, ParallelSettings(scheme="branch_parallel")),
                  max_steps=5, fault=Fault(rank=0, step=2, kind="hang"), timeout_s=15)
    started = time.monotonic()
    with pytest.raises(TrainingError, match=r"train.timeout_s = 15 s|failed at epoch 1, step 2"):
        fit(spark, job, SMALL_PREPARE.patch_size)
    assert time.monotonic() - started < 120
    assert wait_until_no_workers(60) == []
