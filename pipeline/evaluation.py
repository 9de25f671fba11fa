"""Test-split metrics with scikit-learn, for single-label and multi-label models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, average_precision_score, cohen_kappa_score, f1_score

from pipeline.data.dataset import PreparedDataset
from pipeline.model import logits_of
from pipeline.model_store import load_model
from pipeline.objective import MULTI_LABEL, decide


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Single-label: overall accuracy, Cohen's kappa and macro F1."""
    return {
        "overall_accuracy": float(accuracy_score(y_true, y_pred)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       scores: np.ndarray) -> dict[str, float]:
    """Multi-label: micro and macro F1 of the thresholded decisions, mean average precision of
    the scores (over the classes present in ``y_true``), and label accuracy."""
    present = y_true.sum(0) > 0
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mean_average_precision": float(average_precision_score(
            y_true[:, present], scores[:, present], average="macro")) if present.any() else 0.0,
        "label_accuracy": float((y_true == y_pred).mean()),
    }


def evaluate_model(model_dir: Path, data_dir: Path, split: str = "test",
                   threshold: float = 0.5) -> dict[str, float]:
    """Metrics of the model in ``model_dir`` on ``split`` of the prepared data in ``data_dir``.

    ``threshold`` turns multi-label scores (sigmoid of the logits) into decisions.
    """
    model, _ = load_model(model_dir)
    data = PreparedDataset.open(data_dir).split(split)
    logits = logits_of(model, data.inputs)
    decisions = decide(logits, model.config.task, threshold).numpy()
    if model.config.task == MULTI_LABEL:
        metrics = multilabel_metrics(data.labels.numpy(), decisions,
                                     torch.sigmoid(logits).numpy())
    else:
        metrics = classification_metrics(data.labels.numpy(), decisions)
    metrics["samples"] = float(len(data))
    return metrics
