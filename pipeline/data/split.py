"""The train/val/test split: whole groups (spatial blocks, BigEarthNet patches) go to one split.

The split is by spatial block, never by patch: neighbouring, overlapping patches in train and
test would inflate accuracy. Blocks are assigned stratified by class (``stratified_blocks``: every
class in every split, or an error naming the class), in the fractions of ``prepare.split``, and a
guard band (``guard_band``) drops every patch whose footprint reaches into a block of another split
(or a block without a split), so that no pixel is seen by patches of two splits: not by their
inputs, their nodata filling or their ``majority`` label. This module is the one place those
rules live.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import PrepareParams
from pipeline.errors import DatasetError

SPLITS = ("train", "val", "test")
UNASSIGNED = -1  # a block with no patch centre: no split, so no patch may reach into it


def block_ids(rows: np.ndarray, cols: np.ndarray, block_size: int) -> np.ndarray:
    """The spatial block of the split that each centre falls in, as one integer id."""
    return (rows.astype(np.int64) // block_size) * 1_000_003 + cols.astype(np.int64) // block_size


def block_grid_shape(shape: tuple[int, int], block_size: int) -> tuple[int, int]:
    """Rows and columns of the block grid over a scene of ``shape`` pixels."""
    return -(-shape[0] // block_size), -(-shape[1] // block_size)


def footprint_blocks(rows: np.ndarray, cols: np.ndarray, patch_size: int, block_size: int
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Block row and column of each corner of each patch's footprint.

    ``block_size >= patch_size`` (checked by ``PrepareParams``), so a footprint spans at most two
    blocks per axis and its four corners name every block it touches.
    """
    half = patch_size // 2
    return [((rows + dr) // block_size, (cols + dc) // block_size)
            for dr in (-half, half) for dc in (-half, half)]


def block_split(rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, classes: list[str],
                shape: tuple[int, int], params: PrepareParams, where: Path
                ) -> tuple[np.ndarray, np.ndarray]:
    """The split of each patch centre (0 train, 1 val, 2 test) and which patches to keep.

    Blocks with at least one centre are assigned by ``stratified_blocks``; a patch is kept when
    its whole footprint lies in blocks of its own split (``guard_band``).

    Returns:
        ``(split, keep)``, both per centre.

    Raises:
        DatasetError: a class cannot be put in every split (``stratified_blocks``).
    """
    grid_rows, grid_cols = block_grid_shape(shape, params.block_size)
    dense = (rows.astype(np.int64) // params.block_size) * grid_cols + cols // params.block_size
    present, block = np.unique(dense, return_inverse=True)
    own = footprint_blocks(rows, cols, params.patch_size, params.block_size)
    interior = np.logical_and.reduce([r * grid_cols + c == dense for r, c in own])
    split_of_block = stratified_blocks(block, labels, interior, classes, params, where)
    grid = np.full(grid_rows * grid_cols, UNASSIGNED, dtype=np.int8)
    grid[present] = split_of_block
    split = split_of_block[block]
    return split, guard_band(grid.reshape(grid_rows, grid_cols), rows, cols, split, params)


def guard_band(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray, split: np.ndarray,
               params: PrepareParams) -> np.ndarray:
    """Which patches lie wholly in blocks of their own split (``grid``: the split of each block).

    A patch that reaches into a block of another split, or into a block with no split, is
    dropped: its pixels (inputs, nodata filling, ``majority`` label) would be another split's.
    """
    keep = np.ones(len(split), dtype=bool)
    for block_row, block_col in footprint_blocks(rows, cols, params.patch_size,
                                                 params.block_size):
        keep &= grid[block_row, block_col] == split
    return keep


def stratified_blocks(block: np.ndarray, labels: np.ndarray, interior: np.ndarray,
                      classes: list[str], params: PrepareParams, where: Path) -> np.ndarray:
    """The split of each block (``block``: each centre's block index), stratified by class.

    Each split gets its share of the blocks (``prepare.split``, rounded). The classes are placed
    first, rarest first: each split that lacks a class gets a free block (seeded, at random)
    holding an ``interior`` patch of it (one the guard band never drops), the one holding most of
    the classes that split lacks; the remaining blocks
    are dealt at random. So every class is in every split whenever each class has interior
    patches in at least three blocks and the splits have room.

    Raises:
        DatasetError: naming the class, its patch count and the blocks holding it, when a
            split cannot get it.
    """
    blocks = int(block.max(initial=-1)) + 1
    holds = np.zeros((blocks, len(classes)), dtype=np.int64)
    np.add.at(holds, (block[interior], labels[interior]), 1)
    totals = np.bincount(labels, minlength=len(classes))
    fractions = np.cumsum([params.split.train, params.split.val, params.split.test])
    room = np.diff(np.r_[0, np.round(fractions * blocks).astype(int)])
    room[-1] += blocks - room.sum()
    order = np.random.default_rng(params.seed).permutation(blocks)
    split_of = np.full(blocks, UNASSIGNED, dtype=np.int8)
    having = holds > 0
    present = [k for k in range(len(classes)) if totals[k] > 0]
    for k in sorted(present, key=lambda k: (int(having[:, k].sum()), k)):
        for s in (2, 1, 0):
            if (split_of[having[:, k]] == s).any():
                continue
            free = order[(split_of[order] == UNASSIGNED) & having[order, k]]
            lacking = np.ones(len(classes), dtype=bool)
            lacking[np.unique(labels[interior][split_of[block[interior]] == s])] = False
            if len(free) == 0 or room[s] == 0:
                raise DatasetError(
                    where, f"class {k} ({classes[k]}) cannot be put in the {SPLITS[s]} split: "
                    f"{totals[k]} patches, {int(having[:, k].sum())} of {blocks} blocks hold "
                    f"one whole inside them (every split needs such a block; "
                    f"{SPLITS[s]} has room for {int(room[s])} blocks)",
                    "use a smaller prepare.block_size, a smaller prepare.stride or a larger "
                    "scene, raise that split's fraction in prepare.split, or ignore the class")
            # of the free blocks holding the class, the one holding most classes s lacks
            split_of[free[np.argmax(having[free][:, lacking].sum(axis=1))]] = s
            room[s] -= 1
    rest = order[split_of[order] == UNASSIGNED]
    split_of[rest] = np.repeat(np.arange(3, dtype=np.int8), room)
    return split_of


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
        positives: list[int] = labels.sum(axis=0).astype(int).tolist()
        return positives
    counts: list[int] = np.bincount(labels, minlength=num_classes).tolist()
    return counts
