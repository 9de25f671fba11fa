"""The prepare stage: patches around labelled pixels found by Spark tasks; a blocked split.

The scene is cut into square windows (``prepare.window_size``); each window is one task
(``window_task``) that reads its rasters with a halo, writes its features into the scene arrays
(``prepared_store``, stored once) and returns only small things: the centres of the patches it
kept, the pixel sums of each spatial block it covers and a digest of what it wrote. The driver
never holds the scene, so a scene larger than its memory works. A split stores its centres and
labels, and its patches are cut when it is loaded (``split_reader``), so no pixel is stored once
per patch containing it. The result is the same for any window size (a test holds the two equal).

The split is by spatial block (``split``), stratified by class, with a guard band: a patch whose
footprint reaches into another split's block is dropped (and counted), so no pixel is shared by
patches of two splits. The normalisation statistics come from the training split's blocks only
(``statistics``): the mean and std of their valid pixels.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import PrepareParams
from pipeline.data.prepared_store import (
    SCENE_LAYOUT,
    create_scene_arrays,
    fingerprint,
    open_scene_arrays,
    write_files,
)
from pipeline.data.preview import scene_preview
from pipeline.data.rasters import Grid, read_grid
from pipeline.data.scene import SceneDescription
from pipeline.data.split import SPLITS, block_ids, block_split, split_arrays
from pipeline.data.statistics import training_stats
from pipeline.data.task_runner import ProgressLog, run_tasks
from pipeline.data.window_task import extract_window
from pipeline.data.windows import centre_lattice, lattice_window, plan_windows
from pipeline.errors import DatasetError
from pipeline.io import atomic_path
from pipeline.objective import SINGLE_LABEL


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
                    spark: object | None = None) -> dict[str, Any]:
    """Find, split and describe the patches of the scene in ``scene_dir``; write ``out_dir``.

    ``out_dir`` receives ``scene/<modality>.npy`` (the feature raster per modality,
    ``(bands, H, W)`` float32) and ``scene/invalid.npy`` (the nodata pixels), ``train.npz``,
    ``val.npz``, ``test.npz`` (``row``/``col`` of each patch's centre, ``label`` as class index),
    ``manifest.json`` (``layout: scene``, source files, grid, bands, classes, split sizes and
    class counts, dropped patches (nodata, guard band), normalisation statistics, content
    fingerprint) and
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
        absent = absent_classes(scene, {c for r in results for c in r["seen"]})
        for code, count in zip(codes, counts, strict=True):
            if code not in absent and count < params.min_class_samples:
                raise DatasetError(scene_dir / scene.labels,
                                   f"class {code} ({scene.classes[code]}) has only {count} "
                                   f"patches, fewer than prepare.min_class_samples="
                                   f"{params.min_class_samples}, too few to split",
                                   f"add code {code} to the ignored codes, merge it into another "
                                   "class, or lower prepare.stride")
        names = [scene.classes[c] for c in codes]
        split, keep = block_split(centres["row"], centres["col"], labels, names,
                                  (grid.height, grid.width), params, scene_dir / scene.labels)
        per_split = split_arrays({"row": centres["row"][keep], "col": centres["col"][keep],
                                  "label": labels[keep]},
                                 split[keep], scene_dir, "use a larger scene, a smaller "
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
            "absent_classes": absent,
            "patch_size": params.patch_size,
            "block_size": params.block_size,
            "label_rule": params.label,
            "window_size": params.window_size,
            "windows": len(windows),
            "dropped_patches": {"nodata": int(sum(r["dropped_nodata"] for r in results)),
                                "guard_band": int((~keep).sum())},
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


def absent_classes(scene: SceneDescription, seen: set[int]) -> dict[int, str]:
    """The classes of the class map with no pixel in the label raster, each with a warning.

    Such a class stays an output of the model, which never learns it: the user is told (and
    the manifest records it) rather than refused, since a class map is often shared by scenes.
    A class that has pixels but too few patches is refused (``prepare.min_class_samples``).
    """
    absent = {code: name for code, name in sorted(scene.classes.items()) if code not in seen}
    for code, name in absent.items():
        print(f"warning: class {code} ({name}) of ingest.scene.classes has no pixel in "
              f"{scene.labels}: the model keeps it as an output it never learns; remove it "
              "from ingest.scene.classes if the scene cannot have it")
    return absent


def gather_centres(results: list[dict[str, Any]], windows: list[tuple[int, int, int, int]],
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
        worst = max(dropped, key=dropped.__getitem__) if dropped else None
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
