"""A worker's own processing and memory figures over the training phase."""

from __future__ import annotations

import resource
import socket
import time

import psutil


class ResourceMeter:
    """CPU seconds (user + system), utilisation and peak RSS of this process since creation."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        times = self._process.cpu_times()
        self._cpu0 = times.user + times.system
        self._wall0 = time.perf_counter()

    def figures(self) -> dict[str, float | str]:
        """The figures so far."""
        times = self._process.cpu_times()
        cpu = times.user + times.system - self._cpu0
        wall = time.perf_counter() - self._wall0
        return {
            "cpu_s": cpu,
            "wall_s": wall,
            "cpu_util": cpu / wall if wall > 0 else 0.0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "host": socket.gethostname(),
            "pid": float(self._process.pid),
            "spark_executor": spark_executor(self._process),
        }


def spark_executor(process: psutil.Process) -> str:
    """The Spark executor this process runs under.

    That is the ``--executor-id`` of its executor JVM ancestor, or ``"driver"`` when the tasks
    run inside the driver (local master).
    """
    for ancestor in process.parents():
        try:
            cmdline = ancestor.cmdline()
        except psutil.Error:
            continue
        if "--executor-id" in cmdline:
            return cmdline[cmdline.index("--executor-id") + 1]
    return "driver"
