"""Saving and loading trained models: a plain state dict plus a JSON description.

Loading uses ``torch.load(..., weights_only=True)``: a model folder is data, never code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.errors import DatasetError
from pipeline.io import atomic_path
from pipeline.model import ModelConfig, MultimodalCNN

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "model.json"


def save_model(out_dir: Path, state_dict: dict[str, torch.Tensor], config: ModelConfig,
               class_names: list[str], extra: dict[str, object] | None = None) -> None:
    """Write ``model.pt``, ``model.json`` and any ``extra`` JSON files into ``out_dir``.

    The folder is written atomically.
    """
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        torch.save(state_dict, tmp / WEIGHTS_FILE)
        description = {"config": config.to_dict(), "class_names": class_names}
        (tmp / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")
        for name, content in (extra or {}).items():
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")


def load_model(model_dir: Path | str) -> tuple[MultimodalCNN, list[str]]:
    """The model in ``model_dir`` (in eval mode) and its class names."""
    model_dir = Path(model_dir)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (model_dir / name).is_file():
            raise DatasetError(model_dir / name, "trained model file missing",
                               "run the train stage (`dvc repro train`)")
    description = json.loads((model_dir / CONFIG_FILE).read_text())
    model = MultimodalCNN(ModelConfig(**description["config"]))
    model.load_state_dict(torch.load(model_dir / WEIGHTS_FILE, weights_only=True))
    model.eval()
    return model, list(description["class_names"])
