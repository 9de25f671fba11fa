"""Data-parallel inference on Spark: the model broadcast to the executors, applied to partitions.

The samples stay where the data lives: an RDD holds, in one partition per worker, the range of
sample ids that worker predicts (its shard). Each pass runs ``mapPartitions``: every Python worker
takes the model from the broadcast and builds the samples of its own shard only (once per worker
process, kept for the following passes, as ``predict_batch_udf`` keeps its model): it opens the
prepared split (the split's patches, cut from the memory-mapped scene: a few MB for the test
split) and takes the samples of its range, not the whole timed sequence. It predicts its shard
batch by batch and returns one record per batch (its decisions and its latency, from the batch's
submission to its decisions). Only shard
ranges and decisions cross between the JVM and Python, as the land-cover map's tasks read their
own windows. A plain RDD job, not a DataFrame's ``mapInArrow``: no query planning and no Arrow
conversion for a few ranges in and a few decisions out, half the fixed cost per pass here (an
empty 2-task job: about 55 ms against 120 ms). Start-up (the broadcast) and the warm-up passes
(which load the model and the samples into the workers) are not timed.
"""

from __future__ import annotations

import functools
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.inference.job import InferJob
from pipeline.inference.timing import Timing
from pipeline.model import ModelConfig, MultimodalCNN
from pipeline.model_store import load_model
from pipeline.objective import MULTI_LABEL, decide


class BatchResult(NamedTuple):
    """One batch predicted by a worker: where it was, how long it took, what it decided."""

    partition: int
    batch: int
    n: int
    seconds: float
    decisions: bytes


# What one Python worker process keeps between passes, for one deployment (the project sets
# spark.python.worker.reuse): the model from the broadcast and the samples of each shard it ran.
_WORKER_STATE: dict[str, tuple[MultimodalCNN, dict[int, dict[str, torch.Tensor]]]] = {}


def _worker_state(key: str, broadcast: Any
                  ) -> tuple[MultimodalCNN, dict[int, dict[str, torch.Tensor]]]:
    state = _WORKER_STATE.get(key)
    if state is None:
        config, weights = broadcast.value
        model = MultimodalCNN(ModelConfig(**config))
        model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        model.eval()
        _WORKER_STATE.clear()
        state = _WORKER_STATE[key] = (model, {})
    return state


def shard_inputs(job: InferJob, start: int, stop: int) -> dict[str, torch.Tensor]:
    """Samples ``start``..``stop`` of the timed sequence (the split, repeated in order)."""
    inputs = PreparedDataset.open(job.data_dir).split(job.split).inputs
    total = next(iter(inputs.values())).shape[0]
    if total == 0:
        raise ValueError("no samples to time inference on")
    index = torch.arange(start, stop) % total
    return {name: x[index].contiguous() for name, x in inputs.items()}


def encode(decided: torch.Tensor, task: str) -> bytes:
    """Decisions as bytes: int32 class indices, or bit-packed multi-hot rows."""
    if task == MULTI_LABEL:
        return np.packbits(decided.numpy().astype(bool), axis=1).tobytes()
    return decided.numpy().astype(np.int32).tobytes()


def predict_shards(key: str, broadcast: Any, job: InferJob,
                   shards: Iterator[tuple[int, int, int]]) -> Iterator[BatchResult]:
    """``mapPartitions`` function: decisions and latency of every batch of this worker's shards."""
    torch.set_num_threads(1)
    model, samples = _worker_state(key, broadcast)
    for shard, start, stop in shards:
        if shard not in samples:
            samples[shard] = shard_inputs(job, start, stop)
        inputs = samples[shard]
        for number, lo in enumerate(range(0, stop - start, job.batch_size)):
            began = time.perf_counter()
            hi = min(lo + job.batch_size, stop - start)
            with torch.no_grad():
                decided = decide(model({k: v[lo:hi] for k, v in inputs.items()}),
                                 model.config.task, job.threshold)
            encoded = encode(decided, model.config.task)
            yield BatchResult(shard, number, hi - lo, time.perf_counter() - began, encoded)


def shard_ranges(samples: int, workers: int) -> list[tuple[int, int, int]]:
    """(shard, start, stop) of each worker: contiguous, as equal as possible, covering all."""
    bounds = np.linspace(0, samples, workers + 1).round().astype(int)
    return [(i, int(bounds[i]), int(bounds[i + 1])) for i in range(workers)]


def _decode(results: list[BatchResult], task: str, num_classes: int) -> torch.Tensor:
    parts = []
    for result in sorted(results, key=lambda r: (r.partition, r.batch)):
        if task == MULTI_LABEL:
            bits = np.unpackbits(np.frombuffer(result.decisions, np.uint8).reshape(result.n, -1),
                                 axis=1)[:, :num_classes]
            parts.append(torch.from_numpy(bits.astype(np.float32)))
        else:
            parts.append(torch.from_numpy(np.frombuffer(result.decisions, np.int32).astype(
                np.int64)))
    return torch.cat(parts)


def time_data_parallel(spark: Any, job: InferJob) -> Timing:
    """Time data-parallel inference of ``job`` on ``job.parallel.workers`` Spark tasks.

    The decisions of the last pass come back in sample order (``Timing.decisions``).
    """
    job, workers = job.resolved(), job.parallel.workers
    setup_start = time.perf_counter()
    model, _ = load_model(Path(job.model_dir))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    context = spark.sparkContext
    broadcast = context.broadcast((model.config.to_dict(), weights))
    shards = context.parallelize(shard_ranges(job.samples, workers), workers)
    function = functools.partial(predict_shards, uuid.uuid4().hex, broadcast, job)
    setup = time.perf_counter() - setup_start
    walls: list[float] = []
    batches: list[float] = []
    results: list[BatchResult] = []
    try:
        for index in range(job.warmup + job.repeats):
            start = time.perf_counter()
            results = shards.mapPartitions(function).collect()
            wall = time.perf_counter() - start
            if index >= job.warmup:
                walls.append(wall)
                batches += [result.seconds for result in results]
    finally:
        broadcast.unpersist()
    moved = float(sum(len(r.decisions) + 20 for r in results) + 20 * workers)
    return Timing(deployment="spark_data_parallel", workers=workers, samples=job.samples,
                  pass_seconds=walls, batch_seconds=batches, bytes_moved=moved,
                  model_bytes_shipped=float(len(weights) * workers), setup_s=setup,
                  decisions=_decode(results, model.config.task, model.config.num_classes))
