"""Shared set-up of the benchmarks: the machine they ran on, the data, where figures go."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import psutil

from pipeline.config import Params
from pipeline.data.prepare import prepare_dataset
from pipeline.data.synthetic import write_synthetic_scene
from pipeline.io import write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def prepared_default_data(params: Params, workdir: Path) -> Path:
    """The default scene of ``params``, ingested and prepared under ``workdir``."""
    raw, prepared = workdir / "raw", workdir / "prepared"
    if not (prepared / "manifest.json").exists():
        write_synthetic_scene(params.ingest.synthetic, raw)
        prepare_dataset(raw, prepared, params.prepare)
    return prepared


def save(name: str, figures: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically; returns its path."""
    path = RESULTS / f"{name}.json"
    write_json(path, figures)
    return path


def load(name: str) -> dict:
    """Read a benchmark's latest figures."""
    return json.loads((RESULTS / f"{name}.json").read_text())
