"""Nodata rules: valid pixels, patches with too much nodata, and how a patch's holes are filled.

A pixel is invalid when it equals its raster's nodata value (NaN included) in any band of any
modality; a NaN or infinite value that is not the nodata value is an error, not nodata. A patch
with more than ``prepare.max_nodata_fraction`` invalid pixels in a modality is dropped (and
counted); an invalid pixel of a kept patch takes the mean of its patch's valid pixels, per band.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from pipeline.data.windows import extract_patches, window_sums


def valid_pixels(data: np.ndarray, nodata: float | None, path: Path, band_names: list[str],
                 window: Window) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The valid-pixel mask of ``data`` read in ``window`` (nodata and NaN-as-nodata are invalid).

    Returns an error record as well, instead of raising, when a value is NaN or infinite (not
    nodata): an exception would lose its type crossing back from a Spark task.
    """
    if nodata is None:
        valid = np.ones(data.shape, dtype=bool)
    else:
        valid = ~np.isnan(data) if np.isnan(nodata) else data != nodata
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        bad &= valid
        if bad.any():
            band = int(np.argmax(bad.any(axis=(1, 2))))
            return valid, {
                "path": str(path),
                "problem": f"band {band_names[band]} has {int(bad[band].sum())} NaN/inf values "
                           f"in window rows {window.row_off}..{window.row_off + window.height}, "
                           f"cols {window.col_off}..{window.col_off + window.width}",
                "fix": "set the raster's nodata value to NaN (or mask those pixels) at the "
                       "source, or fix the processing that produced them"}
    return valid, None


def too_much_nodata(invalid_by: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray,
                    keep: np.ndarray, patch_size: int, max_fraction: float
                    ) -> tuple[np.ndarray, dict[str, int]]:
    """Which candidate centres (``keep`` of ``rows``/``cols``) to drop, and how many per modality.

    A patch is dropped when more than ``max_fraction`` of its pixels are invalid in one of the
    ``invalid_by`` masks (one per modality, in the coordinates of ``rows``/``cols``).
    """
    area = patch_size ** 2
    drop = np.zeros(keep.shape, dtype=bool)
    dropped_by = {}
    for name, invalid in invalid_by.items():
        too_much = np.zeros(keep.shape, dtype=bool)
        if invalid.any():
            fraction = window_sums(invalid, rows[keep], cols[keep], patch_size) / area
            too_much[keep] = fraction > max_fraction
        dropped_by[name] = int(too_much.sum())
        drop |= too_much
    return drop, dropped_by


def cut_patches(image: np.ndarray, invalid: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                patch_size: int) -> np.ndarray:
    """Patches ``(N, bands, p, p)`` float32 of a feature raster, nodata pixels filled.

    A nodata pixel (``invalid``) takes the mean of its patch's valid pixels, per band.
    """
    patches = extract_patches(image, rows, cols, patch_size)
    if not invalid.any():
        return patches
    dirty = np.flatnonzero(window_sums(invalid, rows, cols, patch_size) > 0)
    if len(dirty):
        mask = extract_patches(invalid, rows[dirty], cols[dirty], patch_size)
        patches[dirty] = fill_invalid(patches[dirty], mask)
    return patches.astype(np.float32, copy=False)


def fill_invalid(patches: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Replace nodata pixels by the mean of the patch's valid pixels, per band."""
    valid = ~invalid[:, None]
    count = np.maximum(valid.sum(axis=(2, 3)), 1)
    mean = np.where(valid, patches, 0).sum(axis=(2, 3)) / count
    return np.where(valid, patches, mean[:, :, None, None]).astype(np.float32)
