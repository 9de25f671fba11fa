"""Data-parallel inference on Spark: the model broadcast to the executors, applied to partitions.

The samples are a DataFrame (one row per sample, one binary column of float32 values per
modality) split into one partition per worker and cached in the executors. Each pass runs
``mapInArrow``: every Python worker takes the model from the broadcast (once per worker process),
decodes each Arrow batch of its partition without copying, predicts it and returns one row per
batch (its decisions and its latency). Start-up (the DataFrame, the cache, the broadcast) and the
warm-up passes are excluded from the timed passes.
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

from pipeline.inference.timing import Timing
from pipeline.model import ModelConfig, MultimodalCNN
from pipeline.objective import MULTI_LABEL, decide

OUTPUT_SCHEMA = "partition int, batch int, n int, seconds double, decisions binary"

# One model per Python worker process, keyed by the deployment: a reused worker (the project sets
# spark.python.worker.reuse) deserialises the weights once, as ``predict_batch_udf`` does.
_WORKER_MODELS: dict[str, MultimodalCNN] = {}


def _worker_model(key: str, broadcast: Any) -> MultimodalCNN:
    model = _WORKER_MODELS.get(key)
    if model is None:
        config, weights = broadcast.value
        model = MultimodalCNN(ModelConfig(**config))
        model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        model.eval()
        _WORKER_MODELS.clear()
        _WORKER_MODELS[key] = model
    return model


def predict_arrow_batches(key: str, broadcast: Any, shapes: dict[str, tuple[int, ...]], threshold: float,
                          batches: Iterator[Any]) -> Iterator[Any]:
    """``mapInArrow`` function: decisions and latency of every Arrow batch of a partition."""
    import pyarrow as pa
    from pyspark import TaskContext

    torch.set_num_threads(1)
    model = _worker_model(key, broadcast)
    partition = TaskContext.get().partitionId() if TaskContext.get() else 0
    for number, batch in enumerate(batches):
        start = time.perf_counter()
        n = batch.num_rows
        inputs = {}
        for name, shape in shapes.items():
            column = batch.column(name)  # binary: the values of all rows, back to back
            size = int(np.prod(shape))
            _, offsets, data = column.buffers()
            first = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=4 * column.offset)[0])
            values = np.frombuffer(data, dtype=np.float32, count=n * size, offset=first)
            inputs[name] = torch.from_numpy(values.reshape(n, *shape).copy())
        with torch.no_grad():
            decided = decide(model(inputs), model.config.task, threshold)
        encoded = (np.packbits(decided.numpy().astype(bool), axis=1).tobytes()
                   if model.config.task == MULTI_LABEL
                   else decided.numpy().astype(np.int32).tobytes())
        seconds = time.perf_counter() - start
        yield pa.RecordBatch.from_pydict({
            "partition": pa.array([partition], pa.int32()), "batch": pa.array([number], pa.int32()),
            "n": pa.array([n], pa.int32()), "seconds": pa.array([seconds], pa.float64()),
            "decisions": pa.array([encoded], pa.binary())})


def samples_table(inputs: dict[str, torch.Tensor]) -> Any:
    """An Arrow table: ``id`` and one binary column of float32 values per modality."""
    import pyarrow as pa

    total = next(iter(inputs.values())).shape[0]
    columns = {"id": pa.array(np.arange(total, dtype=np.int64))}
    for name, x in inputs.items():
        flat = np.ascontiguousarray(x.numpy(), dtype=np.float32).reshape(total, -1)
        width = flat.shape[1] * 4
        offsets = pa.array(np.arange(0, (total + 1) * width, width, dtype=np.int32))
        columns[name] = pa.BinaryArray.from_buffers(pa.binary(), total,
                                                    [None, offsets.buffers()[1],
                                                     pa.py_buffer(flat.tobytes())])
    return pa.table(columns)


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


def time_data_parallel(spark: Any, model: MultimodalCNN, inputs: dict[str, torch.Tensor],
                       batch_size: int, workers: int, repeats: int, warmup: int,
                       threshold: float = 0.5) -> Timing:
    """Time data-parallel inference of ``model`` over ``inputs`` on ``workers`` Spark tasks.

    The decisions of the last pass come back in sample order (``Timing.decisions``).
    """
    if workers < 1 or batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"workers, batch_size and repeats must be >= 1 and warmup >= 0, got "
                         f"{workers}, {batch_size}, {repeats}, {warmup}")
    setup_start = time.perf_counter()
    total = next(iter(inputs.values())).shape[0]
    shapes = {name: tuple(x.shape[1:]) for name, x in inputs.items()}
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    weights = buffer.getvalue()
    context = spark.sparkContext
    broadcast = context.broadcast((model.config.to_dict(), weights))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    table = samples_table(inputs)
    # Contiguous ranges of ids, one per worker: each worker predicts its shard.
    frame = spark.createDataFrame(table).repartitionByRange(workers, "id").cache()
    frame.count()
    function = functools.partial(predict_arrow_batches, uuid.uuid4().hex, broadcast, shapes,
                                 threshold)
    setup = time.perf_counter() - setup_start
    walls: list[float] = []
    batches: list[float] = []
    rows: list[Any] = []
    try:
        for index in range(warmup + repeats):
            start = time.perf_counter()
            rows = frame.mapInArrow(function, OUTPUT_SCHEMA).collect()
            wall = time.perf_counter() - start
            if index >= warmup:
                walls.append(wall)
                batches += [row["seconds"] for row in rows]
    finally:
        frame.unpersist()
        broadcast.unpersist()
    moved = float(table.nbytes) + sum(len(r["decisions"]) + 20 for r in rows)
    return Timing(deployment="spark_data_parallel", workers=workers, samples=total,
                  pass_seconds=walls, batch_seconds=batches, bytes_moved=moved,
                  model_bytes_shipped=float(len(weights) * workers), setup_s=setup,
                  decisions=_decode(rows, model.config.task, model.config.num_classes))
