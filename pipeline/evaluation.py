"""Test-split metrics with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

from pipeline.data.dataset import PreparedDataset
from pipeline.model import predict
from pipeline.model_store import load_model


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Overall accuracy, Cohen's kappa and macro F1."""
    return {
        "overall_accuracy": float(accuracy_score(y_true, y_pred)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def evaluate_model(model_dir: Path, data_dir: Path, split: str = "test") -> dict[str, float]:
    """Metrics of the model in ``model_dir`` on ``split`` of the prepared data in ``data_dir``."""
    model, _ = load_model(model_dir)
    data = PreparedDataset.open(data_dir).split(split)
    y_pred = predict(model, data.inputs).numpy()
    metrics = classification_metrics(data.labels.numpy(), y_pred)
    metrics["samples"] = float(len(data))
    return metrics
