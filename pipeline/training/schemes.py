"""The parallelisation schemes, launched as Spark barrier tasks.

Every scheme runs :func:`~pipeline.training.worker.train_worker` on Spark barrier tasks
(:mod:`pipeline.training.barrier`: each worker is a Spark task, on a local master or a cluster
alike), one PyTorch process per task, in a gloo process group. The schemes differ in how
many workers they need, what one worker does in a step (:mod:`pipeline.training.strategies`), and
the traffic that implies:

- ``data_parallel``: ``workers`` full replicas; DDP all-reduces the gradients.
- ``branch_parallel``: one worker per modality branch; the fusion head on its own worker
  (``head_placement: own``) or with the last branch (``shared``).
- ``pipeline_parallel``: the network's layers cut into ``pipeline_stages`` sequential stages,
  trained GPipe-style with ``micro_batches`` micro-batches.
- ``hybrid``: ``replicas`` copies of the branch-parallel layout, each part's gradients
  all-reduced across the copies.

Every scheme returns one ordinary state dict of :class:`~pipeline.model.MultimodalCNN`.
"""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.errors import TrainingError
from pipeline.model import MultimodalCNN
from pipeline.training.barrier import run_workers
from pipeline.training.comm import all_reduce_bytes
from pipeline.training.failures import WorkerReports
from pipeline.training.job import TrainJob, TrainResult
from pipeline.training.layout import layout_for, model_parallel_bytes_per_step
from pipeline.training.spark_metrics import job_group_metrics, prime
from pipeline.training.strategies import POWERSGD_WARMUP_STEPS, STRATEGIES
from pipeline.training.worker import train_worker

SCHEMES = tuple(STRATEGIES)


def world_size(job: TrainJob) -> int:
    """How many workers (Spark tasks) ``job``'s scheme uses."""
    _check_scheme(job.parallel.scheme)
    if job.parallel.scheme == "data_parallel":
        return job.parallel.workers
    return layout_for(job.model, job.parallel).world_size


def modelled_payload_per_step(job: TrainJob, patch_size: int,
                              steps: int | None = None) -> dict[str, float]:
    """Payload bytes sent per optimiser step, from the model's shapes, summed over workers.

    By purpose. An all-reduce is modelled as the ring moves it (:func:`all_reduce_bytes`).
    PowerSGD sends each gradient's compressed ``P`` and ``Q`` (or the gradient itself where that
    does not pay: the cost model's ``powersgd_bytes``) after
    ``POWERSGD_WARMUP_STEPS`` uncompressed steps: with ``steps``, the figure is the mean over a
    run of that many steps; without, the compressed steady state.
    """
    parallel = job.parallel
    if parallel.scheme != "data_parallel":
        return model_parallel_bytes_per_step(job.model, layout_for(job.model, parallel),
                                             job.batch_size, patch_size,
                                             parallel.activation_dtype)
    workers = parallel.workers
    param_bytes = sum(p.numel() * p.element_size()
                      for p in MultimodalCNN(job.model).parameters())
    if parallel.sync_every > 1:
        return {"parameters": workers * all_reduce_bytes(param_bytes, workers)
                / parallel.sync_every}
    if parallel.gradient_compression == "powersgd" and workers > 1:
        from pipeline.plan.programs import powersgd_bytes  # here: plan imports this module

        sent = sum(powersgd_bytes(tuple(p.shape), parallel.powersgd_rank)
                   for p in MultimodalCNN(job.model).parameters())
        compressed = workers * all_reduce_bytes(int(sent), workers)
        full = workers * all_reduce_bytes(param_bytes, workers)
        warmup = min(POWERSGD_WARMUP_STEPS, steps) if steps else 0
        mean = (warmup * full + ((steps or 1) - warmup) * compressed) / (steps or 1)
        return {"gradients": mean}
    # fp16/bf16 halve what is all-reduced
    wire = param_bytes // 2 if parallel.gradient_compression in ("fp16", "bf16") else param_bytes
    return {"gradients": workers * all_reduce_bytes(wire, workers)}


def fit(spark: Any, job: TrainJob, patch_size: int) -> TrainResult:
    """Train ``job`` on the Spark application ``spark``; returns rank 0's result.

    The result comes with every worker's figures (payload counted at the call, wire bytes
    where the workers have links of their own) and the payload modelled from the shapes.

    Raises:
        TrainingError: too few task slots, a worker failed (named in the message, with where it
            was), or training outlasted ``job.timeout_s`` (the Spark job is cancelled, its
            workers stopped).
    """
    workers = world_size(job)
    slots = _task_slots(spark)
    if slots is not None and workers > slots:
        raise TrainingError(
            f"{job.parallel.scheme} needs {workers} workers but the Spark application has only "
            f"{slots} task slots, so the barrier stage could never start. Fix: lower "
            "train.workers (or the scheme's layout settings) or give Spark more slots "
            "(spark.master, e.g. local[4], or more executors)")
    group = f"landcover-train-{uuid.uuid4().hex}"
    prime(spark)  # while the workers start
    try:
        outcomes = run_workers(spark, train_worker, job, workers, job.timeout_s, group)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(WorkerReports().summary(job.parallel.scheme, workers, exc)) from exc
    if not all(o.ok for o in outcomes):
        raise TrainingError(WorkerReports.of(outcomes).summary(job.parallel.scheme, workers))
    result = outcomes[0].result
    if not isinstance(result, TrainResult):
        raise TrainingError(f"{job.parallel.scheme} training returned no result from rank 0")
    result.modelled_payload_per_step = modelled_payload_per_step(job, patch_size, result.steps)
    result.spark = job_group_metrics(spark, group)
    return result


def _check_scheme(name: str) -> None:
    if name not in SCHEMES:
        raise ValueError(f"train.scheme must be one of {list(SCHEMES)}, got {name!r}")


def _task_slots(spark: Any) -> int | None:
    """How many tasks a local application can run at once.

    ``None`` on a cluster, whose executors may still be joining: there the barrier stage waits
    for them.
    """
    context = spark.sparkContext
    if not context.master.startswith("local"):
        return None
    task_cpus = int(context.getConf().get("spark.task.cpus", "1"))
    slots: int = context.defaultParallelism // task_cpus
    return slots

