"""The rank-aware training loop: one code path for one process or N, for every scheme.

``train_worker`` is a top-level function of one picklable argument, so it can be shipped to Spark
tasks (:mod:`pipeline.training.barrier`). Rank, world size and the process group's master come
from the environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). The loop is
the same for every scheme; what one step does is the scheme's :class:`Strategy`.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from pipeline.data.dataset import PreparedDataset
from pipeline.model import MultimodalCNN
from pipeline.training.batches import epoch_batches
from pipeline.training.checkpoint import Checkpointer, Position
from pipeline.training.comm import Comm
from pipeline.training.failures import FAILURE_MARK, Whereabouts
from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.resources import ResourceMeter
from pipeline.training.strategies import STRATEGIES, Strategy
from pipeline.training.timeline import TimelineSampler
from pipeline.training.wire import WireMeter


def _rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def train_worker(job: TrainJob) -> TrainResult | None:
    """Train this worker's share under ``job.parallel.scheme``.

    A worker that fails prints one :data:`FAILURE_MARK` line naming its rank and where it was
    (epoch and step, or its set-up phase before the first step), and attaches it to the
    exception as a note for the task that runs it.

    Returns:
        On rank 0, the trained state dict, the epoch history and every worker's figures;
        ``None`` on other ranks.
    """
    rank, world_size = _rank_and_world()
    torch.set_num_threads(job.threads_per_worker)
    distributed = world_size > 1
    where = Whereabouts()
    comm = Comm()
    failed = False
    try:
        if distributed:
            where.enter("joining the process group")
            dist.init_process_group("gloo", timeout=timedelta(seconds=job.timeout_s))
        return _train(job, rank, world_size, where, comm)
    except BaseException as exc:
        report = (f"{FAILURE_MARK} worker rank {rank} of {world_size} failed {where}: "
                  f"{type(exc).__name__}: {exc}")
        print(report, flush=True)
        exc.add_note(report)
        failed = True
        raise
    finally:
        comm.close()
        if distributed and dist.is_initialized() and not failed:  # a broken group's teardown
            dist.destroy_process_group()  # can wait on its dead peer; the process ends anyway


def _inject_fault(job: TrainJob, rank: int, step: int) -> None:
    if job.fault is not None and job.fault.rank == rank and job.fault.step == step:
        if job.fault.kind == "kill":  # as the OOM killer or a lost machine would: no last words
            os.kill(os.getpid(), signal.SIGKILL)
        if job.fault.kind == "hang":
            time.sleep(10 * job.timeout_s)
        raise RuntimeError(f"injected fault at step {step}")


def _train(job: TrainJob, rank: int, world_size: int, where: Whereabouts,
           comm: Comm) -> TrainResult | None:
    wire = WireMeter.from_environment()  # the links' counters over the same phase as comm's
    sampler = TimelineSampler(comm, wire, job.timeline_interval_s).start()
    try:
        return _train_sampled(job, rank, world_size, where, comm, wire, sampler)
    finally:
        sampler.stop()


def _train_sampled(job: TrainJob, rank: int, world_size: int, where: Whereabouts,
                   comm: Comm, wire: WireMeter, sampler: TimelineSampler) -> TrainResult | None:
    where.enter("loading the data and the model")
    dataset = PreparedDataset.open(job.data_dir)
    strategy: Strategy = STRATEGIES[job.parallel.scheme](job, rank, world_size, comm)
    train = dataset.stream("train", strategy.input_modalities)  # batch by batch, from the store
    val = dataset.split("val") if job.validate else None
    meter = ResourceMeter()

    checkpointer = Checkpointer(job, rank, world_size)
    resumed = checkpointer.restore(strategy)
    at = resumed or Position()
    history, steps, samples = list(at.history), at.steps, at.samples
    step_times: list[float] = []
    step_comm: list[float] = []  # of each step, the time blocked in communication
    step_cpu: list[float] = []  # of each step, the training thread's CPU time
    start = time.perf_counter()
    for epoch in range(at.epoch, job.epochs):
        epoch_start = time.perf_counter()
        resuming_here = resumed is not None and epoch == at.epoch
        totals = torch.tensor(at.totals if resuming_here else [0.0, 0.0], dtype=torch.float64)
        batches = epoch_batches(len(train), job.batch_size, job.seed, epoch)
        for index in range(at.batch if resuming_here else 0, len(batches)):
            where.at(epoch + 1, steps + 1)
            _inject_fault(job, rank, steps + 1)
            step_start, comm_start = time.perf_counter(), comm.seconds
            cpu_start = time.thread_time()
            loss_sum, seen = strategy.step(train, batches[index])
            step_times.append(time.perf_counter() - step_start)
            step_cpu.append(time.thread_time() - cpu_start)
            step_comm.append(comm.seconds - comm_start)
            totals += torch.tensor([loss_sum, seen], dtype=torch.float64)
            steps += 1
            samples += len(batches[index])
            checkpointer.maybe_save(strategy, Position(epoch, index + 1, steps, samples,
                                                       totals.tolist(), history))
            if job.max_steps is not None and steps >= job.max_steps:
                break
        epoch_time = time.perf_counter() - epoch_start
        record = {"epoch": epoch + 1, "epoch_time_s": epoch_time}
        if val is not None:
            correct = torch.tensor(strategy.correct_predictions(val), dtype=torch.float64)
            totals = torch.cat([totals, correct])
        if world_size > 1:
            comm.all_reduce(totals, "control")
        record["loss"] = float(totals[0]) / max(float(totals[1]), 1.0)
        if val is not None:
            record["val_accuracy"] = float(totals[2]) / max(float(totals[3]), 1.0)
        history.append(record)
        if rank == 0:
            _log_progress(record, job, time.perf_counter() - start, steps, samples)
        if job.max_steps is not None and steps >= job.max_steps:
            break
    wall = time.perf_counter() - start

    timeline = sampler.stop()  # before the figures: the samples integrate to their counts
    figures = {"rank": float(rank), **meter.figures(), "param_bytes": float(strategy.param_bytes()),
               **comm.totals(), **wire.figures()}
    figures["compute_s"] = max(wall - figures["comm_s"], 0.0)
    figures |= step_time_quantiles(step_times)
    figures |= step_time_quantiles(step_comm, "step_comm_s")
    figures |= step_time_quantiles(step_cpu, "step_cpu_s")
    state = strategy.local_state()
    if world_size > 1:
        gathered = comm.gather_to_zero((figures, state, timeline))
        if rank != 0 or gathered is None:
            return None
        all_figures = [f for f, _, _ in gathered]
        timelines = {int(f["rank"]): t for f, _, t in gathered}
        parts = {k: v for _, part, _ in gathered for k, v in part.items()}
        merged = {k: parts[k] for k in MultimodalCNN(job.model).state_dict()}
    else:
        all_figures, merged, timelines = [figures], state, {0: timeline}
    checkpointer.clear()
    return TrainResult(state_dict=merged, history=history, steps=steps, samples=samples,
                       world_size=world_size, wall_time_s=wall, workers=all_figures,
                       resumed_from_step=at.steps, steps_run=len(step_times),
                       timelines=timelines)


WARMUP_STEPS = 2  # first steps of a run, left out of its step-time quantiles (allocator, caches)


def step_time_quantiles(step_times: list[float], name: str = "step_s") -> dict[str, float]:
    """``<name>_p10/p50/p90`` of the optimiser steps after the warm-up (all if too few)."""
    timed = step_times[WARMUP_STEPS:] if len(step_times) > WARMUP_STEPS + 1 else step_times
    if not timed:
        return {}
    p10, p50, p90 = np.quantile(timed, [0.1, 0.5, 0.9])
    return {f"{name}_p10": float(p10), f"{name}_p50": float(p50), f"{name}_p90": float(p90)}


def _log_progress(record: dict[str, float], job: TrainJob, elapsed: float, steps: int,
                  samples: int) -> None:
    epoch = int(record["epoch"])
    rate = samples / max(elapsed, 1e-9)
    eta = elapsed / epoch * (job.epochs - epoch)
    accuracy = f" val_accuracy {record['val_accuracy']:.4f}" if "val_accuracy" in record else ""
    print(f"[train {job.parallel.scheme}] epoch {epoch}/{job.epochs} loss {record['loss']:.4f}"
          f"{accuracy} | step {steps} | {rate:,.0f} samples/s | elapsed {elapsed:.1f}s, "
          f"ETA {eta:.1f}s", flush=True)
