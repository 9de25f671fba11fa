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
    bucket_cap_mb: float = 25.0  # data_parallel: DDP's gradient bucket size (all-reduce each)
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
    timeline_interval_s: float = 1.0  # seconds between resource samples per worker; 0: none


LINKS = ("process_group", "spark")  # the links whose wire bytes a worker measures


@dataclass
class TrainResult:
    """The trained weights (one ordinary state dict) and what happened on the way.

    ``workers`` holds every worker's own figures (CPU, memory, parameter bytes, payload by
    purpose, wire bytes per link where measured, communication time), gathered by rank 0.
    ``modelled_payload_per_step`` is the scheme's payload per step computed from the model's
    shapes (parameter bytes for an all-reduce, activation sizes for the model-parallel
    schemes), summed over workers, by purpose.
    """

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    world_size: int = 1
    wall_time_s: float = 0.0
    workers: list[dict[str, float]] = field(default_factory=list)
    modelled_payload_per_step: dict[str, float] = field(default_factory=dict)
    spark: dict[str, float] = field(default_factory=dict)  # Spark's own task metrics
    resumed_from_step: int = 0  # the checkpoint's step this run started from (0: from scratch)
    steps_run: int = 0  # optimiser steps this run executed (``steps`` less the resumed ones)
    timelines: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # rank -> samples

    def payload_bytes(self, purpose: str) -> float:
        """Payload bytes sent for ``purpose``, summed over workers, over the whole training."""
        return sum(w.get(f"payload_bytes_sent_{purpose}", 0.0) for w in self.workers)

    def _total(self, key: str) -> float:
        return sum(float(w.get(key, 0.0)) for w in self.workers)

    def metrics(self) -> dict[str, float]:
        """Figures for MLflow; the same names for every scheme.

        ``payload_*`` is counted at the process-group call (an all-reduce as a ring moves it);
        ``wire_*`` is read from the workers' interface counters and only present where the
        workers have links of their own (the emulated cluster, a real one).
        """
        steps = max(self.steps, 1)
        step_purposes = ("gradients", "parameters", "activations", "activation_gradients")
        counted = sum(self.payload_bytes(p) for p in step_purposes)
        modelled = sum(self.modelled_payload_per_step.get(p, 0.0) for p in step_purposes) * steps
        out = {
            "training_time_s": self.wall_time_s,
            "steps": float(self.steps),
            "resumed_from_step": float(self.resumed_from_step),
            "steps_run": float(self.steps_run),
            "samples_per_s": self.samples / self.wall_time_s if self.wall_time_s else 0.0,
            "world_size": float(self.world_size),
            "payload_bytes_sent_total": self._total("payload_bytes_sent"),
            "payload_bytes_received_total": self._total("payload_bytes_received"),
            "payload_bytes_sent_per_step": counted / steps,
            "payload_bytes_sent_per_sample": counted / max(self.samples, 1),
            "modelled_payload_bytes_per_step": modelled / steps,
            "payload_ratio_counted_to_modelled": counted / modelled if modelled else 0.0,
            "max_worker_param_bytes": max((w["param_bytes"] for w in self.workers), default=0),
            "max_worker_peak_rss_mb": max((w["peak_rss_mb"] for w in self.workers), default=0),
            "cpu_s_total": sum(w["cpu_s"] for w in self.workers),
        }
        for purpose in ("gradients", "parameters", "activations", "activation_gradients",
                        "control", "validation"):
            out[f"payload_bytes_sent_{purpose}"] = self.payload_bytes(purpose)
        measured = [w for w in self.workers if "wire_bytes_sent_process_group" in w]
        if measured:
            for link in LINKS:
                for direction in ("sent", "received"):
                    key = f"wire_bytes_{direction}_{link}"
                    out[f"{key}_total"] = self._total(key)
            out["tcp_retransmitted_segments_total"] = self._total("tcp_retransmitted_segments")
            out["wire_bytes_sent_process_group_per_step"] = (
                out["wire_bytes_sent_process_group_total"] / steps)
            payload = out["payload_bytes_sent_total"]
            out["wire_to_payload_ratio"] = (
                out["wire_bytes_sent_process_group_total"] / payload if payload else 0.0)
        medians = [w["step_s_p50"] for w in self.workers if "step_s_p50" in w]
        if medians:  # the busiest worker's median step (the warm-up left out), measured
            out["step_s_p50"] = max(medians)
        rates = [w["link_rate_bps"] for w in self.workers if "link_rate_bps" in w]
        if rates:
            out["link_rate_mbit_s"] = min(rates) / 1e6
        out |= self.spark
        for w in self.workers:
            rank = int(w["rank"])
            for key in ("cpu_s", "cpu_util", "peak_rss_mb", "param_bytes", "comm_s",
                        "compute_s", "payload_bytes_sent", "payload_bytes_received",
                        "tcp_retransmitted_segments",
                        *(f"wire_bytes_{d}_{link}" for link in LINKS
                          for d in ("sent", "received"))):
                if key in w:
                    out[f"worker{rank}_{key}"] = float(w[key])
        return out
