"""Window geometry: the windows that tile a scene, the lattice of patch centres, patches cut.

A scene is cut into square core windows (``plan_windows``), one Spark task each. Patch centres
are the ``centre_lattice``: every ``stride``-th pixel at least half a patch from the edge; each
window owns the lattice points inside its core (``lattice_window``).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def plan_windows(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """Core windows ``(row_off, col_off, height, width)`` tiling the scene, row-major."""
    return [(r, c, min(size, height - r), min(size, width - c))
            for r in range(0, height, size) for c in range(0, width, size)]


def centre_lattice(height: int, width: int, patch_size: int, stride: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the scene's candidate patch centres.

    Every ``stride``-th pixel, at least half a patch from the edge; each window owns the lattice
    points inside its core.
    """
    half = patch_size // 2
    return np.arange(half, height - half, stride), np.arange(half, width - half, stride)


def lattice_window(lattice: tuple[np.ndarray, np.ndarray], core: tuple[int, int, int, int]
                   ) -> tuple[slice, slice]:
    """The part of ``centre_lattice`` (row and column index ranges) inside the core window."""
    r0, c0, h, w = core
    rows, cols = lattice
    return (slice(*np.searchsorted(rows, [r0, r0 + h])),
            slice(*np.searchsorted(cols, [c0, c0 + w])))


def patch_centres(labels: np.ndarray, ignore: list[int], patch_size: int,
                  stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of labelled pixels on a ``stride`` grid whose patch fits in the scene."""
    rows, cols = np.meshgrid(*centre_lattice(labels.shape[0], labels.shape[1], patch_size, stride),
                             indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    keep = ~np.isin(labels[rows, cols], ignore)
    return rows[keep], cols[keep]


def extract_patches(image: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    patch_size: int) -> np.ndarray:
    """Patches ``(N, bands, p, p)`` of ``(bands, H, W)`` (or ``(N, p, p)`` of ``(H, W)``)."""
    half = patch_size // 2
    windows = sliding_window_view(image, (patch_size, patch_size), axis=(-2, -1))
    if image.ndim == 2:
        return np.ascontiguousarray(windows[rows - half, cols - half])
    return np.ascontiguousarray(windows[:, rows - half, cols - half].transpose(1, 0, 2, 3))


def window_sums(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                patch_size: int) -> np.ndarray:
    """Per centre, how many pixels of the ``patch_size`` square around it are set in ``mask``.

    A summed-area table: O(H W) once, then four lookups per centre (no patch is materialised).
    """
    half = patch_size // 2
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=table[1:, 1:])
    top, left = rows - half, cols - half
    bottom, right = top + patch_size, left + patch_size
    counts: np.ndarray = (table[bottom, right] - table[top, right] - table[bottom, left]
                          + table[top, left])
    return counts
