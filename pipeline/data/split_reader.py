"""Loading a split of a prepared dataset: its arrays, with the patches cut from the scene arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.data.nodata import cut_patches
from pipeline.data.prepared_store import MANIFEST_FILE, SCENE_LAYOUT, open_scene_arrays
from pipeline.data.split import SPLITS


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
