"""Where a stage command's wall time goes: its own work, and the fixed costs around it.

A stage marks its phases on the process-wide :data:`CLOCK` (measured with a monotonic clock):
phases nest, and a phase's time excludes the phases inside it. ``work`` is the stage's own
computation (the ingest, the patch extraction, the training loop,
scoring, mapping and timing inference, the comparison); the other phases are fixed costs
(``spark start``, ``worker launch``, ...). The stage's command writes them next to its wall
time in ``logs/stage_times/<stage>.json``; what no phase covers (Python imports before the
flow, Prefect's flow and task runs, MLflow, writing files) is reported as the remainder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

WORK = "work"


class StageClock:
    """Seconds per named phase, summed over the times a phase is entered."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._inner: list[float] = []  # of each open phase, the seconds counted inside it

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the wall time of the ``with`` block, less its inner phases, to ``name``."""
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            inner = self._inner.pop()
            self.add(name, time.perf_counter() - start - inner)

    def add(self, name: str, seconds: float) -> None:
        """Count ``seconds`` to phase ``name`` (and not to the phase it is inside)."""
        seconds = max(seconds, 0.0)
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        if self._inner:
            self._inner[-1] += seconds

    def breakdown(self, total_s: float, before_s: float) -> dict[str, object]:
        """The record of a stage that took ``total_s``, of which ``before_s`` before its flow.

        ``work_s`` and ``outside_work_s`` split ``total_s``; ``phases`` names every part, the
        remainder included, so that they add up to ``total_s``.
        """
        phases = {"imports and start-up": before_s, **self.phases}
        phases["other (Prefect, MLflow, files)"] = max(total_s - sum(phases.values()), 0.0)
        work = phases.get(WORK, 0.0)
        return {"work_s": round(work, 1), "outside_work_s": round(total_s - work, 1),
                "phases": {name: round(seconds, 1) for name, seconds in phases.items()}}

    def reset(self) -> None:
        """Forget every phase (a new stage in the same process)."""
        self.phases.clear()
        self._inner.clear()


CLOCK = StageClock()
