"""Checkpoints that let an interrupted training resume exactly where it stopped.

Every ``every`` optimiser steps each worker writes its own state (its parameters, optimiser
state, RNG state) to ``rank<r>-step<s>.pt``; once all have, rank 0 writes ``position.json``
(epoch, batch, counters, history, and a key of the job), which is the commit point. Files are
written to a temporary name and renamed, so a crash never leaves a half-written checkpoint that
``position.json`` points to. A job with other settings or other prepared data ignores a checkpoint
that is not its own.

Not saved: the error feedback of ``gradient_compression: powersgd`` (DDP's PowerSGD hook state).
A resumed PowerSGD run restarts it, so it does not end with an uninterrupted run's parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pipeline.data.prepared_store import MANIFEST_FILE
from pipeline.training.job import TrainJob

POSITION_FILE = "position.json"


@dataclass
class Position:
    """Where training stands: the next batch to run and what was accumulated so far."""

    epoch: int = 0  # 0-based epoch of the next batch
    batch: int = 0  # index of the next batch within that epoch
    steps: int = 0
    samples: int = 0
    totals: list[float] = field(default_factory=lambda: [0.0, 0.0])  # this epoch's loss sums
    history: list[dict[str, float]] = field(default_factory=list)


def job_key(job: TrainJob) -> str:
    """What must match for a checkpoint to be resumed (not: faults, limits, timeouts).

    The settings and the prepared data's content fingerprint (its manifest's): a dataset
    prepared again at the same path (another split, other patches) does not resume weights
    trained on the old one.
    """
    stable = replace(job, fault=None, max_steps=None, timeout_s=0, threads_per_worker=0,
                     checkpoint_dir=None, checkpoint_every=0)
    manifest = Path(job.data_dir) / MANIFEST_FILE
    data = json.loads(manifest.read_text()).get("fingerprint") if manifest.is_file() else None
    return hashlib.sha256(f"{stable!r} data={data}".encode()).hexdigest()[:16]


class Checkpointer:
    """Saves and restores one worker's share of a checkpoint (no-op without a directory)."""

    def __init__(self, job: TrainJob, rank: int, world_size: int) -> None:
        self.directory = Path(job.checkpoint_dir) if job.checkpoint_dir else None
        self.every = job.checkpoint_every
        self.rank, self.world_size = rank, world_size
        self.key = job_key(job)
        self.compression = job.parallel.gradient_compression if world_size > 1 else "none"

    @property
    def enabled(self) -> bool:
        """Whether checkpoints are written."""
        return self.directory is not None and self.every > 0

    def _file(self, step: int, rank: int | None = None) -> Path:
        assert self.directory is not None
        return self.directory / f"rank{self.rank if rank is None else rank}-step{step}.pt"

    def restore(self, strategy: Any) -> Position | None:
        """Load the last complete checkpoint of this job into ``strategy``, if there is one."""
        if self.directory is None or not (self.directory / POSITION_FILE).is_file():
            return None
        marker = json.loads((self.directory / POSITION_FILE).read_text())
        if marker.get("key") != self.key or marker.get("world_size") != self.world_size:
            if self.rank == 0:
                print(f"[checkpoint] ignoring {self.directory}: written by another "
                      "configuration", flush=True)
            return None
        state = torch.load(self._file(marker["position"]["steps"]), weights_only=True)
        strategy.load_checkpoint_state(state["strategy"])
        torch.set_rng_state(state["rng"])
        position = Position(**marker["position"])
        if self.rank == 0:
            print(f"[checkpoint] resuming from step {position.steps} (epoch {position.epoch + 1},"
                  f" batch {position.batch}) in {self.directory}", flush=True)
            if self.compression == "powersgd":
                print("[checkpoint] PowerSGD's error feedback is not checkpointed: it restarts, "
                      "so this run will not end with an uninterrupted run's parameters",
                      flush=True)
        return position

    def maybe_save(self, strategy: Any, position: Position) -> None:
        """Write a checkpoint if ``position.steps`` is a multiple of the interval."""
        if self.enabled and position.steps % self.every == 0:
            self.save(strategy, position)

    def save(self, strategy: Any, position: Position) -> None:
        """Every worker writes its file; then rank 0 commits ``position.json``."""
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._file(position.steps)
        tmp = target.with_suffix(".tmp")
        torch.save({"strategy": strategy.checkpoint_state(), "rng": torch.get_rng_state()}, tmp)
        os.replace(tmp, target)
        self._barrier()
        if self.rank == 0:
            marker = {"key": self.key, "world_size": self.world_size,
                      "position": asdict(position)}
            tmp_marker = self.directory / (POSITION_FILE + ".tmp")
            tmp_marker.write_text(json.dumps(marker))
            os.replace(tmp_marker, self.directory / POSITION_FILE)
        self._barrier()
        for old in self.directory.glob(f"rank{self.rank}-step*.pt"):
            if old != target:
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the checkpoints after a successful training (rank 0)."""
        if self.directory is not None and self.rank == 0:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()
