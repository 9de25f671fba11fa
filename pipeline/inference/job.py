"""What an inference deployment is asked to time, and the samples it times.

The job is made of plain picklable values: it crosses into Spark tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.inference.timing import tiled
from pipeline.training.job import ParallelSettings


@dataclass(frozen=True)
class InferJob:
    """One deployment's timing.

    ``samples`` samples of ``split`` in batches of ``batch_size``, ``warmup`` untimed passes,
    then ``repeats`` timed ones.

    ``model_dir`` and ``data_dir`` must be readable at the same path on every executor: the
    workers read the model and their samples there, as the training workers read their data.
    """

    model_dir: str
    data_dir: str
    parallel: ParallelSettings
    split: str = "test"
    samples: int = 8192
    batch_size: int = 256
    repeats: int = 5
    warmup: int = 1
    threshold: float = 0.5
    timeout_s: int = 600

    def resolved(self) -> InferJob:
        """This job with absolute paths (the executors do not share the driver's directory)."""
        return replace(self, model_dir=os.path.abspath(self.model_dir),
                       data_dir=os.path.abspath(self.data_dir))

    def __post_init__(self) -> None:
        if min(self.samples, self.batch_size, self.repeats) < 1 or self.warmup < 0:
            raise ValueError("samples, batch_size and repeats must be >= 1 and warmup >= 0, "
                             f"got {self.samples}, {self.batch_size}, {self.repeats}, "
                             f"{self.warmup}")


def timed_inputs(data_dir: str, split: str, samples: int) -> dict[str, torch.Tensor]:
    """What every deployment times: the first ``samples`` samples of ``split``.

    They come from the prepared dataset at ``data_dir``, repeated in order when the split is
    smaller.
    """
    return tiled(PreparedDataset.open(data_dir).split(split).inputs, samples)
