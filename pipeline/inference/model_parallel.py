"""Model-parallel inference: the layout's units on different workers, activations passed on.

The same Spark barrier tasks as training (:mod:`pipeline.training.barrier`, one PyTorch process
per task, gloo) run :func:`infer_worker`. Each worker holds the units its local rank has in
the scheme's :class:`~pipeline.training.layout.Layout` (modality branches for branch-parallel and
hybrid, consecutive layers for pipeline-parallel), runs them forward only, and sends every
activation another rank reads through a counting :class:`~pipeline.training.comm.Comm`. Sends are
non-blocking, so an upstream worker starts the next batch while downstream works on the last (the
pipeline fills). Hybrid replicas take alternate batches.

Each pass starts and ends on a barrier. A batch's latency is, as for every deployment, its time
from submission to its decisions: from the moment the first worker that reads its inputs starts on
it to the moment the worker that produces the logits has decided it (wall-clock stamps of two
processes: exact on one machine, within the clocks' synchronisation on a cluster).
The launch (processes, process group) is reported separately as the set-up time.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pipeline.data.dataset import PreparedDataset
from pipeline.errors import TrainingError
from pipeline.inference.job import InferJob, timed_inputs
from pipeline.inference.timing import Timing, submission_to_decision
from pipeline.model import LOGITS
from pipeline.model_store import load_model
from pipeline.objective import decide
from pipeline.training.barrier import run_workers
from pipeline.training.comm import Comm
from pipeline.training.failures import WorkerReports
from pipeline.training.layout import layout_for
from pipeline.training.layout_runner import LayoutRunner


def infer_worker(job: InferJob) -> dict[str, Any] | None:
    """Time forward-only passes of this worker's share of the layout.

    Rank 0 returns every worker's figures and the decisions of the last pass (``None`` on
    other ranks).
    """
    begun = time.perf_counter()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=job.timeout_s))
    try:
        return _infer(job, rank, world, begun)
    finally:
        dist.destroy_process_group()


def _infer(job: InferJob, rank: int, world: int, begun: float) -> dict[str, Any] | None:
    model, _ = load_model(Path(job.model_dir))
    dataset = PreparedDataset.open(job.data_dir)
    layout = layout_for(model.config, job.parallel, model)
    if layout.world_size != world:
        raise RuntimeError(f"{job.parallel.scheme} needs {layout.world_size} workers, {world} "
                           "were started")
    comm = Comm()
    runner = LayoutRunner(model, layout, rank, comm, int(dataset.manifest["patch_size"]),
                          job.parallel.activation_dtype)
    inputs = timed_inputs(job.data_dir, job.split, job.samples) if runner.reads_inputs else {}
    starts = list(range(0, job.samples, job.batch_size))
    mine = [b for b in range(len(starts)) if b % layout.replicas == runner.replica]
    walls: list[float] = []
    submitted: dict[tuple[int, int], float] = {}  # (pass, batch) -> when this worker began it
    decided: dict[tuple[int, int], float] = {}  # (pass, batch) -> when its decisions were made
    decisions: dict[int, torch.Tensor] = {}
    for index in range(job.warmup + job.repeats):
        timed = index >= job.warmup
        if timed and index == job.warmup:
            sent_before = sum(comm.sent.values())
        works: list[Any] = []
        dist.barrier()
        start = time.perf_counter()
        for number in mine:
            lo = starts[number]
            size = min(job.batch_size, job.samples - lo)
            batch = {k: v[lo:lo + size] for k, v in inputs.items()}
            if timed and runner.reads_inputs:
                submitted[(index, number)] = time.time()
            with torch.no_grad():
                env, _, _ = runner.forward(batch, size, number, "activations", works)
            if runner.produces_logits:
                decisions[number] = decide(env[LOGITS], model.config.task, job.threshold)
                if timed:
                    decided[(index, number)] = time.time()
        comm.wait(works)
        dist.barrier()
        if timed:
            walls.append(time.perf_counter() - start)
    moved = (sum(comm.sent.values()) - sent_before) / job.repeats
    figures = {"rank": rank, "bytes_sent_per_pass": moved, "submitted": submitted,
               "decided": decided,
               "decisions": decisions if runner.produces_logits else {},
               "param_bytes": sum(p.numel() * p.element_size() for u in runner.units
                                  for m in u.modules for p in m.parameters()),
               "worker_s": time.perf_counter() - begun}
    gathered = comm.gather_to_zero(figures)
    if rank != 0 or gathered is None:
        return None
    merged = {b: d for f in gathered for b, d in f["decisions"].items()}
    return {"pass_seconds": walls, "latencies": submission_to_decision(gathered), "workers": [
        {k: v for k, v in f.items() if k not in ("decisions", "submitted", "decided")}
        for f in gathered],
        "decisions": torch.cat([merged[b] for b in range(len(starts))]),
        "worker_s": figures["worker_s"]}


def time_model_parallel(spark: Any, job: InferJob) -> Timing:
    """Time model-parallel inference of ``job`` on Spark barrier tasks.

    Raises:
        TrainingError: too few task slots, a worker failed, or it outlasted ``job.timeout_s``.
    """
    model, _ = load_model(Path(job.model_dir))
    layout = layout_for(model.config, job.parallel, model)
    job = job.resolved()
    context = spark.sparkContext
    if context.master.startswith("local"):
        slots = context.defaultParallelism // int(context.getConf().get("spark.task.cpus", "1"))
        if layout.world_size > slots:
            raise TrainingError(
                f"{job.parallel.scheme} inference needs {layout.world_size} workers but the "
                f"Spark application has only {slots} task slots. Fix: give Spark more slots "
                "(spark.master, e.g. local[4])")
    start = time.perf_counter()
    try:
        outcomes = run_workers(spark, infer_worker, job, layout.world_size, job.timeout_s)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(WorkerReports().summary(job.parallel.scheme, layout.world_size, exc,
                                                    activity="inference")) from exc
    if not all(o.ok for o in outcomes):
        raise TrainingError(WorkerReports.of(outcomes).summary(
            job.parallel.scheme, layout.world_size, activity="inference"))
    result = outcomes[0].result
    total = time.perf_counter() - start
    if not isinstance(result, dict):
        raise TrainingError(f"{job.parallel.scheme} inference returned no result from rank 0")
    workers = result["workers"]
    timed = sum(result["pass_seconds"])
    return Timing(
        deployment=f"spark_{job.parallel.scheme}", workers=layout.world_size, samples=job.samples,
        pass_seconds=result["pass_seconds"],
        batch_seconds=result["latencies"],
        bytes_moved=sum(w["bytes_sent_per_pass"] for w in workers),
        setup_s=max(total - timed, 0.0), decisions=result["decisions"])
