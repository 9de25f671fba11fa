"""Loading a split of a prepared dataset: its arrays, with the patches cut from the scene arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.data.nodata import cut_patches, fill_invalid
from pipeline.data.prepared_store import MANIFEST_FILE, SCENE_LAYOUT, open_scene_arrays
from pipeline.data.split import SPLITS
from pipeline.data.windows import extract_patches


def read_centres(root: Path | str, name: str) -> dict[str, np.ndarray]:
    """The small arrays of split ``name`` (``row``, ``col``, ``label``): no patch is cut.

    Raises:
        ValueError: ``name`` is not a split.
    """
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    with np.load(Path(root) / f"{name}.npz") as data:
        return dict(data)


def cut_batch(image: np.ndarray, invalid: np.ndarray, rows: np.ndarray, cols: np.ndarray,
              patch_size: int) -> np.ndarray:
    """Patches ``(n, bands, p, p)`` float32 of a memory-mapped feature raster, nodata filled.

    Unlike ``cut_patches`` it never scans the whole nodata mask: only the pixels of these
    patches are read (what a training step needs of the store).
    """
    patches = extract_patches(image, rows, cols, patch_size)
    mask = extract_patches(invalid, rows, cols, patch_size)
    dirty = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(dirty):
        patches[dirty] = fill_invalid(patches[dirty], mask[dirty])
    return patches.astype(np.float32, copy=False)


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
