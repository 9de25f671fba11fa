"""What went wrong with the workers, read from their output as TorchDistributor streams it.

Two kinds of report reach the driver:

- a worker that raises prints one line starting with :data:`FAILURE_MARK`, naming its rank, epoch
  and step (see :func:`~pipeline.training.worker.train_worker`);
- a worker that is killed (SIGKILL, the out-of-memory killer, a lost machine) cannot say anything;
  its ``torchrun`` agent prints the root cause instead (``rank : 1 (local_rank: 0)`` …
  ``Signal 9 (SIGKILL) received by PID 1234``). Its peers then fail in their next collective and
  report the step they were at, which is the step the killed worker died in.
"""

from __future__ import annotations

import re
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

FAILURE_MARK = "[landcover worker failure]"

_AGENT_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)\s*\(local_rank")
_AGENT_EXIT = re.compile(r"^\s*exitcode\s*:\s*(-\d+)\s*\(pid:\s*(\d+)\)")
_PEER_STEP = re.compile(r"failed at epoch (\d+), step (\d+)")


@dataclass
class WorkerReports:
    """Failure reports collected from the workers' output.

    Used as a context manager, it stands in for the driver's stderr (where TorchDistributor
    streams every worker's output), reading each line and passing it through.
    """

    failures: list[str] = field(default_factory=list)
    killed: dict[int, str] = field(default_factory=dict)  # rank -> how it died
    _agent_rank: int | None = None
    passthrough: Any = None  # where the output goes on (the real stderr, inside `with`)

    def write(self, text: str) -> int:
        """Read ``text`` for reports, then pass it to the real stderr."""
        for line in text.splitlines():
            self._read(line)
        written: int = self.passthrough.write(text)
        return written

    def _read(self, line: str) -> None:
        if FAILURE_MARK in line:
            self.failures.append(line.split(FAILURE_MARK, 1)[1].strip())
        elif match := _AGENT_RANK.match(line):
            self._agent_rank = int(match.group(1))
        elif (match := _AGENT_EXIT.match(line)) and self._agent_rank is not None:
            number, pid = -int(match.group(1)), match.group(2)
            self.killed[self._agent_rank] = (f"killed by {_signal_name(number)} "
                                         f"(signal {number}, pid {pid})")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.passthrough, name)

    def __enter__(self) -> WorkerReports:
        self.passthrough, sys.stderr = sys.stderr, self
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr = self.passthrough

    def summary(self, scheme: str, world_size: int, exc: BaseException) -> str:
        """One message naming the failed workers (rank, and epoch and step where known)."""
        failures = list(dict.fromkeys(self.failures))
        steps = {match.groups() for line in failures if (match := _PEER_STEP.search(line))}
        where = ""
        if len(steps) == 1:
            epoch, step = steps.pop()
            where = f" during epoch {epoch}, step {step} (where its peers lost it)"
        deaths = [f"worker rank {rank} of {world_size} was {how}{where}"
                  for rank, how in sorted(self.killed.items())]
        if deaths or failures:
            return f"{scheme} training failed: " + "; ".join(deaths + failures)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"{scheme} training on Spark failed: {first[:500]} "
                "(the workers' output above has the details)")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "an unknown signal"
