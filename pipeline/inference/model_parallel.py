"""Model-parallel inference: the layout's units on different workers, activations passed on.

The same Spark barrier tasks as training (``TorchDistributor(local_mode=False)``, one PyTorch
process per task, gloo) run :func:`infer_worker`. Each worker holds the units its local rank has in
the scheme's :class:`~pipeline.training.layout.Layout` (modality branches for branch-parallel and
hybrid, consecutive layers for pipeline-parallel), runs them forward only, and sends every
activation another rank reads through a counting :class:`~pipeline.training.comm.Comm`. Sends
are non-blocking, so an upstream worker starts the next batch while downstream works on the last
(the pipeline fills). Hybrid replicas take alternate batches.

Each pass starts and ends on a barrier; the worker that produces the logits records the time
between successive batch results. ``TorchDistributor``'s launch (processes, process group) is
reported separately as the set-up time.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from pipeline.data.dataset import PreparedDataset
from pipeline.errors import TrainingError
from pipeline.inference.job import InferJob, timed_inputs
from pipeline.inference.timing import Timing
from pipeline.model import LOGITS
from pipeline.model_store import load_model
from pipeline.objective import decide
from pipeline.training.comm import Comm
from pipeline.training.layout import layout_for
from pipeline.training.layout_runner import LayoutRunner
from pipeline.training.schemes import run_with_timeout


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
    model, _ = load_model(job.model_dir)
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
    latencies: list[float] = []
    decisions: dict[int, torch.Tensor] = {}
    for index in range(job.warmup + job.repeats):
        timed = index >= job.warmup
        if timed and index == job.warmup:
            sent_before = sum(comm.sent.values())
        works: list[dist.Work] = []
        dist.barrier()
        start = last = time.perf_counter()
        for number in mine:
            lo = starts[number]
            size = min(job.batch_size, job.samples - lo)
            batch = {k: v[lo:lo + size] for k, v in inputs.items()}
            with torch.no_grad():
                env, _, _ = runner.forward(batch, size, number, "activations", works)
            if runner.produces_logits:
                decisions[number] = decide(env[LOGITS], model.config.task, job.threshold)
                now = time.perf_counter()
                if timed:
                    latencies.append(now - last)
                last = now
        comm.wait(works)
        dist.barrier()
        if timed:
            walls.append(time.perf_counter() - start)
    moved = (sum(comm.sent.values()) - sent_before) / job.repeats
    figures = {"rank": rank, "bytes_sent_per_pass": moved, "latencies": latencies,
               "decisions": decisions if runner.produces_logits else {},
               "param_bytes": sum(p.numel() * p.element_size() for u in runner.units
                                  for m in u.modules for p in m.parameters()),
               "worker_s": time.perf_counter() - begun}
    gathered = comm.gather_to_zero(figures)
    if rank != 0:
        return None
    assert gathered is not None  # rank 0 gathers every rank's part
    merged = {b: d for f in gathered for b, d in f["decisions"].items()}
    return {"pass_seconds": walls, "workers": [
        {k: v for k, v in f.items() if k != "decisions"} for f in gathered],
        "decisions": torch.cat([merged[b] for b in range(len(starts))]),
        "worker_s": figures["worker_s"]}


def time_model_parallel(spark: Any, job: InferJob) -> Timing:
    """Time model-parallel inference of ``job`` on Spark barrier tasks.

    Raises:
        TrainingError: too few task slots, a worker failed, or it outlasted ``job.timeout_s``.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    model, _ = load_model(job.model_dir)
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
    distributor = TorchDistributor(num_processes=layout.world_size, local_mode=False,
                                   use_gpu=False)
    start = time.perf_counter()
    try:
        result = run_with_timeout(spark, lambda: distributor.run(infer_worker, job), job.timeout_s)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"{job.parallel.scheme} inference on Spark failed: "
                            f"{str(exc).strip()[:500]} (the workers' output above has the "
                            "details)") from exc
    total = time.perf_counter() - start
    if not isinstance(result, dict):
        raise TrainingError(f"{job.parallel.scheme} inference returned no result from rank 0")
    workers = result["workers"]
    timed = sum(result["pass_seconds"])
    return Timing(
        deployment=f"spark_{job.parallel.scheme}", workers=layout.world_size, samples=job.samples,
        pass_seconds=result["pass_seconds"],
        batch_seconds=[s for w in workers for s in w["latencies"]],
        bytes_moved=sum(w["bytes_sent_per_pass"] for w in workers),
        setup_s=max(total - timed, 0.0), decisions=result["decisions"])
