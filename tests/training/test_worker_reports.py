"""The workers' outcomes as one message: who failed, how, and where it was (pure logic)."""

from __future__ import annotations

from pipeline.training.failures import Outcome, Whereabouts, WorkerReports

# Worker 1 of 2 SIGKILLed in step 7, and its peer's report of the collective that broke.
KILLED_IN_STEP_7 = [
    Outcome(0, failure="worker rank 0 of 2 failed at epoch 2, step 7: RuntimeError: "
                       "Connection reset by peer"),
    Outcome(1, killed="killed by SIGKILL (signal 9, pid 9336)", where="at epoch 2, step 7"),
]


def test_killed_worker_is_named_with_the_step_it_died_in_then_its_peers() -> None:
    summary = WorkerReports.of(KILLED_IN_STEP_7).summary("data_parallel", 2)
    assert summary == ("data_parallel training failed: worker rank 1 of 2 was killed by SIGKILL "
                       "(signal 9, pid 9336) during epoch 2, step 7; worker rank 0 of 2 failed "
                       "at epoch 2, step 7: RuntimeError: Connection reset by peer")


def test_a_worker_killed_before_its_first_step_is_named_with_its_set_up_phase() -> None:
    where = Whereabouts()
    where.enter("joining the process group")
    outcomes = [Outcome(0, result=None),
                Outcome(1, killed="killed by SIGKILL (signal 9, pid 12)", where=str(where))]
    summary = WorkerReports.of(outcomes).summary("hybrid", 4)
    assert summary == ("hybrid training failed: worker rank 1 of 4 was killed by SIGKILL "
                       "(signal 9, pid 12) before its first step, while joining the process "
                       "group")


def test_whereabouts_say_the_epoch_and_step_once_training() -> None:
    where = Whereabouts()
    assert str(where) == "before its first step, while starting"
    where.at(3, 41)
    assert str(where) == "at epoch 3, step 41"


def test_whereabouts_are_published_where_the_task_reads_them() -> None:
    seen: list[str] = []
    Whereabouts.publish = seen.append
    try:
        Whereabouts().at(1, 1)
    finally:
        Whereabouts.publish = None
    assert seen == ["before its first step, while starting", "at epoch 1, step 1"]


def test_a_worker_that_exits_with_an_error_is_not_reported_as_killed() -> None:
    assert WorkerReports.of(KILLED_IN_STEP_7).killed == {
        1: "killed by SIGKILL (signal 9, pid 9336)"}


def test_without_reports_the_spark_error_is_summarised() -> None:
    summary = WorkerReports().summary("hybrid", 4, RuntimeError("Stage failed\nmore"))
    assert summary == ("hybrid training on Spark failed: Stage failed (the workers' output above "
                       "has the details)")
