"""What a training worker is asked to do, and what training gives back."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.model import ModelConfig


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
    threads_per_worker: int = 1
    timeout_s: int = 1800
    max_steps: int | None = None  # stop early after this many optimiser steps (tests)


@dataclass
class TrainResult:
    """The trained weights (one ordinary state dict) and what happened on the way."""

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    world_size: int = 1
    wall_time_s: float = 0.0
