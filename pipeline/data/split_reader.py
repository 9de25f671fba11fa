"""Loading a split of a prepared dataset: its arrays, with the patches cut from the scene arrays."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.data.nodata import cut_patches, fill_invalid
from pipeline.data.prepared_store import MANIFEST_FILE, SCENE_LAYOUT, open_all_scene_arrays
from pipeline.data.split import SPLITS
from pipeline.data.windows import extract_patches


def read_centres(root: Path | str, name: str) -> dict[str, np.ndarray]:
    """The small arrays of split ``name`` (``row``, ``col``, ``label``, maybe ``scene``).

    No patch is cut.

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


Cut = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def cut_from_scenes(cut: Cut, scenes: list[dict[str, np.ndarray]], modality: str,
                    rows: np.ndarray, cols: np.ndarray, scene_of: np.ndarray | None,
                    patch_size: int) -> np.ndarray:
    """Patches of ``modality`` at ``rows``/``cols``, each cut by ``cut`` from its own scene.

    ``scene_of`` is each sample's scene (index into ``scenes``; ``None``: one scene).
    """
    if scene_of is None or len(scenes) == 1:
        return cut(scenes[0][modality], scenes[0]["invalid"], rows, cols, patch_size)
    out = np.empty((len(rows), scenes[0][modality].shape[0], patch_size, patch_size),
                   dtype=np.float32)
    for k, arrays in enumerate(scenes):
        mine = np.flatnonzero(scene_of == k)
        if len(mine):
            out[mine] = cut(arrays[modality], arrays["invalid"], rows[mine], cols[mine],
                            patch_size)
    return out


def read_split(root: Path | str, name: str,
               scenes: list[dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """The arrays of split ``name`` of the prepared dataset in ``root``, patches included.

    Per modality ``(N, bands, p, p)`` float32 features (not normalised), ``label`` and, for a
    scene, ``row``/``col`` (and ``scene``, with many scenes): the same arrays whichever the
    layout. With layout ``scene`` the patches are cut here from the memory-mapped scene arrays
    (``open_all_scene_arrays``; pass them as ``scenes`` to open them only once).

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
    if scenes is None:
        scenes = open_all_scene_arrays(root, manifest)
    for modality in manifest["modalities"]:
        arrays[modality] = cut_from_scenes(cut_patches, scenes, modality, arrays["row"],
                                           arrays["col"], arrays.get("scene"),
                                           manifest["patch_size"])
    return arrays
