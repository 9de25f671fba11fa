"""The rank-aware training loop, one code path for one process or N.

``train_worker`` is a top-level function of one picklable argument, so ``TorchDistributor`` can
ship it to Spark tasks. Rank and world size come from the environment torchrun sets.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.data.dataset import PreparedDataset
from pipeline.model import MultimodalCNN, predict
from pipeline.training.batches import epoch_batches, shard
from pipeline.training.job import TrainJob, TrainResult


def _rank_and_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def build_model(job: TrainJob) -> MultimodalCNN:
    """The initial model: identical on every worker because it is built from the job's seed."""
    torch.manual_seed(job.seed)
    return MultimodalCNN(job.model)


def train_worker(job: TrainJob) -> TrainResult | None:
    """Train under data parallelism (DDP over gloo) when ``WORLD_SIZE > 1``, else alone.

    Returns:
        On rank 0, the trained state dict and the epoch history; ``None`` on other ranks.
    """
    rank, world_size = _rank_and_world()
    torch.set_num_threads(job.threads_per_worker)
    distributed = world_size > 1
    if distributed:
        dist.init_process_group("gloo", timeout=timedelta(seconds=job.timeout_s))
    try:
        return _train(job, rank, world_size, distributed)
    finally:
        if distributed:
            dist.destroy_process_group()


def _train(job: TrainJob, rank: int, world_size: int, distributed: bool) -> TrainResult | None:
    dataset = PreparedDataset.open(job.data_dir)
    train = dataset.split("train")
    val = dataset.split("val") if rank == 0 else None

    model = build_model(job)
    net: nn.Module = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.SGD(net.parameters(), lr=job.learning_rate, momentum=job.momentum)
    loss_fn = nn.CrossEntropyLoss()

    history: list[dict[str, float]] = []
    steps = 0
    start = time.perf_counter()
    for epoch in range(job.epochs):
        epoch_start = time.perf_counter()
        net.train()
        loss_sum = torch.zeros(2, dtype=torch.float64)  # sum of losses, number of samples
        for batch in epoch_batches(len(train), job.batch_size, job.seed, epoch):
            inputs, labels = train.batch(shard(batch, rank, world_size))
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(inputs), labels)
            loss.backward()
            optimizer.step()
            loss_sum += torch.tensor([loss.item() * len(labels), len(labels)], dtype=torch.float64)
            steps += 1
            if job.max_steps is not None and steps >= job.max_steps:
                break
        if distributed:
            dist.all_reduce(loss_sum)
        record = {"epoch": epoch + 1, "loss": float(loss_sum[0] / loss_sum[1]),
                  "epoch_time_s": time.perf_counter() - epoch_start}
        if rank == 0:
            accuracy = (predict(model, val.inputs) == val.labels).double().mean().item()
            record["val_accuracy"] = accuracy
            _log_progress(record, job, float(loss_sum[1]), time.perf_counter() - start)
        history.append(record)
        if job.max_steps is not None and steps >= job.max_steps:
            break

    if rank != 0:
        return None
    return TrainResult(
        state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
        history=history, steps=steps, world_size=world_size,
        wall_time_s=time.perf_counter() - start,
    )


def _log_progress(record: dict[str, float], job: TrainJob, samples: float,
                  elapsed: float) -> None:
    epoch = int(record["epoch"])
    rate = samples / max(record["epoch_time_s"], 1e-9)
    eta = elapsed / epoch * (job.epochs - epoch)
    print(f"[train] epoch {epoch}/{job.epochs} loss {record['loss']:.4f} "
          f"val_accuracy {record['val_accuracy']:.4f} | {rate:,.0f} samples/s | "
          f"elapsed {elapsed:.1f}s, ETA {eta:.1f}s", flush=True)
