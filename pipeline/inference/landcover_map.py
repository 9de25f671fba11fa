"""The land-cover map of a scene: every valid pixel (or every k-th) classified, as a GeoTIFF.

The scene is cut into windows (as the prepare stage does); each window is one Spark task that
reads only its window plus a halo of ``patch_size // 2`` pixels, builds the patch around each
pixel exactly as the prepare stage builds a training patch (same features, same nodata rule, same
normalisation), predicts them and returns the window's class codes. The driver writes each window
into the GeoTIFF as it arrives, so neither the scene nor the map is ever held whole.

The map is on the label raster's grid (CRS, transform, size), in the label raster's class codes,
with a colour table, the class names as tags and nodata where nothing was predicted: pixels
closer than ``patch_size // 2`` to the scene's edge, pixels off the ``stride`` grid, and pixels
whose patch has more nodata than ``max_nodata_fraction``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from pipeline.data.nodata import fill_invalid
from pipeline.data.preview import CLASS_COLOURS
from pipeline.data.rasters import read_grid, to_features
from pipeline.data.scene import SceneDescription, scene_folders
from pipeline.data.windows import extract_patches, plan_windows
from pipeline.errors import DatasetError
from pipeline.io import atomic_path
from pipeline.model_store import load_model
from pipeline.objective import decide

MAP_FILE = "landcover_map.tif"
PREVIEW_FILE = "landcover_map.png"


@dataclass(frozen=True)
class MapJob:
    """What a window task needs, as plain picklable values (paths absolute, shared by executors).

    ``normalisation`` maps modality to the training ``{"mean": [...], "std": [...]}``;
    ``class_codes[i]`` is the label code of class index ``i``.
    """

    scene_dir: str
    model_dir: str
    scene: SceneDescription
    normalisation: dict[str, dict[str, list[float]]]
    class_codes: list[int]
    patch_size: int
    stride: int = 1
    max_nodata_fraction: float = 0.1
    batch_size: int = 2048

    def __post_init__(self) -> None:
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd, got {self.patch_size}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")


def map_dtype(class_codes: list[int]) -> tuple[str, int]:
    """The smallest GeoTIFF type with a colour table for the codes, and a nodata value.

    The nodata value is not among the codes.
    """
    if max(class_codes) < 255:
        return "uint8", 255
    if max(class_codes) < 65535:
        return "uint16", 65535
    raise ValueError(f"class codes up to {max(class_codes)} do not fit a 16-bit map")


def _axis(start: int, length: int, size: int, half: int, stride: int) -> np.ndarray:
    """Positions on the scene's stride grid inside ``[start, start+length)``.

    The grid's first position is at ``half``; only positions whose patch fits in the scene are
    returned.
    """
    first = half + max(0, -(-(start - half) // stride)) * stride
    return np.arange(first, min(start + length, size - half), stride)


def map_window(job: MapJob, core: tuple[int, int, int, int]) -> dict[str, Any]:
    """Class codes of the core window ``core`` ``(row_off, col_off, height, width)``: one task.

    Returns ``core`` and ``codes`` ``(height, width)`` (nodata where nothing was predicted), and
    the number of pixels predicted.
    """
    root = Path(job.scene_dir)
    with rasterio.open(root / job.scene.labels) as src:
        height, width = src.height, src.width
    _, nodata = map_dtype(job.class_codes)
    half = job.patch_size // 2
    r0, c0, h, w = core
    top, left = max(0, r0 - half), max(0, c0 - half)
    bottom, right = min(height, r0 + h + half), min(width, c0 + w + half)
    window = Window(left, top, right - left, bottom - top)
    codes = np.full((h, w), nodata, dtype=map_dtype(job.class_codes)[0])
    rows = _axis(r0, h, height, half, job.stride)
    cols = _axis(c0, w, width, half, job.stride)
    rows, cols = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    if len(rows) == 0:
        return {"core": core, "codes": codes, "predicted": 0}

    features: dict[str, np.ndarray] = {}
    invalid_by: dict[str, np.ndarray] = {}
    for name, modality in job.scene.modalities.items():
        with rasterio.open(root / modality.path) as src:
            data = src.read(window=window)
            nodata_value = src.nodata
        valid = np.ones(data.shape, dtype=bool)
        if nodata_value is not None:
            valid &= ~np.isnan(data) if np.isnan(nodata_value) else data != nodata_value
        if data.dtype.kind == "f":
            valid &= np.isfinite(data)
        features[name] = to_features(np.where(valid, data, 1), modality.kind)
        invalid_by[name] = ~cast(np.ndarray, valid.all(axis=0))  # an array: valid is 3-D
    lrows, lcols = rows - top, cols - left
    area = job.patch_size ** 2
    keep = np.ones(len(rows), dtype=bool)
    invalid_any = np.zeros((bottom - top, right - left), dtype=bool)
    for invalid in invalid_by.values():
        fraction = extract_patches(invalid, lrows, lcols, job.patch_size).sum(axis=(1, 2)) / area
        keep &= fraction <= job.max_nodata_fraction
        invalid_any |= invalid
    rows, cols, lrows, lcols = rows[keep], cols[keep], lrows[keep], lcols[keep]

    model, _ = load_model(Path(job.model_dir))
    torch.set_num_threads(1)
    lookup = np.asarray(job.class_codes)
    for start in range(0, len(rows), job.batch_size):
        sl = slice(start, start + job.batch_size)
        mask = extract_patches(invalid_any, lrows[sl], lcols[sl], job.patch_size)
        inputs = {}
        for name, image in features.items():
            patches = extract_patches(image, lrows[sl], lcols[sl], job.patch_size)
            if mask.any():
                patches = fill_invalid(patches, mask)
            stats = job.normalisation[name]
            mean = np.asarray(stats["mean"], dtype=np.float32)[None, :, None, None]
            std = np.asarray(stats["std"], dtype=np.float32)[None, :, None, None]
            inputs[name] = torch.from_numpy((patches - mean) / std)
        with torch.no_grad():
            index = decide(model(inputs), model.config.task).numpy()
        codes[rows[sl] - r0, cols[sl] - c0] = lookup[index]
    return {"core": core, "codes": codes, "predicted": int(len(rows))}


def colour_table(class_codes: list[int]) -> dict[int, tuple[int, ...]]:
    """RGBA per class code, in the order of the classes (as the prepare preview colours them)."""
    from matplotlib.colors import to_rgba

    return {code: tuple(int(round(255 * c)) for c in to_rgba(
        CLASS_COLOURS[i % len(CLASS_COLOURS)])) for i, code in enumerate(class_codes)}


def write_landcover_map(job: MapJob, out: Path, spark: Any | None = None,
                        window_size: int = 64, tags: dict[str, str] | None = None
                        ) -> dict[str, float]:
    """Classify the scene and write the map GeoTIFF ``out`` atomically; returns pixel counts.

    The scene is classified window by window (Spark tasks when ``spark`` is given).

    Raises:
        DatasetError: the scene's label raster (the reference grid) is missing or unreadable.
    """
    scene_dir = Path(job.scene_dir)
    grid, _, _ = read_grid(scene_dir / job.scene.labels)
    dtype, nodata = map_dtype(job.class_codes)
    windows = plan_windows(grid.height, grid.width, window_size)
    task = functools.partial(map_window, job)
    if spark is None:
        results = map(task, windows)
    else:
        context = spark.sparkContext
        context.setJobGroup("landcover-map", "land-cover map: one task per window")
        results = context.parallelize(windows, len(windows)).map(task).toLocalIterator()
    with rasterio.open(scene_dir / job.scene.labels) as src:
        crs, transform = src.crs, src.transform
    names = {code: job.scene.classes.get(code, str(code)) for code in job.class_codes}
    predicted = 0
    with atomic_path(out) as tmp:
        profile = {"driver": "GTiff", "height": grid.height, "width": grid.width, "count": 1,
                   "dtype": dtype, "nodata": nodata, "crs": crs, "transform": transform,
                   "compress": "deflate"}
        with rasterio.open(tmp, "w", **profile) as dst:
            for result in results:
                r0, c0, h, w = result["core"]
                dst.write(result["codes"], 1, window=Window(c0, r0, w, h))
                predicted += result["predicted"]
            dst.write_colormap(1, colour_table(job.class_codes))
            dst.set_band_description(1, "land-cover class code")
            dst.update_tags(CLASS_NAMES=json.dumps({str(c): n for c, n in names.items()}),
                            STRIDE=str(job.stride), PATCH_SIZE=str(job.patch_size),
                            **(tags or {}))
            dst.update_tags(1, **{f"CLASS_{code}": name for code, name in names.items()})
    return {"map_pixels": float(grid.height * grid.width), "map_predicted_pixels": float(predicted),
            "map_windows": float(len(windows))}


def read_class_names(path: Path) -> dict[int, str]:
    """The class names a map GeoTIFF carries, by code."""
    with rasterio.open(path) as src:
        return {int(c): n for c, n in json.loads(src.tags()["CLASS_NAMES"]).items()}


def write_map_preview(map_path: Path, out: Path, max_side: int = 1024, title: str = "") -> None:
    """Write a PNG of the map (decimated to ``max_side`` pixels).

    It is coloured by the map's colour table, with a legend of the class names and a grey for
    pixels not predicted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = read_class_names(map_path)
    with rasterio.open(map_path) as src:
        scale = max(1, int(np.ceil(max(src.height, src.width) / max_side)))
        codes = src.read(1, out_shape=(max(1, src.height // scale), max(1, src.width // scale)),
                         resampling=rasterio.enums.Resampling.nearest)
        colours = src.colormap(1)
        nodata = src.nodata
    rgb = np.full(codes.shape + (3,), 0.85, dtype=np.float32)
    for code in names:
        rgb[codes == code] = np.asarray(colours[code][:3]) / 255.0
    fig, ax = plt.subplots(figsize=(7, 7 * codes.shape[0] / max(codes.shape[1], 1) + 0.6))
    ax.imshow(rgb, interpolation="nearest")
    # matplotlib takes an RGB array; its stubs list only tuples and strings
    handles = [Patch(color=np.asarray(colours[c][:3]) / 255.0, label=f"{c} {n}")  # type: ignore[arg-type]
               for c, n in names.items()]
    if (codes == nodata).any():
        handles.append(Patch(color=(0.85, 0.85, 0.85), label="not predicted"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or f"land-cover map ({map_path.name})", fontsize=10)
    ax.set_axis_off()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, bbox_inches="tight", format="png")
    plt.close(fig)


def map_job_for(scene_dir: Path, model_dir: Path, manifest: dict[str, Any], stride: int,
                max_nodata_fraction: float, batch_size: int) -> MapJob:
    """The map job of a model trained on the prepared data described by ``manifest``.

    Raises:
        DatasetError: ``scene_dir`` holds no ingested scene (e.g. BigEarthNet patches).
    """
    scene_dir = Path(scene_dir).resolve()
    scene = SceneDescription.load(scene_dir)
    if list(scene.modalities) != list(manifest["modalities"]):
        raise DatasetError(scene_dir, f"the scene's modalities {list(scene.modalities)} differ "
                           f"from the prepared data's {list(manifest['modalities'])}",
                           "re-run the prepare stage on this scene")
    return MapJob(scene_dir=str(scene_dir), model_dir=str(Path(model_dir).resolve()), scene=scene,
                  normalisation=manifest["normalisation"],
                  class_codes=[int(c) for c in manifest["class_codes"]],
                  patch_size=int(manifest["patch_size"]), stride=stride,
                  max_nodata_fraction=max_nodata_fraction, batch_size=batch_size)


def map_jobs_for(raw: Path, model_dir: Path, manifest: dict[str, Any], stride: int,
                 max_nodata_fraction: float, batch_size: int) -> dict[str | None, MapJob]:
    """The map job of every scene of the ingested folder ``raw``, by scene name.

    One scene: ``{None: job}``. Many scenes (``scenes.json``): one job per scene, each mapped
    on its own grid, in its own CRS.

    Raises:
        DatasetError: a scene folder holds no ingested scene, or its modalities differ.
    """
    return {name: map_job_for(folder, model_dir, manifest, stride, max_nodata_fraction,
                              batch_size)
            for name, folder in scene_folders(Path(raw)).items()}


def map_file_names(name: str | None) -> tuple[str, str]:
    """The map GeoTIFF and PNG of scene ``name`` (``None``: the one scene)."""
    if name is None:
        return MAP_FILE, PREVIEW_FILE
    return f"landcover_map_{name}.tif", f"landcover_map_{name}.png"
