"""The prepared patches, loaded and normalised as tensors.

The prepared data of one scene fits in memory many times over on the default settings, so a split
is held as tensors and batches are index lookups: no DataLoader workers, no per-sample Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.prepared_store import (
    MANIFEST_FILE,
    SCENE_LAYOUT,
    open_scene_arrays,
    prepared_files,
)
from pipeline.data.split import SPLITS
from pipeline.data.split_reader import read_split
from pipeline.errors import DatasetError
from pipeline.objective import MULTI_LABEL, SINGLE_LABEL


@dataclass(frozen=True)
class PatchSplit:
    """One split: normalised inputs per modality ``(N, C, h, w)`` and labels.

    Labels are class indices ``(N,)`` int64 for a single-label task, multi-hot ``(N, classes)``
    float32 for a multi-label one (``PreparedDataset.task``).
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor | np.ndarray | list[int]
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The inputs and labels at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return {name: x[index] for name, x in self.inputs.items()}, self.labels[index]


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset folder: ``manifest.json``, one ``.npz`` per split, maybe ``scene/``.

    Layout ``scene`` (a scene's patches): ``scene/`` holds the feature rasters and a split its
    patch centres and labels; the patches are cut when a split is loaded. Layout ``patches``
    (BigEarthNet, and datasets written before layouts existed): a split holds its patches.
    """

    root: Path

    @classmethod
    def open(cls, root: Path | str) -> PreparedDataset:
        """Open ``root``, checking that the manifest and every data file exist."""
        root = Path(root)
        names = [MANIFEST_FILE]
        if (root / MANIFEST_FILE).is_file():
            manifest = json.loads((root / MANIFEST_FILE).read_text())
            names += prepared_files(manifest)
        for name in names:
            if not (root / name).is_file():
                raise DatasetError(root / name, "prepared dataset file missing",
                                   "run the prepare stage (`dvc repro prepare`)")
        return cls(root)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest written by the prepare stage."""
        manifest: dict[str, Any] = json.loads((self.root / MANIFEST_FILE).read_text())
        return manifest

    @property
    def task(self) -> str:
        """``"single_label"`` (one class per sample) or ``"multi_label"`` (multi-hot labels)."""
        return str(self.manifest.get("task", SINGLE_LABEL))

    @property
    def fingerprint(self) -> str | None:
        """The content fingerprint of the prepared data (``manifest.json``), if recorded."""
        return self.manifest.get("fingerprint")

    @property
    def class_names(self) -> list[str]:
        """Class names, in class-index order."""
        return list(self.manifest["classes"])

    @property
    def channels(self) -> dict[str, int]:
        """Number of bands per modality, in the manifest's modality order."""
        return {name: len(m["bands"]) for name, m in self.manifest["modalities"].items()}

    @cached_property
    def _scene(self) -> dict[str, np.ndarray] | None:
        """The feature rasters (layout ``scene``), memory-mapped once for all splits."""
        if self.manifest.get("layout") != SCENE_LAYOUT:
            return None
        return open_scene_arrays(self.root, self.manifest)

    def split(self, name: str) -> PatchSplit:
        """Load split ``name`` (train/val/test), normalised with the training statistics."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        arrays = read_split(self.root, name, self._scene)
        inputs = {}
        for modality in self.channels:
            stats = self.manifest["normalisation"][modality]
            mean = np.asarray(stats["mean"], dtype=np.float32)[None, :, None, None]
            std = np.asarray(stats["std"], dtype=np.float32)[None, :, None, None]
            inputs[modality] = torch.from_numpy((arrays[modality] - mean) / std)
        if self.task == MULTI_LABEL:
            labels = torch.from_numpy(arrays["label"].astype(np.float32))
        else:
            labels = torch.from_numpy(arrays["label"].astype(np.int64))
        return PatchSplit(inputs=inputs, labels=labels)
