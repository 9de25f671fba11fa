"""Each scheme's compute per step and worker, measured by running its real strategy.

The compute profile (:mod:`pipeline.plan.profile`) times each unit alone; a scheme's workers do
more than the sum of their units (autograd across the cut, the copies of what crosses to
another worker, DDP's hooks, the optimiser over their share) and, sharing this machine's cores,
slow each other down through its caches. So the scheme itself is run: as many local processes as
the scheme has workers form a gloo process group, each builds the scheme's
:class:`~pipeline.training.strategies.Strategy` and trains a few steps on random inputs of the
job's shapes, with a barrier before every step. Per worker, the median over the measured steps
of:

- ``cpu_s``: the training thread's CPU time per step (``time.thread_time`` around the step);
- ``process_cpu_s``: the process's CPU time per step, with gloo's threads (they copy every
  message in and out and compete for the shared cores): the compute the cost model scales its
  programs to (:attr:`SchemeProfile.compute_s`, :func:`pipeline.plan.programs.scaled_to`);
- ``wall_s``: the step's wall time, which the cost model holds against its own simulation of
  the same processes on the same loopback and cores (:func:`profiled_on`): the difference is
  what it leaves out on shared cores (:func:`pipeline.plan.predict.predict`).

Cached next to the compute profiles, one file per job (``scheme-<key>.json``), keyed by model
configuration, scheme settings, batch, patch, threads and machine.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.dataset import PatchSplit
from pipeline.io import write_json
from pipeline.model import ModelConfig
from pipeline.objective import MULTI_LABEL
from pipeline.plan.machine_probe import MachineProbe, _free_port, _spawn
from pipeline.plan.profile import default_cache_dir, machine_id
from pipeline.plan.simulate import Network
from pipeline.training.job import TrainJob
from pipeline.training.schemes import world_size

SCHEME_PROFILE_VERSION = 2
WARMUP_STEPS = 2  # left out: allocator, caches, DDP's bucket rebuild after its first step
MEASURED_STEPS = 12  # 6 left the median wall of 20-40 ms steps moving by a fifth between runs
TIMEOUT_S = 900.0


@dataclass(frozen=True)
class SchemeProfile:
    """Measured per step of one job, per worker in global rank order (seconds, medians)."""

    machine: str
    scheme: str
    cpu_s: tuple[float, ...]
    process_cpu_s: tuple[float, ...]
    wall_s: tuple[float, ...]
    steps: int = MEASURED_STEPS
    version: int = SCHEME_PROFILE_VERSION

    @property
    def compute_s(self) -> tuple[float, ...]:
        """What each worker's cores compute per step: its process's CPU time.

        Not the training thread's alone: gloo's threads' CPU occupies the shared cores too.
        Simulated on loopback, the thread's CPU left a hybrid step of the tiny model 1.67x
        shorter than its processes measured it, the process's 1.2x (2 cores, 4 processes).
        """
        return self.process_cpu_s or self.cpu_s

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SchemeProfile:
        """From :func:`dataclasses.asdict`'s form (JSON lists back to tuples)."""
        return cls(machine=str(data["machine"]), scheme=str(data["scheme"]),
                   cpu_s=tuple(data["cpu_s"]), process_cpu_s=tuple(data["process_cpu_s"]),
                   wall_s=tuple(data["wall_s"]), steps=int(data["steps"]),
                   version=int(data["version"]))


def profiled_on(probe: MachineProbe) -> Network:
    """The network scheme profiles run on: local processes on loopback sharing this machine's cores.

    ``probe``: this machine's message probe between two local processes (latency, bulk rates,
    the scheduler's time slice).
    """
    return Network(rate_bytes_s=None, latency_s=probe.latency_s,
                   copy_bytes_s=probe.copy_bytes_s, duplex_bytes_s=probe.duplex_bytes_s,
                   shared_cores=os.cpu_count() or 1, time_slice_s=probe.time_slice_s)


def random_split(config: ModelConfig, patch_size: int, size: int) -> PatchSplit:
    """``size`` random samples of ``config``'s inputs at ``patch_size``, and random labels."""
    generator = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(size, c, patch_size, patch_size, generator=generator)
              for m, c in config.channels.items()}
    labels = (torch.randint(0, 2, (size, config.num_classes), generator=generator).float()
              if config.task == MULTI_LABEL
              else torch.randint(0, config.num_classes, (size,), generator=generator))
    return PatchSplit(inputs=inputs, labels=labels)


def cache_key(job: TrainJob, patch_size: int) -> str:
    """The name of a job's scheme profile (model, scheme settings, batch, patch, machine)."""
    blob = json.dumps({"model": job.model.to_dict(), "parallel": asdict(job.parallel),
                       "batch_size": job.batch_size, "patch_size": patch_size,
                       "threads": job.threads_per_worker, "machine": machine_id(),
                       "version": SCHEME_PROFILE_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _steps(job: TrainJob, rank: int, world: int, patch_size: int) -> tuple[float, float, float]:
    """Train ``job``'s strategy on random data; medians of (thread CPU, process CPU, wall)."""
    import torch.distributed as dist

    from pipeline.training.comm import Comm
    from pipeline.training.strategies import STRATEGIES

    comm = Comm()
    try:
        strategy = STRATEGIES[job.parallel.scheme](job, rank, world, comm, patch_size=patch_size)
        split = random_split(job.model, patch_size, job.batch_size)
        batch = np.arange(job.batch_size)
        cpu, process, wall = [], [], []
        for _ in range(WARMUP_STEPS + MEASURED_STEPS):
            dist.barrier()
            t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            strategy.step(split, batch)
            cpu.append(time.thread_time() - t0)
            process.append(time.process_time() - p0)
            wall.append(time.perf_counter() - w0)
        dist.barrier()
    finally:
        comm.close()
    return (statistics.median(cpu[WARMUP_STEPS:]), statistics.median(process[WARMUP_STEPS:]),
            statistics.median(wall[WARMUP_STEPS:]))


def _worker(rank: int, jobs: list[TrainJob], ports: list[int], patch_size: int,
            barrier: Any, queue: Any) -> None:  # noqa: ANN401 (multiprocessing proxies)
    import torch.distributed as dist

    for index, (job, port) in enumerate(zip(jobs, ports, strict=True)):
        world = world_size(job)
        barrier.wait()  # one job at a time: the others' processes wait here, idle
        if rank >= world:
            continue
        torch.set_num_threads(job.threads_per_worker)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=job.timeout_s))
        try:
            queue.put((index, rank, _steps(job, rank, world, patch_size)))
        finally:
            dist.destroy_process_group()


def measure_many(jobs: list[TrainJob], patch_size: int) -> list[SchemeProfile]:
    """Measure every job of ``jobs``, one after another, in one set of local processes."""
    if not jobs:
        return []
    processes = max(world_size(j) for j in jobs)
    ports = [_free_port() for _ in jobs]
    barrier = multiprocessing.get_context("spawn").Barrier(processes)
    results = _spawn(_worker, [(r, jobs, ports, patch_size, barrier) for r in range(processes)],
                     results=sum(world_size(j) for j in jobs), timeout_s=TIMEOUT_S)
    by_job: dict[int, dict[int, tuple[float, float, float]]] = {}
    for index, rank, figures in results:
        by_job.setdefault(index, {})[rank] = figures
    out = []
    for index, job in enumerate(jobs):
        ranks = [by_job[index][r] for r in range(world_size(job))]
        out.append(SchemeProfile(machine=machine_id(), scheme=job.parallel.scheme,
                                 cpu_s=tuple(r[0] for r in ranks),
                                 process_cpu_s=tuple(r[1] for r in ranks),
                                 wall_s=tuple(r[2] for r in ranks)))
    return out


def load_or_measure(jobs: list[TrainJob], patch_size: int,
                    cache_dir: Path | None = None) -> list[SchemeProfile]:
    """Each job's cached scheme profile; those not cached are measured now (together) and saved."""
    folder = cache_dir or default_cache_dir()
    paths = [folder / f"scheme-{cache_key(job, patch_size)}.json" for job in jobs]
    found: dict[int, SchemeProfile] = {}
    for index, path in enumerate(paths):
        if path.exists():
            try:
                cached = SchemeProfile.from_dict(json.loads(path.read_text()))
            except (ValueError, TypeError, KeyError):
                continue  # a file from another version: measure afresh
            if cached.version == SCHEME_PROFILE_VERSION:
                found[index] = cached
    missing = [i for i in range(len(jobs)) if i not in found]
    if missing:
        print(f"[plan] running {len(missing)} scheme(s) on local processes to measure their "
              "compute per step ...", flush=True)
        started = time.perf_counter()
        for index, measured in zip(missing, measure_many([jobs[i] for i in missing],
                                                         patch_size), strict=True):
            write_json(paths[index], asdict(measured))
            found[index] = measured
        print(f"[plan] measured in {time.perf_counter() - started:.1f} s; cached in {folder}",
              flush=True)
    return [found[i] for i in range(len(jobs))]
