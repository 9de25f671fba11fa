"""Each scheme's compute per step and worker, measured by running its real strategy.

The compute profile (:mod:`pipeline.plan.profile`) times each unit alone; a scheme's workers do
more than the sum of their units (autograd across the cut, the copies of what crosses to
another worker, DDP's hooks, the optimiser over their share) and, sharing this machine's cores,
slow each other down through its caches. So the scheme itself is run: as many local processes as
the scheme has workers form a gloo process group, each builds the scheme's
:class:`~pipeline.training.strategies.Strategy` and trains a few steps as the training loop
does: one barrier to start together, then step after step (a barrier before every step measured
each step from a standstill, which the runs never see: the `tiny` model's `data_parallel` step
at 6.5-6.9 ms instead of the runs' 4.3 ms, on 2 cores). Where the job names a prepared dataset
(``data_dir``), the steps draw their batches from it as a run does (the store read batch by
batch, the run's first epoch's batches): cutting each micro-batch out of the store is part of a
run's step (on 2 cores, 1.0 ms of the 10 ms the first stage of ``pipeline_parallel`` spends per
step on the ``tiny`` model, against 0.2 ms to index random tensors held in memory). Otherwise,
random inputs of the job's shapes. After two warm-up steps, at least 12 steps and at least
half a second of them are measured (every worker the same count). Per worker, the median over
the measured steps of:

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
import itertools
import json
import math
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.dataset import PatchSplit, PreparedDataset, TrainingSplit
from pipeline.data.prepared_store import MANIFEST_FILE, PATCHES_LAYOUT
from pipeline.io import write_json
from pipeline.model import ModelConfig
from pipeline.objective import MULTI_LABEL
from pipeline.plan.machine_probe import MachineProbe, _free_port, _spawn
from pipeline.plan.profile import default_cache_dir, machine_id
from pipeline.plan.simulate import Network
from pipeline.training.batches import epoch_batches
from pipeline.training.job import TrainJob
from pipeline.training.schemes import world_size

SCHEME_PROFILE_VERSION = 3  # 3: back-to-back steps, batches from the job's prepared dataset
WARMUP_STEPS = 2  # left out: allocator, caches, DDP's bucket rebuild after its first step
MEASURED_STEPS = 12  # at least: 6 left the median wall of 20-40 ms steps moving by a fifth
MEASURED_SECONDS = 0.5  # and at least this long: 12 steps of the `tiny` model's 4 ms
# data_parallel step (50 ms in all) measured 6.3-7.6 ms per step at one grid rate, 4.1-4.8 ms
# at the others (2026-12-03)
MAX_MEASURED_STEPS = 400  # a bound on a step too short to time (a fraction of a millisecond)
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


def prepared_data(job: TrainJob) -> PreparedDataset | None:
    """The prepared dataset ``job`` trains on, if its ``data_dir`` holds one."""
    if job.data_dir and (Path(job.data_dir) / MANIFEST_FILE).is_file():
        return PreparedDataset.open(job.data_dir)
    return None


def training_feed(job: TrainJob, input_modalities: list[str] | None, patch_size: int
                  ) -> tuple[TrainingSplit, Iterator[np.ndarray]]:
    """What the profile's steps draw from, and their global batches (endless: take what you need).

    The job's training split read from its store and the run's own batches (epoch after
    epoch), where it has a prepared dataset; else ``job.batch_size`` random samples, the same
    batch every step.
    """
    dataset = prepared_data(job)
    if dataset is None:
        return (random_split(job.model, patch_size, job.batch_size),
                itertools.repeat(np.arange(job.batch_size)))
    split = dataset.stream("train", input_modalities)
    epochs = itertools.count()
    return split, itertools.chain.from_iterable(
        epoch_batches(len(split), job.batch_size, job.seed, epoch) for epoch in epochs)


def measured_steps(step_s: float) -> int:
    """How many steps to measure after a warm-up step of ``step_s``.

    :data:`MEASURED_STEPS`, or enough for :data:`MEASURED_SECONDS` (at most
    :data:`MAX_MEASURED_STEPS`).
    """
    enough = math.ceil(MEASURED_SECONDS / max(step_s, 1e-6))
    return min(MAX_MEASURED_STEPS, max(MEASURED_STEPS, enough))


def cache_key(job: TrainJob, patch_size: int) -> str:
    """The name of a job's scheme profile.

    Keyed by model, scheme settings, batch, patch, threads, machine and where its batches come
    from (random inputs, or a store of which layout).
    """
    dataset = prepared_data(job)
    feed = "random" if dataset is None else str(dataset.manifest.get("layout", PATCHES_LAYOUT))
    blob = json.dumps({"model": job.model.to_dict(), "parallel": asdict(job.parallel),
                       "batch_size": job.batch_size, "patch_size": patch_size,
                       "threads": job.threads_per_worker, "machine": machine_id(),
                       "feed": feed, "version": SCHEME_PROFILE_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


Steps = tuple[float, float, float, int]  # medians of thread CPU, process CPU, wall; steps


def _steps(job: TrainJob, rank: int, world: int, patch_size: int) -> Steps:
    """Train ``job``'s strategy a few steps; the medians of the measured ones and their count."""
    import torch.distributed as dist

    from pipeline.training.comm import Comm
    from pipeline.training.strategies import STRATEGIES

    comm = Comm()
    try:
        strategy = STRATEGIES[job.parallel.scheme](job, rank, world, comm, patch_size=patch_size)
        split, batches = training_feed(job, strategy.input_modalities, patch_size)

        def timed(count: int) -> tuple[list[float], list[float], list[float]]:
            cpu, process, wall = [], [], []
            for batch in itertools.islice(batches, count):
                t0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
                strategy.step(split, batch)
                cpu.append(time.thread_time() - t0)
                process.append(time.process_time() - p0)
                wall.append(time.perf_counter() - w0)
            return cpu, process, wall

        dist.barrier()  # one start; then step after step, as the training loop runs them
        steps = torch.tensor([measured_steps(min(timed(WARMUP_STEPS)[2]))])
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)  # the same count on every worker
        cpu, process, wall = timed(int(steps))
        dist.barrier()
    finally:
        comm.close()
    return (statistics.median(cpu), statistics.median(process), statistics.median(wall),
            int(steps))


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
    by_job: dict[int, dict[int, Steps]] = {}
    for index, rank, figures in results:
        by_job.setdefault(index, {})[rank] = figures
    out = []
    for index, job in enumerate(jobs):
        ranks = [by_job[index][r] for r in range(world_size(job))]
        out.append(SchemeProfile(machine=machine_id(), scheme=job.parallel.scheme,
                                 cpu_s=tuple(r[0] for r in ranks),
                                 process_cpu_s=tuple(r[1] for r in ranks),
                                 wall_s=tuple(r[2] for r in ranks), steps=ranks[0][3]))
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
