"""The ingested scene: one GeoTIFF per modality plus a label raster, described by ``scene.json``.

``scene.json`` is the contract between ingestion and preparation: whatever the source (the
synthetic generator today, the user's rasters later), ingestion writes the rasters and this
description, and preparation reads only that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.errors import DatasetError

SCENE_FILE = "scene.json"


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
