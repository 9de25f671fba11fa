"""What a message costs between two gloo processes on this machine, measured.

Two processes on 127.0.0.1 (a gloo process group, as training uses) bounce a 4-byte tensor back
and forth (half the median round trip is the per-message latency), send a large tensor one way
(its bytes over the time is how fast the stack moves bytes when no link limits it), and both
send one at once (the rate each way when both directions are busy, as in an all-reduce); and the
scheduler's time slice on the shared cores (:func:`pipeline.plan.corun.time_slice`). Cached
per machine, like the compute profile. :func:`measure_on_spark` runs the same probe as two
barrier tasks of a Spark cluster, on its links.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any, cast

from pipeline.io import write_json
from pipeline.plan.corun import time_slice
from pipeline.plan.profile import default_cache_dir, machine_id

if TYPE_CHECKING:
    import torch
    from pyspark.sql import SparkSession

ROUND_TRIPS = 200
BULK_BYTES = 16 * 1024 * 1024
BULK_REPEATS = 5
PROBE_VERSION = 4


@dataclass(frozen=True)
class MachineProbe:
    """Measured per-message latency and bulk rates (one way; both ways at once, each way)."""

    machine: str
    latency_s: float
    copy_bytes_s: float
    duplex_bytes_s: float = float("inf")
    time_slice_s: float | None = None  # the scheduler's, on this machine's shared cores
    version: int = PROBE_VERSION


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _message_worker(rank: int, port: int, latency_only: bool,
                    queue: multiprocessing.Queue[Any]) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=timedelta(seconds=60))
    try:
        result = _round_trips(rank) if latency_only else _exchange(rank)
        if rank == 0:
            queue.put(result)
    finally:
        dist.destroy_process_group()


def _there_and_back(rank: int, outbound: torch.Tensor, reply: torch.Tensor) -> float:
    """Seconds for rank 0 to send ``outbound`` to rank 1 and receive ``reply`` from it."""
    import torch.distributed as dist

    start = time.perf_counter()
    if rank == 0:
        dist.send(outbound, 1)
        dist.recv(reply, 1)
    else:
        dist.recv(outbound, 0)
        dist.send(reply, 0)
    return time.perf_counter() - start


def _round_trips(rank: int) -> float:
    """Half the median round trip of a 4-byte tensor between ranks 0 and 1 (seconds)."""
    import torch

    torch.set_num_threads(1)
    small = torch.zeros(1)
    trips = [_there_and_back(rank, small, small) for _ in range(ROUND_TRIPS + 10)]
    return statistics.median(trips[10:]) / 2


def probe_worker() -> tuple[float, float, float] | None:
    """The probe as a Spark barrier task (``TorchDistributor``, two processes): rank 0 returns.

    Measures the path training takes on that cluster: its links, its hosts, its load.
    """
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    try:
        result = _exchange(int(os.environ["RANK"]))
    finally:
        dist.destroy_process_group()
    return result if int(os.environ["RANK"]) == 0 else None


def _exchange(rank: int) -> tuple[float, float, float] | None:
    """Round trips of 4 bytes, one-way then two-way bulk sends.

    Returns, on rank 0, the latency (s) and the one-way and two-way rates (bytes/s each way).
    """
    import torch
    import torch.distributed as dist

    latency = _round_trips(rank)
    small, peer = torch.zeros(1), 1 - rank
    bulk = torch.zeros(BULK_BYTES // 4)
    rates = [BULK_BYTES / _there_and_back(rank, bulk, small) for _ in range(BULK_REPEATS + 1)]
    duplex = []  # both send at once, as the phases of a ring all-reduce do
    inbound = torch.zeros(BULK_BYTES // 4)
    for _ in range(BULK_REPEATS + 1):
        dist.barrier()
        start = time.perf_counter()
        sending = dist.isend(bulk, peer)
        dist.recv(inbound, peer)
        assert sending is not None  # None only for a rank outside the group
        sending.wait()
        dist.barrier()
        duplex.append(BULK_BYTES / (time.perf_counter() - start))
    if rank == 0:
        return latency, statistics.median(rates[1:]), statistics.median(duplex[1:])
    return None


def measure_on_spark(spark: SparkSession) -> MachineProbe:
    """The probe run as two barrier tasks of the Spark application ``spark`` (its cluster)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    # run returns rank 0's result: probe_worker's tuple
    latency, rate, duplex = cast(tuple[float, float, float], TorchDistributor(
        num_processes=2, local_mode=False, use_gpu=False).run(probe_worker))
    return MachineProbe(machine=f"spark {spark.sparkContext.master}", latency_s=latency,
                        copy_bytes_s=rate, duplex_bytes_s=duplex)


def _spawn(target: Callable[..., None], args: list[tuple[object, ...]], results: int,
           timeout_s: float = 120) -> list[Any]:
    """Run ``target(*a, queue)`` in a fresh process for each ``a`` of ``args``; ``results`` puts.

    Raises:
        RuntimeError: a process died before giving its result, or they outlasted ``timeout_s``.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=target, args=(*a, queue), daemon=True) for a in args]
    for worker in workers:
        worker.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < results:
            try:
                out.append(queue.get(timeout=0.5))
            except Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"the probe processes failed (exit codes {dead}) or hung "
                                       f"past {timeout_s:.0f} s; their errors are above") from None
        return out
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()


def measure() -> MachineProbe:
    """Run the probe now (a few seconds)."""
    port = _free_port()
    [(latency, rate, duplex)] = _spawn(_message_worker, [(0, port, False), (1, port, False)],
                                       results=1)
    return MachineProbe(machine=machine_id(), latency_s=latency, copy_bytes_s=rate,
                        duplex_bytes_s=duplex, time_slice_s=time_slice(os.cpu_count() or 1))


def load_or_measure(cache_dir: Path | None = None) -> MachineProbe:
    """This machine's cached probe, or a new one (saved)."""
    path = (cache_dir or default_cache_dir()) / "machine-probe.json"
    if path.exists():
        try:
            probe = MachineProbe(**json.loads(path.read_text()))
            if probe.machine == machine_id() and probe.version == PROBE_VERSION:
                return probe
        except (ValueError, TypeError):
            pass
    print("[plan] measuring the per-message latency between two local gloo processes ...",
          flush=True)
    probe = measure()
    print(f"[plan] latency {probe.latency_s * 1e6:.0f} us, bulk rate one way "
          f"{probe.copy_bytes_s / 1e9:.2f} GB/s, both ways at once {probe.duplex_bytes_s / 1e9:.2f}"
          f" GB/s, scheduler time slice {(probe.time_slice_s or 0) * 1e3:.1f} ms; cached in "
          f"{path}", flush=True)
    write_json(path, asdict(probe))
    return probe
