"""The prepared patches, loaded and normalised as tensors.

``split`` holds a whole split as tensors (evaluation, validation: batches are index lookups).
``stream`` is what training workers use: only the centres and labels are held, and each batch's
patches are cut from the memory-mapped scene arrays when it is asked for, so a worker's memory
does not grow with the dataset, and a worker reads only its shard and the modalities it owns.
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
    open_all_scene_arrays,
    prepared_files,
)
from pipeline.data.split import SPLITS, block_ids
from pipeline.data.split_reader import cut_batch, cut_from_scenes, read_centres, read_split
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
    groups: np.ndarray | None = None  # per sample, its spatial block (correlated samples)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor | np.ndarray | list[int]
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The inputs and labels at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return {name: x[index] for name, x in self.inputs.items()}, self.labels[index]


@dataclass(frozen=True)
class StreamingSplit:
    """One split read batch by batch from the memory-mapped scene arrays (layout ``scene``).

    Holds the patch centres and labels (a few bytes per sample); ``batch`` cuts and normalises
    only the requested samples of the requested modalities.
    """

    scenes: list[dict[str, np.ndarray]]
    rows: np.ndarray
    cols: np.ndarray
    labels: torch.Tensor
    patch_size: int
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    scene_of: np.ndarray | None = None  # many scenes: each sample's scene (index of ``scenes``)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor | np.ndarray) -> tuple[dict[str, torch.Tensor],
                                                               torch.Tensor]:
        """The inputs (the modalities of ``mean``) and labels at ``index``."""
        index = np.asarray(index, dtype=np.int64)
        inputs = {}
        scene_of = None if self.scene_of is None else self.scene_of[index]
        for name in self.mean:
            patches = cut_from_scenes(cut_batch, self.scenes, name, self.rows[index],
                                      self.cols[index], scene_of, self.patch_size)
            inputs[name] = torch.from_numpy((patches - self.mean[name]) / self.std[name])
        return inputs, self.labels[torch.from_numpy(index)]


TrainingSplit = StreamingSplit | PatchSplit  # what a training step draws its batches from


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
    def _scenes(self) -> list[dict[str, np.ndarray]] | None:
        """The feature rasters of each scene (layout ``scene``), mapped once for all splits."""
        if self.manifest.get("layout") != SCENE_LAYOUT:
            return None
        return open_all_scene_arrays(self.root, self.manifest)

    def _labels(self, label: np.ndarray) -> torch.Tensor:
        if self.task == MULTI_LABEL:
            return torch.from_numpy(label.astype(np.float32))
        return torch.from_numpy(label.astype(np.int64))

    def _statistics(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        stats = self.manifest["normalisation"][modality]
        return (np.asarray(stats["mean"], dtype=np.float32)[None, :, None, None],
                np.asarray(stats["std"], dtype=np.float32)[None, :, None, None])

    def stream(self, name: str, modalities: list[str] | None = None
               ) -> StreamingSplit | PatchSplit:
        """Split ``name`` for training: read batch by batch, ``modalities`` only (default all).

        A layout ``patches`` dataset (BigEarthNet: whole images in the split file) is loaded
        whole (``split``).
        """
        if self._scenes is None:
            return self.split(name)
        arrays = read_centres(self.root, name)
        wanted = list(self.channels) if modalities is None else modalities
        stats = {m: self._statistics(m) for m in wanted}
        return StreamingSplit(
            scenes=self._scenes, rows=arrays["row"], cols=arrays["col"],
            scene_of=arrays.get("scene"),
            labels=self._labels(arrays["label"]), patch_size=int(self.manifest["patch_size"]),
            mean={m: s[0] for m, s in stats.items()}, std={m: s[1] for m, s in stats.items()})

    def split(self, name: str) -> PatchSplit:
        """Load split ``name`` (train/val/test), normalised with the training statistics."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        arrays = read_split(self.root, name, self._scenes)
        inputs = {}
        for modality in self.channels:
            mean, std = self._statistics(modality)
            inputs[modality] = torch.from_numpy((arrays[modality] - mean) / std)
        labels = self._labels(arrays["label"])
        block = self.manifest.get("block_size")
        groups = (block_ids(arrays["row"], arrays["col"], int(block))
                  if block and "row" in arrays else np.arange(len(labels)))
        if "scene" in arrays:  # many scenes: a block of one scene is not one of another
            groups = groups + arrays["scene"].astype(np.int64) * 10**13
        return PatchSplit(inputs=inputs, labels=labels, groups=groups)
