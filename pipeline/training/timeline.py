"""A worker's resource use over time: a sampler thread, read every ``interval_s`` seconds.

Each sample holds the wall-clock time and, over the interval since the previous sample, the
process's CPU utilisation (percent of one core, so up to 100 x threads), its resident memory, the
payload bytes the worker's process-group calls sent and received per second (as :class:`Comm`
counts them) and, where the worker has links of its own (the emulated cluster network), the bytes
its interfaces put on and took off the wire per second. The rates are differences of counters,
so they integrate exactly (``sum(rate * dt)``) to the bytes counted between the first and the
last sample; :meth:`TimelineSampler.stop` takes a last sample, so nothing counted before it is
left out. A sample reads a few counters (``/proc``) and takes no lock the training step holds
for long: its cost is stated in ``docs/comparing.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

from pipeline.training.comm import Comm
from pipeline.training.wire import WireMeter, interface_counters

Sample = dict[str, float]
QUANTITIES = ("cpu_percent", "rss_mb", "payload_sent_bytes_per_s",
              "payload_received_bytes_per_s", "wire_sent_bytes_per_s",
              "wire_received_bytes_per_s")


def _payload(comm: Comm) -> tuple[float, float]:
    totals = comm.totals()
    return totals["payload_bytes_sent"], totals["payload_bytes_received"]


def _wire(wire: WireMeter) -> tuple[float, float] | None:
    """Bytes sent and received on all of ``wire``'s links (the interface counters only)."""
    if not wire.links:
        return None
    counters = interface_counters()
    return (float(sum(counters[ifname][1] for ifname in wire.links.values())),
            float(sum(counters[ifname][0] for ifname in wire.links.values())))


class TimelineSampler:
    """Samples this process every ``interval_s`` seconds on a daemon thread until stopped."""

    def __init__(self, comm: Comm, wire: WireMeter, interval_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._comm, self._wire, self._clock = comm, wire, clock
        self._process = psutil.Process()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="timeline-sampler", daemon=True)
        self._last = self._read()
        self._before_last = self._last

    def _read(self) -> tuple[float, float, tuple[float, float], tuple[float, float] | None]:
        times = self._process.cpu_times()
        return (self._clock(), times.user + times.system, _payload(self._comm),
                _wire(self._wire))

    def sample(self) -> Sample:
        """Record one sample: the rates since the previous one, and the memory now."""
        now = self._read()
        self._before_last = self._last
        return self._record(self._last, now)

    def _fold_into_last(self) -> None:
        """Replace the last sample by one over its interval and the time since (a last, short one).

        CPU time advances in clock ticks (10 ms): over an interval of a few ms a process's
        utilisation reads as 0 or several hundred percent, so a short last interval is not a
        sample of its own.
        """
        self.samples.pop()
        self._record(self._before_last, self._read())

    def _record(self, last: tuple[float, float, tuple[float, float], tuple[float, float] | None],
                now: tuple[float, float, tuple[float, float], tuple[float, float] | None]
                ) -> Sample:
        (t0, cpu0, payload0, wire0), (t1, cpu1, payload1, wire1) = last, now
        dt = max(t1 - t0, 1e-6)
        sample = {"time": t1, "dt_s": dt, "cpu_percent": 100.0 * (cpu1 - cpu0) / dt,
                  "rss_mb": self._process.memory_info().rss / 2**20,
                  "payload_sent_bytes_per_s": (payload1[0] - payload0[0]) / dt,
                  "payload_received_bytes_per_s": (payload1[1] - payload0[1]) / dt}
        if wire0 is not None and wire1 is not None:
            sample["wire_sent_bytes_per_s"] = (wire1[0] - wire0[0]) / dt
            sample["wire_received_bytes_per_s"] = (wire1[1] - wire0[1]) / dt
        self._last = now
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.sample()

    def start(self) -> TimelineSampler:
        """Start sampling (nothing when ``interval_s`` is 0)."""
        if self.interval_s > 0:
            self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop, take the last sample (the time since the previous one) and return them all."""
        if self._thread.is_alive():
            self._stopped.set()
            self._thread.join()
            if self.samples and self._clock() - self._last[0] < self.interval_s / 2:
                self._fold_into_last()
            else:
                self.sample()
        return self.samples


def timeline_metrics(timelines: dict[int, list[Sample]]
                     ) -> list[tuple[str, float, int, int]]:
    """``(name, value, timestamp_ms, step)`` of every worker's samples, for MLflow.

    Named ``timeline/<quantity>_w<rank>`` (MLflow's charts group a run's metrics by the part
    before ``/``, so each quantity's workers stand side by side); ``step`` is the sample's index,
    the timestamp its wall-clock time.
    """
    out: list[tuple[str, float, int, int]] = []
    for rank, samples in sorted(timelines.items()):
        for step, sample in enumerate(samples):
            stamp = int(sample["time"] * 1000)
            out.extend((f"timeline/{quantity}_w{rank}", float(sample[quantity]), stamp, step)
                       for quantity in QUANTITIES if quantity in sample)
    return out
