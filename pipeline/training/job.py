"""What a training worker is asked to do, and what training gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from pipeline.model import ModelConfig

Compression = Literal["none", "fp16", "bf16", "powersgd"]
WireDtype = Literal["float32", "float16", "bfloat16"]


@dataclass(frozen=True)
class ParallelSettings:
    """How the work is split. Each setting applies to the schemes named in its comment."""

    scheme: str = "data_parallel"
    workers: int = 2  # data_parallel: replicas
    gradient_compression: Compression = "none"  # data_parallel: DDP communication hook
    powersgd_rank: int = 2  # data_parallel with powersgd
    sync_every: int = 1  # data_parallel: >1 is local SGD, parameters averaged every k steps
    micro_batches: int = 1  # model-parallel schemes: micro-batches per step
    activation_dtype: WireDtype = "float32"  # model-parallel schemes: dtype on the wire
    head_placement: Literal["shared", "own"] = "shared"  # branch_parallel, hybrid
    pipeline_stages: int = 2  # pipeline_parallel
    replicas: int = 2  # hybrid


@dataclass(frozen=True)
class Fault:
    """A failure to inject (tests of failure handling).

    At ``step``, worker ``rank`` raises (``crash``), stops responding (``hang``) or is killed
    with SIGKILL (``kill``).
    """

    rank: int
    step: int
    kind: Literal["crash", "hang", "kill"] = "crash"


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs, as plain picklable values (it crosses into Spark tasks).

    ``data_dir`` must be readable at the same path on every executor (local disk on one
    machine, a shared file system on a cluster).
    """

    data_dir: str
    model: ModelConfig
    batch_size: int
    epochs: int
    learning_rate: float
    momentum: float
    seed: int
    parallel: ParallelSettings = ParallelSettings()
    threads_per_worker: int = 1
    timeout_s: int = 1800
    max_steps: int | None = None  # stop after this many optimiser steps (tests, benchmarks)
    validate: bool = True  # validation accuracy after every epoch
    checkpoint_dir: str | None = None  # shared by all workers; None: no checkpoints
    checkpoint_every: int = 0  # optimiser steps between checkpoints; 0: none
    fault: Fault | None = None


@dataclass
class TrainResult:
    """The trained weights (one ordinary state dict) and what happened on the way.

    ``workers`` holds every worker's own figures (CPU, memory, parameter bytes, traffic by
    purpose, communication time), gathered by rank 0. ``expected_bytes_per_step`` is the analytic
    traffic of the scheme, summed over workers, by purpose.
    """

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    world_size: int = 1
    wall_time_s: float = 0.0
    workers: list[dict[str, float]] = field(default_factory=list)
    expected_bytes_per_step: dict[str, float] = field(default_factory=dict)
    physical_loopback_bytes: float | None = None
    spark: dict[str, float] = field(default_factory=dict)  # Spark's own task metrics

    def measured_bytes(self, purpose: str) -> float:
        """Bytes sent for ``purpose``, summed over workers, over the whole training."""
        return sum(w.get(f"bytes_sent_{purpose}", 0.0) for w in self.workers)

    def metrics(self) -> dict[str, float]:
        """Figures for MLflow; the same names for every scheme."""
        steps = max(self.steps, 1)
        step_purposes = [p for p in ("gradients", "parameters", "activations",
                                     "activation_gradients")]
        measured = sum(self.measured_bytes(p) for p in step_purposes)
        expected = sum(self.expected_bytes_per_step.get(p, 0.0) for p in step_purposes) * steps
        out = {
            "training_time_s": self.wall_time_s,
            "steps": float(self.steps),
            "samples_per_s": self.samples / self.wall_time_s if self.wall_time_s else 0.0,
            "world_size": float(self.world_size),
            "bytes_sent_total": sum(w.get("bytes_sent", 0.0) for w in self.workers),
            "bytes_received_total": sum(w.get("bytes_received", 0.0) for w in self.workers),
            "bytes_sent_per_step": measured / steps,
            "bytes_sent_per_sample": measured / max(self.samples, 1),
            "expected_bytes_per_step": expected / steps,
            "traffic_ratio_measured_to_expected": measured / expected if expected else 0.0,
            "max_worker_param_bytes": max((w["param_bytes"] for w in self.workers), default=0),
            "max_worker_peak_rss_mb": max((w["peak_rss_mb"] for w in self.workers), default=0),
            "cpu_s_total": sum(w["cpu_s"] for w in self.workers),
        }
        for purpose in ("gradients", "parameters", "activations", "activation_gradients",
                        "control", "validation"):
            out[f"bytes_sent_{purpose}"] = self.measured_bytes(purpose)
        if self.physical_loopback_bytes is not None:
            out["physical_loopback_bytes"] = self.physical_loopback_bytes
        out |= self.spark
        for w in self.workers:
            rank = int(w["rank"])
            for key in ("cpu_s", "cpu_util", "peak_rss_mb", "param_bytes", "comm_s",
                        "compute_s", "bytes_sent", "bytes_received"):
                out[f"worker{rank}_{key}"] = float(w[key])
        return out
