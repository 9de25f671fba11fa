"""The train/val/test split: whole groups (spatial blocks, BigEarthNet patches) go to one split.

The split is by spatial block, never by patch: neighbouring, overlapping patches in train and
test would inflate accuracy. Groups are assigned at random (seeded), in the fractions of
``prepare.split``; this module is the one place that rule lives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import PrepareParams
from pipeline.errors import DatasetError

SPLITS = ("train", "val", "test")


def block_ids(rows: np.ndarray, cols: np.ndarray, block_size: int) -> np.ndarray:
    """The spatial block of the split that each centre falls in, as one integer id."""
    return (rows.astype(np.int64) // block_size) * 1_000_003 + cols.astype(np.int64) // block_size


def block_split(rows: np.ndarray, cols: np.ndarray, params: PrepareParams) -> np.ndarray:
    """Assign each patch centre to a split (0 train, 1 val, 2 test) by its spatial block.

    The same as ``split_groups`` of the centres' ``block_ids``, without sorting the centres: the
    blocks are numbered row-major over the scene's block grid, in the order of their ids.
    """
    block_rows, block_cols = rows // params.block_size, cols // params.block_size
    dense = block_rows.astype(np.int64) * (int(block_cols.max(initial=0)) + 1) + block_cols
    present = np.bincount(dense) > 0
    rank = np.cumsum(present) - 1
    return group_splits(int(present.sum()), params)[rank[dense]]


def split_groups(group_ids: np.ndarray, params: PrepareParams) -> np.ndarray:
    """Assign groups (spatial blocks, patch names) to splits at random, seeded; per sample."""
    unique, inverse = np.unique(group_ids, return_inverse=True)
    return group_splits(len(unique), params)[inverse]


def group_splits(groups: int, params: PrepareParams) -> np.ndarray:
    """The split of each of ``groups`` groups, in their sorted order: seeded, at random."""
    order = np.random.default_rng(params.seed).permutation(groups)
    fractions = np.cumsum([params.split.train, params.split.val, params.split.test])
    cut = np.round(fractions * groups).astype(int)
    split_of_rank = np.searchsorted(cut, np.arange(groups), side="right")
    split_of_group = np.empty(groups, dtype=np.int8)
    split_of_group[order] = split_of_rank
    return split_of_group


def split_arrays(arrays: dict[str, np.ndarray], split: np.ndarray, where: Path,
                 fix: str) -> dict[str, dict[str, np.ndarray]]:
    """Per-sample arrays cut into the three splits; an empty split is an error."""
    out = {}
    for index, name in enumerate(SPLITS):
        mask = split == index
        if not mask.any():
            raise DatasetError(where, f"the {name} split has no patches", fix)
        out[name] = {k: v[mask] for k, v in arrays.items()}
    return out


def split_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """Samples per class: class indices ``(N,)`` or multi-hot ``(N, K)`` (positives per class)."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(int).tolist()
    return np.bincount(labels, minlength=num_classes).tolist()
