"""Data-parallel inference on Spark: the model broadcast to the executors, applied to partitions.

The samples stay where the data lives: the DataFrame holds one row per worker, the range of sample
ids that worker predicts (its shard), split into one partition per worker. Each pass runs
``mapInArrow``: every Python worker takes the model from the broadcast and reads the samples from
the prepared dataset (each once per worker process, kept for the following passes, as
``predict_batch_udf`` keeps its model), predicts its shard batch by batch and returns one row per
batch (its decisions and latency). Only shard ranges and decisions cross between the JVM and
Python, as the land-cover map's tasks read their own windows. Start-up (the broadcast) and the
warm-up passes (which load the model and the samples into the workers) are not timed.
"""

from __future__ import annotations

import functools
import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from pipeline.inference.job import InferJob, timed_inputs
from pipeline.inference.timing import Timing
from pipeline.model import ModelConfig, MultimodalCNN
from pipeline.model_store import load_model
from pipeline.objective import MULTI_LABEL, decide

SHARD_SCHEMA = "shard int, start long, stop long"
OUTPUT_SCHEMA = "partition int, batch int, n int, seconds double, decisions binary"

# What one Python worker process keeps between passes, for one deployment (the project sets
# spark.python.worker.reuse): the model from the broadcast and the samples.
_WORKER_STATE: dict[str, tuple[MultimodalCNN, dict[str, torch.Tensor]]] = {}


def _worker_state(key: str, broadcast: Any,
                  job: InferJob) -> tuple[MultimodalCNN, dict[str, torch.Tensor]]:
    state = _WORKER_STATE.get(key)
    if state is None:
        config, weights = broadcast.value
        model = MultimodalCNN(ModelConfig(**config))
        model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        model.eval()
        _WORKER_STATE.clear()
        state = _WORKER_STATE[key] = (model, timed_inputs(job.data_dir, job.split, job.samples))
    return state


def encode(decided: torch.Tensor, task: str) -> bytes:
    """Decisions as bytes: int32 class indices, or bit-packed multi-hot rows."""
    if task == MULTI_LABEL:
        return np.packbits(decided.numpy().astype(bool), axis=1).tobytes()
    return decided.numpy().astype(np.int32).tobytes()


def predict_shards(key: str, broadcast: Any, job: InferJob,
                   shards: Iterator[Any]) -> Iterator[Any]:
    """``mapInArrow`` function: decisions and latency of every batch of this worker's shards."""
    import pyarrow as pa

    torch.set_num_threads(1)
    model, inputs = _worker_state(key, broadcast, job)
    for table in shards:
        for shard, start, stop in zip(*(table.column(c).to_pylist()
                                         for c in ("shard", "start", "stop")), strict=True):
            for number, lo in enumerate(range(start, stop, job.batch_size)):
                began = time.perf_counter()
                hi = min(lo + job.batch_size, stop)
                with torch.no_grad():
                    decided = decide(model({k: v[lo:hi] for k, v in inputs.items()}),
                                     model.config.task, job.threshold)
                encoded = encode(decided, model.config.task)
                seconds = time.perf_counter() - began
                yield pa.RecordBatch.from_pydict({
                    "partition": pa.array([shard], pa.int32()),
                    "batch": pa.array([number], pa.int32()), "n": pa.array([hi - lo], pa.int32()),
                    "seconds": pa.array([seconds], pa.float64()),
                    "decisions": pa.array([encoded], pa.binary())})


def shard_ranges(samples: int, workers: int) -> list[tuple[int, int, int]]:
    """(shard, start, stop) of each worker: contiguous, as equal as possible, covering all."""
    bounds = np.linspace(0, samples, workers + 1).round().astype(int)
    return [(i, int(bounds[i]), int(bounds[i + 1])) for i in range(workers)]


def _decode(rows: list[Any], task: str, num_classes: int) -> torch.Tensor:
    parts = []
    for row in sorted(rows, key=lambda r: (r["partition"], r["batch"])):
        if task == MULTI_LABEL:
            bits = np.unpackbits(np.frombuffer(row["decisions"], np.uint8).reshape(row["n"], -1),
                                 axis=1)[:, :num_classes]
            parts.append(torch.from_numpy(bits.astype(np.float32)))
        else:
            parts.append(torch.from_numpy(np.frombuffer(row["decisions"], np.int32).astype(
                np.int64)))
    return torch.cat(parts)


def time_data_parallel(spark: Any, job: InferJob) -> Timing:
    """Time data-parallel inference of ``job`` on ``job.parallel.workers`` Spark tasks.

    The decisions of the last pass come back in sample order (``Timing.decisions``).
    """
    job, workers = job.resolved(), job.parallel.workers
    setup_start = time.perf_counter()
    model, _ = load_model(job.model_dir)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    context = spark.sparkContext
    broadcast = context.broadcast((model.config.to_dict(), weights))
    shards = spark.createDataFrame(
        context.parallelize(shard_ranges(job.samples, workers), workers), SHARD_SCHEMA)
    function = functools.partial(predict_shards, uuid.uuid4().hex, broadcast, job)
    setup = time.perf_counter() - setup_start
    walls: list[float] = []
    batches: list[float] = []
    rows: list[Any] = []
    try:
        for index in range(job.warmup + job.repeats):
            start = time.perf_counter()
            rows = shards.mapInArrow(function, OUTPUT_SCHEMA).collect()
            wall = time.perf_counter() - start
            if index >= job.warmup:
                walls.append(wall)
                batches += [row["seconds"] for row in rows]
    finally:
        broadcast.unpersist()
    moved = float(sum(len(r["decisions"]) + 20 for r in rows) + 20 * workers)
    return Timing(deployment="spark_data_parallel", workers=workers, samples=job.samples,
                  pass_seconds=walls, batch_seconds=batches, bytes_moved=moved,
                  model_bytes_shipped=float(len(weights) * workers), setup_s=setup,
                  decisions=_decode(rows, model.config.task, model.config.num_classes))
