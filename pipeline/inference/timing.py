"""The figures of a timed inference deployment, under the same names for every scheme.

A deployment runs ``warmup`` untimed passes, then ``repeats`` timed passes over the same samples.
Each pass gives its wall time; each batch its latency, defined the same way for every deployment:
the batch's time from submission (the first computation on it starts) to its decisions. In one
process or a data-parallel worker, that is the batch's own forward pass and decision; across
model-parallel workers, it spans the workers the batch passes through (``submission_to_decision``).
Throughput and wall time are reported as the median over the passes, with the min and max as the
spread; latency percentiles pool the batches of every pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Timing:
    """What one deployment measured.

    ``bytes_moved`` counts, per pass, the bytes that crossed a process boundary (inputs shipped to
    Python workers and results back, or activations between model-parallel workers);
    ``model_bytes_shipped`` the bytes of model weights sent to workers once, at set-up;
    ``setup_s`` the time before the first (warm-up) pass, which the figures exclude.
    """

    deployment: str
    workers: int
    samples: int
    pass_seconds: list[float]
    batch_seconds: list[float]
    bytes_moved: float = 0.0
    model_bytes_shipped: float = 0.0
    setup_s: float = 0.0
    decisions: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.pass_seconds:
            raise ValueError("a timing needs at least one timed pass")

    def metrics(self, prefix: str = "inference_") -> dict[str, float]:
        """Flat figures, e.g. ``inference_samples_per_s``."""
        walls = np.asarray(self.pass_seconds, dtype=np.float64)
        rates = self.samples / walls
        batches = np.asarray(self.batch_seconds or [np.nan], dtype=np.float64) * 1000.0
        out = {
            "wall_s": float(np.median(walls)),
            "wall_s_min": float(walls.min()),
            "wall_s_max": float(walls.max()),
            "samples_per_s": float(np.median(rates)),
            "samples_per_s_min": float(rates.min()),
            "samples_per_s_max": float(rates.max()),
            "batch_p50_ms": float(np.percentile(batches, 50)),
            "batch_p95_ms": float(np.percentile(batches, 95)),
            "bytes_moved": float(self.bytes_moved),
            "model_bytes_shipped": float(self.model_bytes_shipped),
            "setup_s": float(self.setup_s),
            "samples": float(self.samples),
            "repeats": float(len(walls)),
            "workers": float(self.workers),
        }
        return {f"{prefix}{k}": v for k, v in out.items()}


def submission_to_decision(workers: list[dict[str, Any]]) -> list[float]:
    """Each batch's latency from the workers' stamps, in seconds, ordered by (pass, batch).

    ``submitted`` maps (pass, batch) to when a worker that reads the inputs began the batch (the
    earliest of them counts), ``decided`` to when the worker producing its logits decided it.
    """
    submitted: dict[tuple[int, int], float] = {}
    for worker in workers:
        for key, stamp in worker.get("submitted", {}).items():
            submitted[key] = min(stamp, submitted.get(key, stamp))
    decided = {key: stamp for worker in workers for key, stamp in worker.get("decided", {}).items()}
    return [decided[key] - submitted[key] for key in sorted(decided) if key in submitted]


def compare(deployment: Timing, baseline: Timing) -> dict[str, float]:
    """The deployment's figures, the baseline's and the throughput ratio of the two.

    The baseline's figures are named ``inference_single_process_*``, the ratio
    ``inference_ratio_to_single_process``.
    """
    ratio = (deployment.metrics()["inference_samples_per_s"]
             / baseline.metrics()["inference_samples_per_s"])
    return (deployment.metrics() | baseline.metrics("inference_single_process_")
            | {"inference_ratio_to_single_process": ratio})


def tiled(inputs: dict[str, torch.Tensor], samples: int) -> dict[str, torch.Tensor]:
    """The first ``samples`` samples of ``inputs`` repeated as often as needed."""
    total = next(iter(inputs.values())).shape[0]
    if total == 0:
        raise ValueError("no samples to time inference on")
    index = torch.arange(samples) % total
    return {name: x[index].contiguous() for name, x in inputs.items()}
