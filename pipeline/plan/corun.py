"""How much slower the model computes while several workers compute at once on shared cores.

Cores that share caches, memory bandwidth or a physical core (two hyperthreads of a virtual
machine) slow each other down, by how much depends on the work. ``k`` processes (``k`` = 1 .. the
cores) each run the model's forward and backward at once; rounds of one alone and ``k``
together alternate, so that a change of the machine's speed during the measurement (other
tenants of the host) falls on both, and the median ratio counts.

:func:`time_slice` measures how long the operating system's scheduler lets a process run on a
busy core before it switches: twice as many processes as cores spin, each noting the stretches
it ran without interruption.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from queue import Empty
from typing import TYPE_CHECKING, Any

from pipeline.model import ModelConfig

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

ROUNDS = 5  # alone, then together, this many times
PHASE_S = 0.4  # seconds of each
SPIN_S = 1.5  # how long each process spins to measure the time slice
GAP_S = 2e-4  # a pause between two clock reads longer than this: the process was switched out


def _worker(index: int, cores: int, config: ModelConfig, patch: int, batch: int,
            barrier: Barrier, queue: multiprocessing.Queue[tuple[int, dict[int, list[float]]]]
            ) -> None:
    import torch

    from pipeline.model import MultimodalCNN

    torch.set_num_threads(1)
    torch.manual_seed(index)
    model = MultimodalCNN(config)
    inputs = {m: torch.randn(batch, c, patch, patch) for m, c in config.channels.items()}

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(inputs).sum().backward()

    step()  # warm-up
    medians: dict[int, list[float]] = {}
    for _ in range(ROUNDS):
        for k in range(1, cores + 1):
            barrier.wait()
            if index >= k:
                continue
            times: list[float] = []
            began = time.perf_counter()
            while time.perf_counter() - began < PHASE_S or len(times) < 2:
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            medians.setdefault(k, []).append(statistics.median(times))
    barrier.wait()
    queue.put((index, medians))


def corun_slowdown(config: ModelConfig, patch: int, batch: int, cores: int) -> tuple[float, ...]:
    """Compute time of one of ``k`` processes busy at once over one alone, for k = 1..cores."""
    if cores <= 1:
        return (1.0,)
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(cores), context.Queue()
    workers = [context.Process(target=_worker, daemon=True,
                               args=(i, cores, config, patch, batch, barrier, queue))
               for i in range(cores)]
    for worker in workers:
        worker.start()
    results: dict[int, dict[int, list[float]]] = {}
    deadline = time.monotonic() + 600
    try:
        while len(results) < cores:
            try:
                index, medians = queue.get(timeout=0.5)
                results[index] = medians
            except Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"the co-run processes failed (exit codes {dead}) or "
                                       "hung; their errors are above") from None
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    alone = results[0][1]
    return tuple(statistics.median(results[i][k][r] / alone[r] for i in range(k)
                                   for r in range(ROUNDS))
                 for k in range(1, cores + 1))


def _spin(barrier: Any, queue: Any) -> None:  # noqa: ANN401 (multiprocessing proxies)
    """Read the clock for ``SPIN_S``; put the lengths of the uninterrupted stretches."""
    barrier.wait()
    clock = time.perf_counter
    runs: list[float] = []
    began = last = run_start = clock()
    while last - began < SPIN_S:
        now = clock()
        if now - last > GAP_S:
            runs.append(last - run_start)
            run_start = now
        last = now
    queue.put(runs[1:])  # the first stretch began at the barrier, not at a switch


def time_slice(cores: int) -> float:
    """The scheduler's time slice on this machine (s): the median run of ``2 x cores`` spinners."""
    context = multiprocessing.get_context("spawn")
    count = 2 * max(cores, 1)
    barrier, queue = context.Barrier(count), context.Queue()
    spinners = [context.Process(target=_spin, args=(barrier, queue), daemon=True)
                for _ in range(count)]
    for spinner in spinners:
        spinner.start()
    runs: list[float] = []
    try:
        for _ in range(count):
            runs.extend(queue.get(timeout=120))
    finally:
        for spinner in spinners:
            spinner.join(30)
            if spinner.is_alive():
                spinner.kill()
    if not runs:
        raise RuntimeError("the time-slice probe saw no switch between its processes")
    return statistics.median(runs)
