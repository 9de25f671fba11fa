"""Patches around labelled pixels, found in windows by Spark tasks; a spatially blocked split.

The scene is cut into square windows (``prepare.window_size``); each window is one task that
reads its rasters with rasterio (a windowed read, with a halo of ``patch_size // 2`` pixels so the
patches centred near the window's edge are whole), writes the window's features into the scene
arrays (``scene/<modality>.npy``, stored once) and returns only small things: the centres of the
patches it kept, the pixel sums of each spatial block it covers (for the training statistics)
and a digest of what it wrote. The driver never holds the scene, so a scene larger than its
memory works. A split stores its centres and labels, and its patches are cut when it is loaded
(``read_split``), so no pixel is stored once per patch containing it. The result is the same for
any window size (a test holds the two equal).

The split is by spatial block, never by patch: neighbouring, overlapping patches in train and
test would inflate accuracy. Normalisation statistics come from the training split's blocks only:
the mean and std of their valid pixels.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from pipeline.config import PrepareParams
from pipeline.data.scene import SceneDescription
from pipeline.errors import DatasetError
from pipeline.io import atomic_path
from pipeline.objective import MULTI_LABEL, SINGLE_LABEL  # noqa: F401 (re-exported)

SPLITS = ("train", "val", "test")
MANIFEST_FILE = "manifest.json"
PREVIEW_FILE = "preview.png"
SCENE_DIR = "scene"  # scene/<modality>.npy and scene/invalid.npy: the feature rasters
SCENE_LAYOUT = "scene"  # scene/ holds the feature rasters; a split holds centres and labels
PATCHES_LAYOUT = "patches"  # a split holds its patches (BigEarthNet: a patch is a whole image)


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation of one modality (training split)."""

    mean: list[float]
    std: list[float]


@dataclass(frozen=True)
class Grid:
    """The pixel grid of a raster: CRS, affine transform and size."""

    crs: str
    transform: list[float]
    height: int
    width: int


def read_grid(path: Path) -> tuple[Grid, int, float | None]:
    """The grid, band count and nodata value of the GeoTIFF at ``path`` (no pixels are read).

    Raises:
        DatasetError: the file is missing, unreadable or has no CRS.
    """
    if not path.is_file():
        raise DatasetError(path, "raster not found", "re-run the ingest stage")
    try:
        with rasterio.open(path) as src:
            crs = src.crs.to_string() if src.crs else None
            grid = Grid(crs=crs or "", transform=list(src.transform)[:6], height=src.height,
                        width=src.width)
            count, nodata = src.count, src.nodata
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(path, f"unreadable raster ({exc})",
                           "check the file is a valid GeoTIFF; re-export or re-ingest it") from exc
    if crs is None:
        raise DatasetError(path, "raster has no CRS",
                           "assign a CRS (e.g. with gdal_edit.py -a_srs)")
    return grid, count, nodata


def read_raster(path: Path) -> tuple[np.ndarray, dict]:
    """Read all bands of a GeoTIFF as ``(bands, H, W)`` plus its grid (small rasters only).

    Raises:
        DatasetError: the file is missing, unreadable or has no CRS.
    """
    grid, _, _ = read_grid(path)
    with rasterio.open(path) as src:
        return src.read(), grid.__dict__


def to_features(data: np.ndarray, kind: str) -> np.ndarray:
    """Physical values the network sees: reflectance for optical, decibels for SAR."""
    if kind == "sar":
        power = np.maximum(data, np.float32(1e-6), dtype=np.float32)
        return np.multiply(np.log10(power, out=power), np.float32(10.0), out=power)
    return np.divide(data, np.float32(10000.0), dtype=np.float32)


def patch_centres(labels: np.ndarray, ignore: list[int], patch_size: int,
                  stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of labelled pixels on a ``stride`` grid whose patch fits in the scene."""
    rows, cols = np.meshgrid(*centre_lattice(*labels.shape, patch_size, stride), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    keep = ~np.isin(labels[rows, cols], ignore)
    return rows[keep], cols[keep]


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


def extract_patches(image: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                    patch_size: int) -> np.ndarray:
    """Patches ``(N, bands, p, p)`` of ``(bands, H, W)`` (or ``(N, p, p)`` of ``(H, W)``)."""
    half = patch_size // 2
    windows = sliding_window_view(image, (patch_size, patch_size), axis=(-2, -1))
    if image.ndim == 2:
        return np.ascontiguousarray(windows[rows - half, cols - half])
    return np.ascontiguousarray(windows[:, rows - half, cols - half].transpose(1, 0, 2, 3))


def band_stats(patches: np.ndarray) -> BandStats:
    """Mean and std per band over all pixels of ``patches`` ``(N, bands, h, w)``."""
    mean = patches.mean(axis=(0, 2, 3), dtype=np.float64)
    std = patches.std(axis=(0, 2, 3), dtype=np.float64)
    return BandStats(mean=mean.tolist(), std=np.maximum(std, 1e-6).tolist())


def block_ids(rows: np.ndarray, cols: np.ndarray, block_size: int) -> np.ndarray:
    """The spatial block of the split that each centre falls in, as one integer id."""
    return (rows.astype(np.int64) // block_size) * 1_000_003 + cols.astype(np.int64) // block_size


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
    return np.r_[0, np.arange(first, length, block_size)]


def training_stats(results: list[dict], train_blocks: np.ndarray,
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
        patches[dirty] = _fill_invalid(patches[dirty], mask)
    return patches.astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Windows: one Spark task each.


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


def _read_valid(path: Path, band_names: list[str], window: Window
                ) -> tuple[np.ndarray, np.ndarray, dict | None]:
    """Bands in ``window`` and the valid-pixel mask (nodata and NaN-as-nodata are invalid).

    Returns an error record instead of raising when a value is NaN or infinite (not nodata): an
    exception would lose its type crossing back from a Spark task.
    """
    with rasterio.open(path) as src:
        data = src.read(window=window)
        nodata = src.nodata
    if nodata is None:
        valid = np.ones(data.shape, dtype=bool)
    else:
        valid = ~np.isnan(data) if np.isnan(nodata) else data != nodata
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        bad &= valid
        if bad.any():
            band = int(np.argmax(bad.any(axis=(1, 2))))
            return data, valid, {
                "path": str(path),
                "problem": f"band {band_names[band]} has {int(bad[band].sum())} NaN/inf values "
                           f"in window rows {window.row_off}..{window.row_off + window.height}, "
                           f"cols {window.col_off}..{window.col_off + window.width}",
                "fix": "set the raster's nodata value to NaN (or mask those pixels) at the "
                       "source, or fix the processing that produced them"}
    return data, valid, None


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
    a sha256 per array of the window written; counts of dropped patches; label codes seen that
    are in neither the class map nor the ignored codes; and ``error`` (``None``, or the file,
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

    result: dict[str, Any] = {"unknown": unknown, "error": None, "dropped_nodata": 0,
                              "dropped_nodata_by": {}}
    invalid_any = np.zeros((bottom - top, right - left), dtype=bool)
    features: dict[str, np.ndarray] = {}
    invalid_by: dict[str, np.ndarray] = {}
    for name, modality in scene.modalities.items():
        data, valid, error = _read_valid(root / modality.path, modality.bands, window)
        if error is not None:
            if modality.source:
                error["problem"] += f" (aligned from {modality.source})"
            return result | {"error": error}
        invalid_by[name] = ~valid.all(axis=0)
        invalid_any |= invalid_by[name]
        pixels = data[:, inner[0], inner[1]]  # the halo's only use is the nodata mask
        if not valid.all():
            pixels = np.where(valid[:, inner[0], inner[1]], pixels, 1)
        features[name] = to_features(pixels, modality.kind)

    area = params.patch_size ** 2
    drop = np.zeros(keep.shape, dtype=bool)
    for name, invalid in invalid_by.items():
        too_much = np.zeros(keep.shape, dtype=bool)
        if invalid.any():
            fraction = window_sums(invalid, rows[keep], cols[keep], params.patch_size) / area
            too_much[keep] = fraction > params.max_nodata_fraction
        result["dropped_nodata_by"][name] = int(too_much.sum())
        drop |= too_much
    result["dropped_nodata"] = int(drop.sum())
    keep &= ~drop
    rows, cols = rows[keep], cols[keep]

    if params.label == "majority":
        code = _majority(extract_patches(stored, rows, cols, params.patch_size),
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
    return table[bottom, right] - table[top, right] - table[bottom, left] + table[top, left]


# ---------------------------------------------------------------------------------------------
# The scene arrays: one .npy per modality (and the nodata mask), written window by window.


def scene_array_names(manifest: dict) -> list[str]:
    """The scene arrays of a prepared dataset: one per modality, then ``invalid``."""
    return [*manifest["modalities"], "invalid"]


def scene_array_file(name: str) -> str:
    """Where scene array ``name`` (a modality, or ``invalid``) lies in a prepared dataset."""
    return f"{SCENE_DIR}/{name}.npy"


def create_scene_arrays(out_dir: Path, modalities: dict[str, int], shape: tuple[int, int]
                        ) -> None:
    """Allocate ``scene/<modality>.npy`` ``(bands, H, W)`` float32 and ``scene/invalid.npy``.

    ``modalities`` maps each modality to its band count. The files are sparse until the windows'
    tasks fill them (``write_window``): the driver never holds the scene in memory.
    """
    (out_dir / SCENE_DIR).mkdir()
    for name, bands in modalities.items():
        np.lib.format.open_memmap(out_dir / scene_array_file(name), mode="w+",
                                  dtype=np.float32, shape=(bands, *shape))
    np.lib.format.open_memmap(out_dir / scene_array_file("invalid"), mode="w+", dtype=bool,
                              shape=shape)


def write_window(out_dir: Path, arrays: dict[str, np.ndarray], corner: tuple[int, int]
                 ) -> dict[str, str]:
    """Write each array's window at ``corner`` of its scene array; the digest of each."""
    r0, c0 = corner
    for name, window in arrays.items():
        target = np.load(out_dir / scene_array_file(name), mmap_mode="r+")
        height, width = window.shape[-2:]
        target[..., r0:r0 + height, c0:c0 + width] = window
        del target  # a shared mapping: the page cache holds the pixels for every reader
    return {name: window_digest(window) for name, window in arrays.items()}


def window_digest(window: np.ndarray) -> str:
    """sha256 of a window's values (C order)."""
    return hashlib.sha256(np.ascontiguousarray(window).data).hexdigest()


def open_scene_arrays(root: Path, manifest: dict, mode: str = "r") -> dict[str, np.ndarray]:
    """The scene arrays of a prepared dataset (layout ``scene``), memory-mapped."""
    return {name: np.load(root / scene_array_file(name), mmap_mode=mode)
            for name in scene_array_names(manifest)}


def _fill_invalid(patches: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """Replace nodata pixels by the mean of the patch's valid pixels, per band."""
    valid = ~invalid[:, None]
    count = np.maximum(valid.sum(axis=(2, 3)), 1)
    mean = np.where(valid, patches, 0).sum(axis=(2, 3)) / count
    return np.where(valid, patches, mean[:, :, None, None]).astype(np.float32)


def _majority(patches: np.ndarray, centre: np.ndarray, ignore: list[int]) -> np.ndarray:
    """The most frequent non-ignored code of each label patch (ties: the smallest code)."""
    flat = patches.reshape(len(patches), -1)
    codes, inverse = np.unique(flat, return_inverse=True)
    counts = np.zeros((len(flat), len(codes)), dtype=np.int32)
    np.add.at(counts, (np.repeat(np.arange(len(flat)), flat.shape[1]), inverse.ravel()), 1)
    counts[:, np.isin(codes, ignore)] = 0
    winner = codes[np.argmax(counts, axis=1)] if len(codes) else centre
    return np.where(counts.max(axis=1, initial=0) > 0, winner, centre)


# ---------------------------------------------------------------------------------------------
# Running the windows: Spark tasks, or a plain loop; with a progress log.


class ProgressLog:
    """Prints done/total, rate and ETA, at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, what: str, total: int, unit: str, every_s: float = 2.0,
                 printer: Callable[[str], None] = print) -> None:
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.printer = printer
        self.start = time.perf_counter()
        self.last = -1e9

    def update(self, done: int, extra: str = "") -> None:
        """Report ``done`` of ``total``."""
        now = time.perf_counter()
        if now - self.last < self.every_s and done < self.total:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        self.printer(f"[{self.what}] {done}/{self.total} {self.unit} | {rate:,.1f} {self.unit}/s"
                     f"{extra} | elapsed {elapsed:.1f}s, ETA {eta:.1f}s")


def run_tasks(func: Callable[[Any], dict], items: list, spark: object | None,
              progress: ProgressLog) -> list[dict]:
    """``[func(x) for x in items]``, as one Spark task per item when ``spark`` is given."""
    if spark is None:
        out = []
        for item in items:
            out.append(func(item))
            progress.update(len(out))
        return out
    sc = spark.sparkContext  # type: ignore[attr-defined]
    group = f"prepare-{time.time_ns()}"
    box: dict[str, Any] = {}

    def collect() -> None:
        try:
            sc.setJobGroup(group, "prepare: patch extraction")
            box["result"] = sc.parallelize(items, len(items)).map(func).collect()
        except BaseException as exc:  # re-raised in the calling thread
            box["error"] = exc

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    tracker = sc.statusTracker()
    while thread.is_alive():
        thread.join(0.5)
        done = 0
        for job in tracker.getJobIdsForGroup(group):
            info = tracker.getJobInfo(job)
            for stage in (info.stageIds if info else []):
                stage_info = tracker.getStageInfo(stage)
                done += stage_info.numCompletedTasks if stage_info else 0
        progress.update(min(done, len(items) - 1) if thread.is_alive() else len(items))
    if "error" in box:
        raise box["error"]
    return box["result"]


# ---------------------------------------------------------------------------------------------
# The stage.


def check_scene(scene_dir: Path, scene: SceneDescription) -> Grid:
    """Every raster exists, is readable, has a CRS, the label raster's grid and its bands.

    Raises:
        DatasetError: naming the file and the fix.
    """
    grid, count, _ = read_grid(scene_dir / scene.labels)
    if count != 1:
        raise DatasetError(scene_dir / scene.labels, f"label raster has {count} bands",
                           "use a single-band raster of class codes")
    for modality in scene.modalities.values():
        path = scene_dir / modality.path
        mod_grid, bands, _ = read_grid(path)
        if (mod_grid.height, mod_grid.width) != (grid.height, grid.width) or (
                mod_grid.crs != grid.crs
                or not np.allclose(mod_grid.transform, grid.transform)):
            raise DatasetError(path, f"grid {mod_grid.height}x{mod_grid.width} "
                               f"({mod_grid.crs}) differs from the label raster's "
                               f"{grid.height}x{grid.width} ({grid.crs})",
                               "resample all modalities to the label grid: ingest them with "
                               "ingest.source: scene, which aligns them")
        if bands != len(modality.bands):
            raise DatasetError(path, f"{bands} bands, scene.json lists {len(modality.bands)}",
                               "make scene.json's band list match the raster")
    return grid


def prepare_dataset(scene_dir: Path, out_dir: Path, params: PrepareParams,
                    spark: object | None = None) -> dict:
    """Find, split and describe the patches of the scene in ``scene_dir``; write ``out_dir``.

    ``out_dir`` receives ``scene/<modality>.npy`` (the feature raster per modality,
    ``(bands, H, W)`` float32) and ``scene/invalid.npy`` (the nodata pixels), ``train.npz``,
    ``val.npz``, ``test.npz`` (``row``/``col`` of each patch's centre, ``label`` as class index),
    ``manifest.json`` (``layout: scene``, source files, grid, bands, classes, split sizes and
    class counts, dropped patches, normalisation statistics, content fingerprint) and
    ``preview.png``. With ``spark``, each window is a Spark task that writes its part of the
    scene arrays and returns its centres and small summaries; the driver never holds the scene
    (on a cluster, ``out_dir`` must be on storage that the executors share, as ``scene_dir``).

    Returns:
        The manifest.

    Raises:
        DatasetError: inputs missing or inconsistent, bad values, or a split ends up empty.
            Nothing is written then.
    """
    scene_dir = Path(scene_dir).resolve()  # Spark workers may run in another directory
    scene = SceneDescription.load(scene_dir)
    grid = check_scene(scene_dir, scene)
    windows = plan_windows(grid.height, grid.width, params.window_size)
    progress = ProgressLog("prepare", len(windows), "windows")
    with atomic_path(Path(out_dir).resolve()) as tmp:
        tmp.mkdir()
        create_scene_arrays(tmp, {n: len(m.bands) for n, m in scene.modalities.items()},
                            (grid.height, grid.width))
        task = functools.partial(extract_window, str(scene_dir), scene, params, str(tmp))
        results = run_tasks(task, windows, spark, progress)
        lattice = centre_lattice(grid.height, grid.width, params.patch_size, params.stride)
        centres = gather_centres(results, windows, lattice, scene, scene_dir)
        codes = sorted(scene.classes)
        labels = np.searchsorted(codes, centres["code"]).astype(np.int64)  # all codes known
        counts = np.bincount(labels, minlength=len(codes))
        for code, count in zip(codes, counts, strict=True):
            if 0 < count < params.min_class_samples:
                raise DatasetError(scene_dir / scene.labels,
                                   f"class {code} ({scene.classes[code]}) has only {count} "
                                   f"patches, fewer than prepare.min_class_samples="
                                   f"{params.min_class_samples}, too few to split",
                                   f"add code {code} to the ignored codes, merge it into another "
                                   "class, or lower prepare.stride")
        split = block_split(centres["row"], centres["col"], params)
        per_split = split_arrays({"row": centres["row"], "col": centres["col"], "label": labels},
                                 split, scene_dir, "use a larger scene, a smaller "
                                 "prepare.block_size or a smaller prepare.stride")
        train = per_split["train"]
        stats = training_stats(results, np.unique(block_ids(train["row"], train["col"],
                                                            params.block_size)),
                               list(scene.modalities))
        manifest = {
            "task": SINGLE_LABEL,
            "layout": SCENE_LAYOUT,
            "source": scene.source,
            "scene_files": {name: m.path for name, m in scene.modalities.items()}
            | {"labels": scene.labels},
            "source_files": {name: m.source for name, m in scene.modalities.items() if m.source},
            "grid": grid.__dict__,
            "modalities": {name: {"kind": m.kind, "bands": m.bands}
                           for name, m in scene.modalities.items()},
            "classes": [scene.classes[c] for c in codes],
            "class_codes": codes,
            "patch_size": params.patch_size,
            "label_rule": params.label,
            "window_size": params.window_size,
            "windows": len(windows),
            "dropped_patches": {"nodata": int(sum(r["dropped_nodata"] for r in results))},
            "split_sizes": {s: int(len(per_split[s]["label"])) for s in SPLITS},
            "class_counts": {s: np.bincount(per_split[s]["label"], minlength=len(codes)).tolist()
                             for s in SPLITS},
            "normalisation": {name: s.__dict__ for name, s in stats.items()},
        }
        manifest["fingerprint"] = fingerprint(per_split, manifest,
                                              [r["digest"] for r in results])
        preview = functools.partial(scene_preview, scene_dir, scene,
                                    open_scene_arrays(tmp, manifest))
        write_files(tmp, per_split, manifest, preview)
    return manifest


def gather_centres(results: list[dict], windows: list[tuple[int, int, int, int]],
                   lattice: tuple[np.ndarray, np.ndarray], scene: SceneDescription,
                   scene_dir: Path) -> dict[str, np.ndarray]:
    """The windows' patch centres (``code``, ``row``, ``col``) in scene order (row-major).

    Checks the windows' reports first, then places each window's kept lattice points and codes
    in the scene's ``centre_lattice``: read row by row, they are in scene order.

    Raises:
        DatasetError: NaN/inf values, label codes outside the class map, or no patch left.
    """
    for result in results:
        if result["error"] is not None:
            raise DatasetError(**result["error"])
    unknown = sorted({c for r in results for c in r["unknown"]})
    if unknown:
        raise DatasetError(scene_dir / scene.labels, f"label codes {unknown} are not in the "
                           "class map", "add them to the class map (ingest.scene.classes) or "
                           "to the ignored codes (ingest.scene.ignore_codes)")
    kept = np.zeros((len(lattice[0]), len(lattice[1])), dtype=bool)
    codes = np.zeros(kept.shape, dtype=np.result_type(*(r["code"] for r in results)))
    for core, result in zip(windows, results, strict=True):
        part = lattice_window(lattice, core)
        shape = kept[part].shape
        kept[part] = np.unpackbits(result["kept"], count=shape[0] * shape[1]).reshape(shape)
        codes[part][kept[part]] = result["code"]
    if not kept.any():
        dropped = {name: sum(r["dropped_nodata_by"].get(name, 0) for r in results)
                   for name in scene.modalities}
        worst = max(dropped, key=dropped.get) if dropped else None
        if worst is not None and dropped[worst] > 0:
            raise DatasetError(scene_dir / scene.modalities[worst].path,
                               f"all-nodata region: every labelled patch has more than the "
                               f"allowed nodata ({dropped})", "check that the modality covers "
                               "the labelled area, its nodata value, or raise "
                               "prepare.max_nodata_fraction")
        raise DatasetError(scene_dir / scene.labels, "no labelled pixel to cut a patch around",
                           "check the label raster and the ignored codes")
    rows, cols = np.nonzero(kept)
    return {"code": codes[kept], "row": lattice[0][rows].astype(np.int32),
            "col": lattice[1][cols].astype(np.int32)}


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


def write_prepared(out_dir: Path, per_split: dict[str, dict[str, np.ndarray]], manifest: dict,
                   preview: Callable[[Path], None] | None = None) -> dict:
    """Write a dataset whose splits hold their patches (layout ``patches``), atomically.

    Adds the layout, the training statistics and the fingerprint to ``manifest``.
    """
    manifest["layout"] = PATCHES_LAYOUT
    manifest["normalisation"] = {m: band_stats(per_split["train"][m]).__dict__
                                 for m in manifest["modalities"]}
    manifest["fingerprint"] = fingerprint(per_split, manifest)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_files(tmp, per_split, manifest, preview)
    return manifest


def write_files(folder: Path, per_split: dict[str, dict[str, np.ndarray]], manifest: dict,
                preview: Callable[[Path], None] | None) -> None:
    """The splits' ``.npz`` files, ``manifest.json`` and the preview, into ``folder``."""
    for name, arrays in per_split.items():
        np.savez(folder / f"{name}.npz", **arrays)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    if preview is not None:
        preview(folder / PREVIEW_FILE)


def fingerprint(per_split: dict[str, dict[str, np.ndarray]], manifest: dict,
                scene_windows: list[dict[str, str]] | None = None) -> str:
    """sha256 over every array (name, dtype, shape, bytes) and the manifest (sans fingerprint).

    ``scene_windows`` are the scene arrays' window digests (``write_window``), in window order.
    Computed from contents, not file bytes: ``.npz`` files carry zip timestamps.
    """
    digest = hashlib.sha256()
    for file_name in SPLITS:
        for key in sorted(per_split[file_name]):
            array = np.ascontiguousarray(per_split[file_name][key])
            digest.update(f"{file_name}/{key}/{array.dtype.str}/{array.shape}".encode())
            digest.update(array.tobytes())
    for name in sorted(scene_windows[0]) if scene_windows else []:
        digest.update(f"{SCENE_DIR}/{name}".encode())
        for window in scene_windows:
            digest.update(bytes.fromhex(window[name]))
    rest = {k: v for k, v in manifest.items() if k != "fingerprint"}
    digest.update(json.dumps(rest, sort_keys=True).encode())
    return "sha256:" + digest.hexdigest()


def dataset_fingerprint(prepared_dir: Path | str) -> str:
    """The content fingerprint of a prepared dataset, recomputed from its files.

    Equal to ``manifest.json``'s ``fingerprint`` when the files are intact; record it with a
    model (MLflow tag ``data_hash``) to trace the model to its exact training data.

    Raises:
        DatasetError: a file is missing, or the files do not match the manifest's fingerprint.
    """
    root = Path(prepared_dir)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DatasetError(path, "prepared dataset file missing",
                           "run the prepare stage (`dvc repro prepare`)")
    manifest = json.loads(path.read_text())
    per_split = {}
    for name in SPLITS:
        with np.load(root / f"{name}.npz") as data:
            per_split[name] = dict(data)
    scene_windows = None
    if manifest.get("layout") == SCENE_LAYOUT:
        arrays = open_scene_arrays(root, manifest)
        grid = manifest["grid"]
        scene_windows = [
            {name: window_digest(array[..., r0:r0 + h, c0:c0 + w])
             for name, array in arrays.items()}
            for r0, c0, h, w in plan_windows(grid["height"], grid["width"],
                                             manifest["window_size"])]
    value = fingerprint(per_split, manifest, scene_windows)
    if manifest.get("fingerprint") not in (None, value):
        raise DatasetError(root, "the split files do not match the manifest's fingerprint "
                           "(modified after the prepare stage)",
                           "re-run the prepare stage (`dvc repro prepare` or `dvc checkout`)")
    return value


def prepared_files(manifest: dict) -> list[str]:
    """The data files of a prepared dataset with this manifest, relative to its folder."""
    scene = []
    if manifest.get("layout") == SCENE_LAYOUT:
        scene = [scene_array_file(name) for name in scene_array_names(manifest)]
    return [*(f"{name}.npz" for name in SPLITS), *scene]


def read_split(root: Path | str, name: str, scene: dict[str, np.ndarray] | None = None
               ) -> dict[str, np.ndarray]:
    """The arrays of split ``name`` of the prepared dataset in ``root``, patches included.

    Per modality ``(N, bands, p, p)`` float32 features (not normalised), ``label`` and, for a
    scene, ``row``/``col``: the same arrays whichever the layout. With layout ``scene`` the
    patches are cut here from the memory-mapped scene arrays (``open_scene_arrays``; pass them
    as ``scene`` to open them only once).

    Raises:
        ValueError: ``name`` is not a split.
    """
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    root = Path(root)
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    with np.load(root / f"{name}.npz") as data:
        arrays = dict(data)
    if manifest.get("layout") != SCENE_LAYOUT:
        return arrays
    if scene is None:
        scene = open_scene_arrays(root, manifest)
    for modality in manifest["modalities"]:
        arrays[modality] = cut_patches(scene[modality], scene["invalid"], arrays["row"],
                                       arrays["col"], manifest["patch_size"])
    return arrays


def split_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """Samples per class: class indices ``(N,)`` or multi-hot ``(N, K)`` (positives per class)."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(int).tolist()
    return np.bincount(labels, minlength=num_classes).tolist()


# ---------------------------------------------------------------------------------------------
# Preview.

_CLASS_COLOURS = ["#1f4e99", "#1b7837", "#e6c229", "#98df8a", "#d62728", "#a6761d", "#9467bd",
                  "#17becf", "#7f7f7f", "#ff7f0e", "#8c564b", "#e377c2"]


def _stretch(image: np.ndarray) -> np.ndarray:
    """Per-band 2-98 percentile stretch to [0, 1], ``(bands, H, W)`` -> ``(H, W, bands)``."""
    out = np.empty(image.shape[1:] + image.shape[:1], dtype=np.float32)
    for i, band in enumerate(image):
        finite = band[np.isfinite(band)]
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        out[..., i] = np.clip((band - lo) / max(hi - lo, 1e-9), 0, 1)
    return np.nan_to_num(out)


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def scene_preview(scene_dir: Path, scene: SceneDescription, rasters: dict[str, np.ndarray],
                  out: Path, max_side: int = 256) -> None:
    """An RGB composite, a SAR composite and the label map side by side, as a PNG.

    Drawn from the feature rasters already in memory (``rasters``: per modality, and
    ``invalid``, black in every panel) taken every ``step`` pixels, and a decimated read of the
    labels: no second full read of the scene and no plotting library (PIL only).
    """
    from PIL import Image, ImageDraw

    height, width = rasters["invalid"].shape
    step = max(1, int(np.ceil(max(height, width) / max_side)))
    invalid = rasters["invalid"][::step, ::step]
    zoom = max(1, max_side // max(invalid.shape))  # small scenes are enlarged, pixels kept
    panels = []
    for name, modality in scene.modalities.items():
        image = np.where(invalid, np.nan, rasters[name][:, ::step, ::step])
        if modality.kind == "optical":
            idx = [modality.bands.index(b) if b in modality.bands else i
                   for i, b in enumerate(["B04", "B03", "B02"])][:image.shape[0]]
            rgb = _stretch(image[idx])
            title = f"{modality.path}: RGB (B04, B03, B02)"
        else:
            second = image[min(1, len(image) - 1)]
            rgb = _stretch(np.stack([image[0], second, image[0] - second]))
            title = f"{modality.path}: SAR ({'/'.join(modality.bands[:2])}, ratio) dB"
        if rgb.shape[-1] < 3:
            rgb = np.repeat(rgb[..., :1], 3, axis=-1)
        panels.append((title, (rgb * 255).astype(np.uint8)))
    with rasterio.open(scene_dir / scene.labels) as src:
        labels = src.read(1, out_shape=invalid.shape)
    codes = sorted(scene.classes)
    colours = [_hex_rgb(_CLASS_COLOURS[i % len(_CLASS_COLOURS)]) for i in range(len(codes))]
    label_rgb = np.full(labels.shape + (3,), 255, dtype=np.uint8)
    for code, colour in zip(codes, colours, strict=True):
        label_rgb[labels == code] = colour
    panels.append((f"{scene.labels}: classes", label_rgb))

    gap, top, legend = 8, 16, 150
    side_h, side_w = invalid.shape[0] * zoom, invalid.shape[1] * zoom
    canvas = Image.new("RGB", (len(panels) * (side_w + gap) + legend, side_h + top + gap),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, rgb) in enumerate(panels):
        x = i * (side_w + gap)
        panel = Image.fromarray(rgb).resize((side_w, side_h), Image.Resampling.NEAREST)
        canvas.paste(panel, (x, top))
        draw.text((x, 2), title, fill="black")
    x = len(panels) * (side_w + gap)
    for i, (code, colour) in enumerate(zip(codes, colours, strict=True)):
        y = top + 14 * i
        draw.rectangle((x, y, x + 10, y + 10), fill=colour)
        draw.text((x + 14, y), f"{code} {scene.classes[code]}", fill="black")
    canvas.save(out, format="PNG", compress_level=1)


def iter_chunks(items: list, size: int) -> Iterator[list]:
    """``items`` in consecutive chunks of ``size``."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

