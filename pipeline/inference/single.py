"""The single-process PyTorch baseline: the whole model in this process, batch after batch."""

from __future__ import annotations

import time

import torch

from pipeline.inference.timing import Timing
from pipeline.model import MultimodalCNN
from pipeline.objective import decide


@torch.no_grad()
def time_single_process(model: MultimodalCNN, inputs: dict[str, torch.Tensor], batch_size: int,
                        repeats: int, warmup: int, threads: int,
                        threshold: float = 0.5) -> Timing:
    """Time ``model`` over ``inputs`` in one process with ``threads`` PyTorch threads.

    The decisions of the last pass are kept (``Timing.decisions``) so a deployment can be checked
    against them.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0 or threads < 1:
        raise ValueError(f"batch_size, repeats and threads must be >= 1 and warmup >= 0, got "
                         f"{batch_size}, {repeats}, {threads}, {warmup}")
    model.eval()
    total = next(iter(inputs.values())).shape[0]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        walls: list[float] = []
        batches: list[float] = []
        decisions: list[torch.Tensor] = []
        for index in range(warmup + repeats):
            timed = index >= warmup
            decisions = []
            start = time.perf_counter()
            for i in range(0, total, batch_size):
                submitted = time.perf_counter()  # a batch's latency: submission to decisions
                logits = model({k: v[i:i + batch_size] for k, v in inputs.items()})
                decisions.append(decide(logits, model.config.task, threshold))
                if timed:
                    batches.append(time.perf_counter() - submitted)
            if timed:
                walls.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return Timing(deployment="single_process", workers=1, samples=total, pass_seconds=walls,
                  batch_seconds=batches, decisions=torch.cat(decisions))
