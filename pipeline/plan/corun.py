"""How much slower the model computes while several workers compute at once on shared cores.

Cores that share caches, memory bandwidth or a physical core (two hyperthreads of a virtual
machine) slow each other down, by how much depends on the work. ``k`` processes (``k`` = 1 .. the
cores) each run the model's forward and backward at once; rounds of one alone and ``k``
together alternate, so that a change of the machine's speed during the measurement (other
tenants of the host) falls on both, and the median ratio counts.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from queue import Empty
from typing import TYPE_CHECKING

from pipeline.model import ModelConfig

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

ROUNDS = 5  # alone, then together, this many times
PHASE_S = 0.4  # seconds of each


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
