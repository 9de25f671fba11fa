"""The ingested scene: one GeoTIFF per modality plus a label raster, described by ``scene.json``.

``scene.json`` is the contract between ingestion and preparation: whatever the source (the
synthetic generator today, the user's rasters later), ingestion writes the rasters and this
description, and preparation reads only that. Many scenes: the ingested folder holds one scene
folder per scene, ``<name>/``, and ``scenes.json`` lists their names in order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.errors import DatasetError

SCENE_FILE = "scene.json"
SCENES_FILE = "scenes.json"  # many scenes: {"scenes": [name, ...]}, each a folder <name>/


def scene_folders(raw: Path) -> dict[str | None, Path]:
    """The scene folders of an ingested folder, by scene name (``None``: one unnamed scene).

    ``raw`` itself when it holds one scene (``scene.json``), else the folders that
    ``scenes.json`` lists.
    """
    raw = Path(raw)
    index = raw / SCENES_FILE
    if not index.is_file():
        return {None: raw}
    try:
        names = json.loads(index.read_text())["scenes"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(index, f"malformed scene list ({exc!r})",
                           "re-run the ingest stage to rewrite it") from exc
    return {str(name): raw / str(name) for name in names}


def holds_scenes(raw: Path) -> bool:
    """Whether ``raw`` holds an ingested scene, or many (not BigEarthNet patches)."""
    return (Path(raw) / SCENE_FILE).is_file() or (Path(raw) / SCENES_FILE).is_file()


@dataclass(frozen=True)
class Modality:
    """One sensor's raster: its file (relative to the scene folder) and band names.

    ``source`` is the user's original file or folder it was aligned from (None when generated).
    """

    path: str
    kind: Literal["optical", "sar"]
    bands: list[str]
    source: str | None = None


@dataclass(frozen=True)
class SceneDescription:
    """The modalities, label raster and class map of an ingested scene."""

    modalities: dict[str, Modality]
    labels: str
    classes: dict[int, str]
    ignore_codes: list[int] = field(default_factory=lambda: [0])
    source: str = "synthetic"

    def save(self, folder: Path) -> None:
        """Write ``scene.json`` into ``folder`` (the caller makes the folder atomic)."""
        (folder / SCENE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> SceneDescription:
        """Read ``folder/scene.json``.

        Raises:
            DatasetError: the file is missing or malformed.
        """
        path = Path(folder) / SCENE_FILE
        if not path.is_file():
            raise DatasetError(path, "scene description not found",
                               "run the ingest stage first (`dvc repro ingest`)")
        try:
            raw = json.loads(path.read_text())
            return cls(
                modalities={name: Modality(**m) for name, m in raw["modalities"].items()},
                labels=raw["labels"],
                classes={int(code): name for code, name in raw["classes"].items()},
                ignore_codes=[int(c) for c in raw.get("ignore_codes", [0])],
                source=raw.get("source", "unknown"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(path, f"malformed scene description ({exc!r})",
                               "re-run the ingest stage to rewrite it") from exc
