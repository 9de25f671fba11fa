"""One window of the scene, as one Spark task: its features, patch centres and small summaries.

The task reads its window with a halo of ``patch_size // 2`` pixels (so the patches centred near
its edge are whole), writes the window's features into the scene arrays (stored once) and
returns only small things to the driver: the centres of the patches it kept, the pixel sums of
each spatial block it covers (for the training statistics) and a digest of what it wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.config import PrepareParams
from pipeline.data.nodata import too_much_nodata, valid_pixels
from pipeline.data.prepared_store import write_window
from pipeline.data.rasters import read_window, to_features
from pipeline.data.scene import SceneDescription
from pipeline.data.statistics import block_pixel_sums
from pipeline.data.windows import centre_lattice, extract_patches, lattice_window


def extract_window(scene_dir: str, scene: SceneDescription, params: PrepareParams, out_dir: str,
                   core: tuple[int, int, int, int]) -> dict[str, Any]:
    """Features and patch centres of the core window ``core``: one Spark task.

    Reads the window with a halo of ``patch_size // 2`` pixels, so that a patch centred near the
    edge is seen whole (its nodata fraction, majority label and pixels). Writes the core window's
    features into the scene arrays in ``out_dir`` (``create_scene_arrays``: per modality
    ``(bands, H, W)`` float32, and ``invalid``, a pixel that is nodata in any band of any
    modality) and returns only what the driver merges: ``kept``, which of the window's
    ``centre_lattice`` points are patch centres (bits, row-major), and ``code``, the class code of
    each (the label raster's type); ``block``, ``pixels`` and ``sums``, the valid pixels'
    count and sums of each spatial block in the core window (``block_pixel_sums``); ``digest``,
    a sha256 per array of the window written; counts of dropped patches; ``seen``, the label
    codes of the core window's pixels; label codes seen that are in neither the class map nor
    the ignored codes; and ``error`` (``None``, or the file,
    problem and fix of bad values).
    """
    root = Path(scene_dir)
    half = params.patch_size // 2
    r0, c0, h, w = core
    with rasterio.open(root / scene.labels) as src:
        height, width, label_nodata = src.height, src.width, src.nodata
        top, left = max(0, r0 - half), max(0, c0 - half)
        bottom, right = min(height, r0 + h + half), min(width, c0 + w + half)
        window = Window(left, top, right - left, bottom - top)
        stored = src.read(1, window=window)
    inner = (slice(r0 - top, r0 - top + h), slice(c0 - left, c0 - left + w))
    ignore = list(scene.ignore_codes) + ([int(label_nodata)] if label_nodata is not None else [])
    seen = np.unique(stored[inner]).astype(np.int64)
    unknown = sorted(set(seen.tolist()) - set(scene.classes) - set(ignore))

    lattice = centre_lattice(height, width, params.patch_size, params.stride)
    row_range, col_range = lattice_window(lattice, core)
    rows, cols = np.meshgrid(lattice[0][row_range] - top, lattice[1][col_range] - left,
                             indexing="ij")
    keep = ~np.isin(stored[rows, cols], ignore)

    result: dict[str, Any] = {"unknown": unknown, "seen": seen.tolist(), "error": None,
                              "dropped_nodata": 0, "dropped_nodata_by": {}}
    invalid_any = np.zeros((bottom - top, right - left), dtype=bool)
    features: dict[str, np.ndarray] = {}
    invalid_by: dict[str, np.ndarray] = {}
    for name, modality in scene.modalities.items():
        path = root / modality.path
        data, nodata = read_window(path, window)
        valid, error = valid_pixels(data, nodata, path, modality.bands, window)
        if error is not None:
            if modality.source:
                error["problem"] += f" (aligned from {modality.source})"
            return result | {"error": error}
        invalid_by[name] = ~cast(np.ndarray, valid.all(axis=0))  # an array: valid is 3-D
        invalid_any |= invalid_by[name]
        pixels = data[:, inner[0], inner[1]]  # the halo's only use is the nodata mask
        if not valid.all():
            pixels = np.where(valid[:, inner[0], inner[1]], pixels, 1)
        features[name] = to_features(pixels, modality.kind)

    drop, result["dropped_nodata_by"] = too_much_nodata(
        invalid_by, rows, cols, keep, params.patch_size, params.max_nodata_fraction)
    result["dropped_nodata"] = int(drop.sum())
    keep &= ~drop
    rows, cols = rows[keep], cols[keep]

    if params.label == "majority":
        code = majority_label(extract_patches(stored, rows, cols, params.patch_size),
                              stored[rows, cols], ignore)
    else:
        code = stored[rows, cols]
    result["code"], result["kept"] = code, np.packbits(keep)
    core_invalid = np.ascontiguousarray(invalid_any[inner])
    result["block"], result["pixels"], result["sums"] = block_pixel_sums(
        features, core_invalid, (r0, c0), params.block_size)
    result["digest"] = write_window(Path(out_dir), features | {"invalid": core_invalid},
                                    (r0, c0))
    return result


def majority_label(patches: np.ndarray, centre: np.ndarray, ignore: list[int]) -> np.ndarray:
    """The most frequent non-ignored code of each label patch (ties: the smallest code)."""
    flat = patches.reshape(len(patches), -1)
    codes, inverse = np.unique(flat, return_inverse=True)
    counts = np.zeros((len(flat), len(codes)), dtype=np.int32)
    np.add.at(counts, (np.repeat(np.arange(len(flat)), flat.shape[1]), inverse.ravel()), 1)
    counts[:, np.isin(codes, ignore)] = 0
    winner = codes[np.argmax(counts, axis=1)] if len(codes) else centre
    return np.where(counts.max(axis=1, initial=0) > 0, winner, centre)
