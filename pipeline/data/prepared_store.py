"""The prepared dataset on disk: its files, the scene arrays, and the content fingerprint.

A prepared dataset is a folder: ``manifest.json``, one ``.npz`` per split and, for layout
``scene``, ``scene/<modality>.npy`` ``(bands, H, W)`` float32 and ``scene/invalid.npy`` (the
nodata pixels), written window by window by the prepare stage's tasks and memory-mapped by its
readers. Layout ``patches`` (BigEarthNet): a split holds its patches. The fingerprint is a sha256
over every array and the manifest: a model records it to trace its exact training data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline.data.split import SPLITS
from pipeline.data.statistics import band_stats
from pipeline.data.windows import plan_windows
from pipeline.errors import DatasetError
from pipeline.io import atomic_path

MANIFEST_FILE = "manifest.json"
PREVIEW_FILE = "preview.png"
SCENE_DIR = "scene"  # scene/<modality>.npy and scene/invalid.npy: the feature rasters
SCENE_LAYOUT = "scene"  # scene/ holds the feature rasters; a split holds centres and labels
PATCHES_LAYOUT = "patches"  # a split holds its patches (BigEarthNet: a patch is a whole image)


# ---------------------------------------------------------------------------------------------
# The scene arrays: one .npy per modality (and the nodata mask), written window by window.


def scene_array_names(manifest: dict[str, Any]) -> list[str]:
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


def open_scene_arrays(root: Path, manifest: dict[str, Any],
                      mode: Literal["r", "r+", "w+", "c"] = "r") -> dict[str, np.ndarray]:
    """The scene arrays of a prepared dataset (layout ``scene``), memory-mapped."""
    return {name: np.load(root / scene_array_file(name), mmap_mode=mode)
            for name in scene_array_names(manifest)}


# ---------------------------------------------------------------------------------------------
# The split files and the manifest.


def write_prepared(out_dir: Path, per_split: dict[str, dict[str, np.ndarray]],
                   manifest: dict[str, Any],
                   preview: Callable[[Path], None] | None = None) -> dict[str, Any]:
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


def write_files(folder: Path, per_split: dict[str, dict[str, np.ndarray]], manifest: dict[str, Any],
                preview: Callable[[Path], None] | None) -> None:
    """The splits' ``.npz`` files, ``manifest.json`` and the preview, into ``folder``."""
    for name, arrays in per_split.items():
        # mypy checks `**arrays` against savez's `allow_pickle: bool` too; the keys are array names
        np.savez(folder / f"{name}.npz", **arrays)  # type: ignore[arg-type]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    if preview is not None:
        preview(folder / PREVIEW_FILE)


def prepared_files(manifest: dict[str, Any]) -> list[str]:
    """The data files of a prepared dataset with this manifest, relative to its folder."""
    scene = []
    if manifest.get("layout") == SCENE_LAYOUT:
        scene = [scene_array_file(name) for name in scene_array_names(manifest)]
    return [*(f"{name}.npz" for name in SPLITS), *scene]


# ---------------------------------------------------------------------------------------------
# The fingerprint.


def fingerprint(per_split: dict[str, dict[str, np.ndarray]], manifest: dict[str, Any],
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
        for window in scene_windows or []:  # not None: the loop over its first runs
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
