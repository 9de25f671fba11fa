"""Normalisation statistics: the mean and std per band of the training split's valid pixels.

A scene's statistics are merged from per-window, per-block pixel sums (``block_pixel_sums``), so
that no pixel of a validation or test block enters them and the driver never holds the scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.data.split import block_ids


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation of one modality (training split)."""

    mean: list[float]
    std: list[float]


def band_stats(patches: np.ndarray) -> BandStats:
    """Mean and std per band over all pixels of ``patches`` ``(N, bands, h, w)``."""
    mean = patches.mean(axis=(0, 2, 3), dtype=np.float64)
    std = patches.std(axis=(0, 2, 3), dtype=np.float64)
    return BandStats(mean=mean.tolist(), std=np.maximum(std, 1e-6).tolist())


def block_pixel_sums(features: dict[str, np.ndarray], invalid: np.ndarray,
                     corner: tuple[int, int], block_size: int
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per spatial block, the count, sum and sum of squares of its valid pixels, per band.

    ``features`` are ``(bands, h, w)`` rasters and ``invalid`` the ``(h, w)`` nodata mask of a
    window whose top-left pixel is ``corner`` in scene coordinates; the blocks are the split's
    (``block_ids``), and one cut by the window's edge gets the part inside it. Summed over the
    training blocks of every window, they give the normalisation statistics. Each block row is
    summed as one cache-sized strip, in float64.

    Returns:
        The block ids, the number of valid pixels per block, and per modality
        ``(blocks, bands, 2)`` float64 sums (pixel sum, sum of squares).
    """
    height, width = invalid.shape
    row_starts = _block_starts(corner[0], height, block_size)
    col_starts = _block_starts(corner[1], width, block_size)
    rows, cols = np.meshgrid(corner[0] + row_starts, corner[1] + col_starts, indexing="ij")
    valid = ~invalid
    counts = np.add.reduceat(np.add.reduceat(valid, row_starts, axis=0, dtype=np.int64),
                             col_starts, axis=1)
    ends = [*row_starts[1:], height]
    sums = {}
    for name, image in features.items():
        bands = image.shape[0]
        out = np.empty((len(row_starts), len(col_starts), bands, 2))
        for i, (top, bottom) in enumerate(zip(row_starts, ends, strict=True)):
            strip = image[:, top:bottom].astype(np.float64)
            if not valid[top:bottom].all():
                strip *= valid[top:bottom]
            out[i, :, :, 0] = np.add.reduceat(strip, col_starts, axis=2).sum(axis=1).T
            np.square(strip, out=strip)
            out[i, :, :, 1] = np.add.reduceat(strip, col_starts, axis=2).sum(axis=1).T
        sums[name] = out.reshape(-1, bands, 2)
    return block_ids(rows.ravel(), cols.ravel(), block_size), counts.ravel(), sums


def _block_starts(start: int, length: int, block_size: int) -> np.ndarray:
    """Offsets, within a span of ``length`` pixels from ``start``, where a block begins."""
    first = -start % block_size or block_size
    starts: np.ndarray = np.r_[0, np.arange(first, length, block_size)]
    return starts


def training_stats(results: list[dict[str, Any]], train_blocks: np.ndarray,
                   modalities: list[str]) -> dict[str, BandStats]:
    """Mean and std per band over the valid pixels of the training blocks.

    Merges the windows' ``block_pixel_sums`` of the training blocks (a block cut by a window
    edge has a part in each window), in window order: the same figures on Spark or in process.
    No pixel of a validation or test block enters them.
    """
    blocks = np.concatenate([r["block"] for r in results])
    train = np.isin(blocks, train_blocks)
    count = max(int(np.concatenate([r["pixels"] for r in results])[train].sum()), 1)
    stats = {}
    for name in modalities:
        total = np.concatenate([r["sums"][name] for r in results])[train].sum(axis=0)
        mean = total[:, 0] / count
        variance = np.maximum(total[:, 1] / count - np.square(mean), 0.0)
        stats[name] = BandStats(mean=mean.tolist(),
                                std=np.maximum(np.sqrt(variance), 1e-6).tolist())
    return stats
