"""Reading the workers' streamed output for who failed, how, and at which step (pure logic)."""

from __future__ import annotations

import io

from pipeline.training.failures import FAILURE_MARK, WorkerReports

# What TorchDistributor streams when worker 1 of 2 is SIGKILLed in step 7: its torchrun agent's
# root-cause block, and its peer's report of the collective that broke.
STREAMED = f"""\
[train data_parallel] epoch 1/3 loss 1.2 | step 6 | 900 samples/s
{FAILURE_MARK} worker rank 0 of 2 failed at epoch 2, step 7: RuntimeError: Connection reset by peer
Root Cause (first observed failure):
[0]:
  time      : 2026-11-27_03:32:08
  host      : worker-a
  rank      : 1 (local_rank: 0)
  exitcode  : -9 (pid: 9336)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 9336
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 9335)
"""


def read(text: str) -> WorkerReports:
    reports = WorkerReports(passthrough=io.StringIO())
    reports.write(text)
    return reports


def test_killed_worker_is_named_with_the_step_its_peers_lost_it_in() -> None:
    summary = read(STREAMED).summary("data_parallel", 2, RuntimeError("barrier stage failed"))
    assert summary.startswith("data_parallel training failed: worker rank 1 of 2 was killed by "
                              "SIGKILL (signal 9, pid 9336) during epoch 2, step 7 (where its "
                              "peers lost it); worker rank 0 of 2 failed at epoch 2, step 7")


def test_a_worker_that_exits_with_an_error_is_not_reported_as_killed() -> None:
    assert read(STREAMED).killed == {1: "killed by SIGKILL (signal 9, pid 9336)"}


def test_output_is_passed_through_unchanged() -> None:
    reports = read(STREAMED)
    assert reports.passthrough.getvalue() == STREAMED


def test_without_reports_the_spark_error_is_summarised() -> None:
    summary = read("nothing to see\n").summary("hybrid", 4, RuntimeError("Stage failed\nmore"))
    assert summary == ("hybrid training on Spark failed: Stage failed (the workers' output above "
                       "has the details)")
