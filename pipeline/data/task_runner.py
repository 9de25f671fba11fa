"""Running many small tasks: one Spark task per item, or a plain loop; with a progress log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar


class ProgressLog:
    """Prints done/total, rate and ETA, at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, what: str, total: int, unit: str, every_s: float = 2.0,
                 printer: Callable[[str], None] = print) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.printer = printer
        self.start = time.perf_counter()
        self.last = -1e9

    def update(self, done: int, extra: str = "") -> None:
        """Report ``done`` of ``total``."""
        now = time.perf_counter()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        self.printer(f"[{self.what}] {done}/{self.total} {self.unit} | {rate:,.1f} {self.unit}/s"
                     f"{extra} | elapsed {elapsed:.1f}s, ETA {eta:.1f}s")


T = TypeVar("T")
R = TypeVar("R")


def run_tasks(func: Callable[[T], R], items: list[T], spark: object | None,
              progress: ProgressLog) -> list[R]:
    """``[func(x) for x in items]``, as one Spark task per item when ``spark`` is given."""
    if spark is None:
        out: list[R] = []
        for item in items:
            out.append(func(item))
            progress.update(len(out))
        return out
    sc = spark.sparkContext  # type: ignore[attr-defined]
    group = f"prepare-{time.time_ns()}"
    box: dict[str, Any] = {}

    def collect() -> None:
        try:
            sc.setJobGroup(group, "prepare: patch extraction")
            box["result"] = sc.parallelize(items, len(items)).map(func).collect()
        except BaseException as exc:  # re-raised in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    tracker = sc.statusTracker()
    while thread.is_alive():
        thread.join(0.5)
        done = 0
        for job in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job)
            for stage in (info.stageIds if info else []):
                stage_info = tracker.getStageInfo(stage)
                done += stage_info.numCompletedTasks if stage_info else 0
        progress.update(min(done, len(items) - 1) if thread.is_alive() else len(items))
    if "error" in box:
        raise box["error"]
    result: list[R] = box["result"]
    return result
