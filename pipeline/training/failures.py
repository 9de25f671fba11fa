"""What went wrong with the workers, as each worker's Spark task reports it.

Every worker runs in a process of its own, started and watched by its Spark barrier task
(:mod:`pipeline.training.barrier`). Two kinds of report reach the driver:

- a worker that raises names its rank and where it was (epoch and step, or the set-up phase before
  its first step) in one line starting with :data:`FAILURE_MARK`, which it prints and attaches to
  the exception (see :func:`~pipeline.training.worker.train_worker`);
- a worker that is killed (SIGKILL, the out-of-memory killer, a lost machine) cannot say anything;
  its task sees the signal and reads where the worker last said it was (its
  :class:`Whereabouts`, kept in memory the task shares with it). Its peers then fail in their
  next collective and report the step they were at.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAILURE_MARK = "[landcover worker failure]"


class Whereabouts:
    """Where a worker is: its set-up phase, then its epoch and step once it trains.

    Every change is handed to ``publish`` (set by the worker's task), so that the task can say
    where a worker was when it was killed.
    """

    publish: Callable[[str], None] | None = None  # set in the worker process by its task

    def __init__(self, phase: str = "starting") -> None:
        self.phase, self.epoch, self.step = phase, 0, 0
        self._tell()

    def enter(self, phase: str) -> None:
        """The worker starts set-up phase ``phase`` (e.g. "joining the process group")."""
        self.phase = phase
        self._tell()

    def at(self, epoch: int, step: int) -> None:
        """The worker starts ``step`` of ``epoch``."""
        self.epoch, self.step = epoch, step
        self._tell()

    def __str__(self) -> str:
        if self.step:
            return f"at epoch {self.epoch}, step {self.step}"
        return f"before its first step, while {self.phase}"

    def _tell(self) -> None:
        if Whereabouts.publish is not None:
            Whereabouts.publish(str(self))


@dataclass(frozen=True)
class Outcome:
    """How one worker ended, as its Spark task saw it."""

    rank: int
    result: Any = None  # what the worker returned
    failure: str | None = None  # its own report (after FAILURE_MARK) when it raised
    killed: str | None = None  # how it died when a signal killed it
    where: str = ""  # where it last said it was (Whereabouts), for a death

    @property
    def ok(self) -> bool:
        """The worker returned normally."""
        return self.failure is None and self.killed is None


@dataclass
class WorkerReports:
    """Failure reports collected from the workers' outcomes."""

    failures: list[str] = field(default_factory=list)
    killed: dict[int, str] = field(default_factory=dict)  # rank -> how it died
    killed_where: dict[int, str] = field(default_factory=dict)  # rank -> where it was then

    @classmethod
    def of(cls, outcomes: list[Outcome]) -> WorkerReports:
        """The reports of ``outcomes``."""
        reports = cls()
        for outcome in sorted(outcomes, key=lambda o: o.rank):
            if outcome.killed is not None:
                reports.killed[outcome.rank] = outcome.killed
                reports.killed_where[outcome.rank] = outcome.where
            if outcome.failure is not None:
                reports.failures.append(outcome.failure)
        return reports

    def summary(self, scheme: str, world_size: int, exc: BaseException | None = None,
                activity: str = "training") -> str:
        """One message naming the failed workers (rank, and epoch and step or set-up phase)."""
        failures = list(dict.fromkeys(self.failures))
        deaths = [f"worker rank {rank} of {world_size} was {how}"
                  f"{_during(self.killed_where.get(rank, ''))}"
                  for rank, how in sorted(self.killed.items())]
        if deaths or failures:
            return f"{scheme} {activity} failed: " + "; ".join(deaths + failures)
        text = str(exc).strip() if exc is not None else ""
        first = text.splitlines()[0] if text else type(exc).__name__
        return (f"{scheme} {activity} on Spark failed: {first[:500]} "
                "(the workers' output above has the details)")


def _during(where: str) -> str:
    """`` during epoch E, step S`` or `` before its first step, while …`` ("" if unknown)."""
    if where.startswith("at epoch"):
        return " during " + where.removeprefix("at ")
    return f" {where}" if where else ""


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; "an unknown signal" for numbers that name none."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return "an unknown signal"
