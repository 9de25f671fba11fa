"""Patches around labelled pixels, a spatially blocked split, and training-split statistics.

The split is by spatial block, never by patch: neighbouring, overlapping patches in train and
test would inflate accuracy. Normalisation statistics come from the training split only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.config import PrepareParams
from pipeline.data.scene import SceneDescription
from pipeline.errors import DatasetError
from pipeline.io import atomic_path

SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation of one modality (training split)."""

    mean: list[float]
    std: list[float]


def read_raster(path: Path) -> tuple[np.ndarray, dict]:
    """Read all bands of a GeoTIFF as ``(bands, H, W)`` plus its grid.

    Raises:
        DatasetError: the file is missing, unreadable or has no CRS.
    """
    if not path.is_file():
        raise DatasetError(path, "raster not found", "re-run the ingest stage")
    try:
        with rasterio.open(path) as src:
            data = src.read()
            grid = {"crs": src.crs.to_string() if src.crs else None,
                    "transform": list(src.transform)[:6], "height": src.height,
                    "width": src.width}
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(path, f"unreadable raster ({exc})",
                           "check the file is a valid GeoTIFF; re-export or re-ingest it") from exc
    if grid["crs"] is None:
        raise DatasetError(path, "raster has no CRS", "assign a CRS (e.g. with gdal_edit.py -a_srs)")
    return data, grid


def to_features(data: np.ndarray, kind: str) -> np.ndarray:
    """Physical values the network sees: reflectance for optical, decibels for SAR."""
    if kind == "sar":
        return (10.0 * np.log10(np.clip(data.astype(np.float64), 1e-6, None))).astype(np.float32)
    return (data.astype(np.float32) / 10000.0).astype(np.float32)


def patch_centres(labels: np.ndarray, ignore: list[int], patch_size: int,
                  stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of labelled pixels on a ``stride`` grid whose patch fits in the scene."""
    half = patch_size // 2
    height, width = labels.shape
    rows, cols = np.meshgrid(np.arange(half, height - half, stride),
                             np.arange(half, width - half, stride), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    keep = ~np.isin(labels[rows, cols], ignore)
    return rows[keep], cols[keep]


def block_split(rows: np.ndarray, cols: np.ndarray, params: PrepareParams) -> np.ndarray:
    """Assign each patch centre to a split (0 train, 1 val, 2 test) by its spatial block."""
    block_ids = (rows // params.block_size) * 1_000_003 + (cols // params.block_size)
    unique = np.unique(block_ids)
    order = np.random.default_rng(params.seed).permutation(len(unique))
    fractions = np.cumsum([params.split.train, params.split.val, params.split.test])
    cut = np.round(fractions * len(unique)).astype(int)
    block_split_of = np.searchsorted(cut, np.arange(len(unique)), side="right")
    split_of_block = dict(zip(unique[order], block_split_of, strict=True))
    return np.array([split_of_block[b] for b in block_ids], dtype=np.int8)


def extract_patches(image: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    patch_size: int) -> np.ndarray:
    """Patches ``(N, bands, patch_size, patch_size)`` centred on ``rows, cols``."""
    half = patch_size // 2
    windows = sliding_window_view(image, (patch_size, patch_size), axis=(1, 2))
    return np.ascontiguousarray(windows[:, rows - half, cols - half].transpose(1, 0, 2, 3))


def band_stats(patches: np.ndarray) -> BandStats:
    """Mean and std per band over all pixels of ``patches`` ``(N, bands, h, w)``."""
    mean = patches.mean(axis=(0, 2, 3), dtype=np.float64)
    std = patches.std(axis=(0, 2, 3), dtype=np.float64)
    return BandStats(mean=mean.tolist(), std=np.maximum(std, 1e-6).tolist())


def prepare_dataset(scene_dir: Path, out_dir: Path, params: PrepareParams) -> dict:
    """Cut, split and describe the patches of the scene in ``scene_dir``; write ``out_dir``.

    ``out_dir`` receives ``train.npz``, ``val.npz``, ``test.npz`` (raw features per modality,
    ``label`` as class index, ``row``/``col`` of the centre) and ``manifest.json`` (source files,
    grid, bands, classes, split sizes and class counts, normalisation statistics).

    Returns:
        The manifest.

    Raises:
        DatasetError: inputs missing or inconsistent, or a split ends up empty.
    """
    scene = SceneDescription.load(scene_dir)
    labels, grid = read_raster(scene_dir / scene.labels)
    labels = labels[0]
    features = {}
    for name, modality in scene.modalities.items():
        data, mod_grid = read_raster(scene_dir / modality.path)
        if (mod_grid["height"], mod_grid["width"]) != labels.shape:
            raise DatasetError(scene_dir / modality.path,
                               f"grid {mod_grid['height']}x{mod_grid['width']} differs from the "
                               f"label raster's {labels.shape[0]}x{labels.shape[1]}",
                               "resample all modalities to the label grid")
        if data.shape[0] != len(modality.bands):
            raise DatasetError(scene_dir / modality.path,
                               f"{data.shape[0]} bands, scene.json lists {len(modality.bands)}",
                               "make scene.json's band list match the raster")
        features[name] = to_features(data, modality.kind)

    codes = sorted(scene.classes)
    unknown = set(np.unique(labels).tolist()) - set(codes) - set(scene.ignore_codes)
    if unknown:
        raise DatasetError(scene_dir / scene.labels, f"label codes {sorted(unknown)} are not in "
                           "the class map", "add them to the class map or to the ignored codes")
    code_to_index = np.full(256, -1, dtype=np.int64)
    code_to_index[codes] = np.arange(len(codes))

    rows, cols = patch_centres(labels, scene.ignore_codes, params.patch_size, params.stride)
    split = block_split(rows, cols, params)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for index, split_name in enumerate(SPLITS):
        mask = split == index
        if not mask.any():
            raise DatasetError(scene_dir, f"the {split_name} split has no patches",
                               "use a larger scene, a smaller prepare.block_size or "
                               "a smaller prepare.stride")
        arrays[split_name] = {
            name: extract_patches(image, rows[mask], cols[mask], params.patch_size)
            for name, image in features.items()
        }
        arrays[split_name] |= {"label": code_to_index[labels[rows[mask], cols[mask]]],
                               "row": rows[mask], "col": cols[mask]}

    stats = {name: band_stats(arrays["train"][name]).__dict__ for name in features}
    class_names = [scene.classes[c] for c in codes]
    manifest = {
        "source": scene.source,
        "scene_files": {name: m.path for name, m in scene.modalities.items()}
        | {"labels": scene.labels},
        "grid": grid,
        "modalities": {name: {"kind": m.kind, "bands": m.bands}
                       for name, m in scene.modalities.items()},
        "classes": class_names,
        "class_codes": codes,
        "patch_size": params.patch_size,
        "split_sizes": {s: int(len(arrays[s]["label"])) for s in SPLITS},
        "class_counts": {s: np.bincount(arrays[s]["label"], minlength=len(codes)).tolist()
                         for s in SPLITS},
        "normalisation": stats,
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split_name, data in arrays.items():
            np.savez(tmp / f"{split_name}.npz", **data)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
