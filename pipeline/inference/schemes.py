"""Inference timed per scheme, the way the scheme deploys, against a single-process baseline.

- ``data_parallel``: the model broadcast to ``train.workers`` Spark tasks, each predicting its
  shard of the samples, read where the data is (:mod:`pipeline.inference.data_parallel`);
- ``branch_parallel``, ``pipeline_parallel``, ``hybrid``: the scheme's layout on Spark barrier
  tasks, activations passed between workers (:mod:`pipeline.inference.model_parallel`);
- the baseline: the whole model in this process with as many PyTorch threads as the deployment has
  workers (at most the machine's cores), over the same samples and batches.

Both report the figures of :class:`~pipeline.inference.timing.Timing` under the same names, the
ratio of their throughputs, and the share of samples on which their decisions agree (1.0: the
deployment computes the same function).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pipeline.config import InferenceParams
from pipeline.inference.data_parallel import time_data_parallel
from pipeline.inference.job import InferJob, timed_inputs
from pipeline.inference.model_parallel import time_model_parallel
from pipeline.inference.single import time_single_process
from pipeline.inference.timing import Timing, compare
from pipeline.model_store import load_model
from pipeline.training.job import ParallelSettings


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of samples whose decisions are equal (whole rows for multi-hot decisions)."""
    if a.shape != b.shape:
        raise ValueError(f"decisions of different shapes: {tuple(a.shape)} and {tuple(b.shape)}")
    equal = a == b
    return float(equal.all(dim=1).float().mean() if equal.ndim == 2 else equal.float().mean())


def time_scheme_inference(spark: Any, parallel: ParallelSettings, model_dir: Path, data_dir: Path,
                          params: InferenceParams, threshold: float = 0.5,
                          split: str = "test") -> tuple[dict[str, float], dict[str, Timing]]:
    """Time ``parallel.scheme``'s deployment and the single-process baseline on ``split``.

    Returns the flat figures (``inference_*``, ``inference_single_process_*``,
    ``inference_ratio_to_single_process``, ``inference_agreement``) and both timings.
    """
    job = InferJob(model_dir=str(model_dir), data_dir=str(data_dir), parallel=parallel,
                   split=split, samples=params.samples, batch_size=params.batch_size,
                   repeats=params.repeats, warmup=params.warmup, threshold=threshold,
                   timeout_s=params.timeout_s)
    deploy = time_data_parallel if parallel.scheme == "data_parallel" else time_model_parallel
    deployment = deploy(spark, job)
    model, _ = load_model(model_dir)
    inputs = timed_inputs(job.data_dir, split, params.samples)
    threads = max(1, min(deployment.workers, os.cpu_count() or 1))
    baseline = time_single_process(model, inputs, params.batch_size, params.repeats,
                                   params.warmup, threads, threshold)
    figures = compare(deployment, baseline)
    assert deployment.decisions is not None and baseline.decisions is not None  # both ran
    figures["inference_agreement"] = agreement(deployment.decisions, baseline.decisions)
    return figures, {"deployment": deployment, "single_process": baseline}
