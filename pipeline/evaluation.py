"""Test-split metrics with scikit-learn, for single-label and multi-label models.

:func:`selection_metrics` scores the validation split (``val_*``), on which the compare stage
chooses the model; the test split is only reported.

:func:`evaluate_split` scores a model on a split and repeats the scoring with each modality
replaced by its training mean (the modality ablation), so a user sees how much each modality
contributes. Its result has a flat dictionary of numbers (the DVC metrics file, MLflow metrics)
and the tables behind it (per-class scores, the confusion matrix), which
:func:`write_reports` writes as CSV, JSON and a confusion-matrix PNG.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from pipeline.data.dataset import PatchSplit, PreparedDataset
from pipeline.model import MultimodalCNN, logits_of
from pipeline.model_store import load_model
from pipeline.objective import MULTI_LABEL, SINGLE_LABEL, decide

PER_CLASS_FILE = "per_class.csv"
CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"
ABLATION_FILE = "ablation.json"

HEADLINE = {"single_label": "overall_accuracy", "multi_label": "micro_f1"}


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Single-label: overall accuracy, Cohen's kappa, macro and weighted F1."""
    return {
        "overall_accuracy": float(accuracy_score(y_true, y_pred)),
        "kappa": float(cohen_kappa_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       scores: np.ndarray) -> dict[str, float]:
    """Multi-label metrics: micro and macro F1, mean average precision and label accuracy.

    F1 is of the thresholded decisions, mean average precision of the scores (over the classes
    present in ``y_true``).
    """
    present = y_true.sum(0) > 0
    return {
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "mean_average_precision": float(average_precision_score(
            y_true[:, present], scores[:, present], average="macro")) if present.any() else 0.0,
        "label_accuracy": float((y_true == y_pred).mean()),
    }


def per_class_scores(y_true: np.ndarray, y_pred: np.ndarray,
                     class_names: list[str]) -> list[dict[str, float | str]]:
    """Precision, recall, F1 and support of every class (single-label indices or multi-hot)."""
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=None if y_true.ndim == 2 else labels, zero_division=0)
    return [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f),
             "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)]


def score(logits: torch.Tensor, labels: torch.Tensor, task: str,
          threshold: float = 0.5) -> dict[str, float]:
    """The headline metrics of ``logits`` against ``labels`` for ``task``."""
    decisions = decide(logits, task, threshold).numpy()
    if task == MULTI_LABEL:
        return multilabel_metrics(labels.numpy(), decisions, torch.sigmoid(logits).numpy())
    return classification_metrics(labels.numpy(), decisions)


def with_training_mean(inputs: dict[str, torch.Tensor], modality: str) -> dict[str, torch.Tensor]:
    """``inputs`` with ``modality`` replaced by its training mean.

    The prepared inputs are normalised with the training split's per-band mean and standard
    deviation, so the training mean of every band is exactly zero in the network's input space.
    """
    if modality not in inputs:
        raise ValueError(f"modality must be one of {sorted(inputs)}, got {modality!r}")
    return inputs | {modality: torch.zeros_like(inputs[modality])}


@dataclass
class Evaluation:
    """A model's scores on one split: flat metrics plus the tables behind them."""

    task: str
    class_names: list[str]
    metrics: dict[str, float]
    per_class: list[dict[str, float | str]]
    confusion: np.ndarray | None = None  # single-label: counts, true class by row
    ablation: dict[str, dict[str, float]] = field(default_factory=dict)


def evaluate_split(model: MultimodalCNN, split: PatchSplit, class_names: list[str],
                   threshold: float = 0.5, ablation: bool = True,
                   resamples: int = 1000) -> Evaluation:
    """Score ``model`` on ``split``.

    With ``ablation``, score it once more per modality replaced by its training mean.

    ``metrics`` holds the headline metrics, their 95 % intervals (``<metric>_ci_low``/``_high``,
    ``block_intervals`` over the split's blocks, ``split.groups``; each sample its own block
    when the split has none), ``samples``, and per modality ``m``
    ``ablation_<m>_<metric>`` and ``ablation_<m>_<metric>_drop`` (full minus ablated) for every
    headline metric.
    """
    task = model.config.task
    logits = logits_of(model, split.inputs)
    metrics = score(logits, split.labels, task, threshold)
    decisions = decide(logits, task, threshold).numpy()
    labels = split.labels.numpy()
    result = Evaluation(task=task, class_names=list(class_names), metrics=dict(metrics),
                        per_class=per_class_scores(labels, decisions, class_names))
    if task != MULTI_LABEL:
        result.confusion = confusion_matrix(labels, decisions,
                                            labels=list(range(len(class_names))))
    groups = split.groups if split.groups is not None else np.arange(len(split))
    result.metrics |= block_intervals(labels, decisions, groups, task, resamples)
    result.metrics["samples"] = float(len(split))
    if ablation and len(split.inputs) > 1:
        for modality in split.inputs:
            ablated = score(logits_of(model, with_training_mean(split.inputs, modality)),
                            split.labels, task, threshold)
            result.ablation[modality] = ablated
            for key, value in ablated.items():
                result.metrics[f"ablation_{modality}_{key}"] = value
                result.metrics[f"ablation_{modality}_{key}_drop"] = metrics[key] - value
    return result


def selection_metrics(model: MultimodalCNN, split: PatchSplit,
                      threshold: float = 0.5) -> dict[str, float]:
    """The headline metrics on the validation split, named ``val_<metric>``.

    ``compare.metric`` chooses the registered model on these: the test split is only reported.
    """
    logits = logits_of(model, split.inputs)
    metrics = score(logits, split.labels, model.config.task, threshold)
    return {f"val_{key}": value for key, value in metrics.items()}


def evaluate_model(model_dir: Path, data_dir: Path, split: str = "test",
                   threshold: float = 0.5) -> dict[str, float]:
    """Headline metrics of the model in ``model_dir`` on ``split`` of the data in ``data_dir``.

    ``threshold`` turns multi-label scores (sigmoid of the logits) into decisions.
    """
    model, _ = load_model(model_dir)
    data = PreparedDataset.open(data_dir).split(split)
    logits = logits_of(model, data.inputs)
    metrics = score(logits, data.labels, model.config.task, threshold)
    metrics["samples"] = float(len(data))
    return metrics


# ---------------------------------------------------------------------------------------------
# Reports: files a person reads (and MLflow artifacts).


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the recall of the true class on the diagonal); 0 rows stay 0."""
    sums = matrix.sum(axis=1, keepdims=True)
    normalised: np.ndarray = np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=np.float64),
                                       where=sums > 0)
    return normalised


def plot_confusion(matrix: np.ndarray, class_names: list[str], out: Path,
                   title: str = "") -> None:
    """Counts and row-normalised confusion matrices side by side, labelled, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    size = max(4.0, 0.6 * k + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size))
    normalised = row_normalised(matrix)
    for ax, values, name, fmt in [(axes[0], matrix, "counts", "{:d}"),
                                  (axes[1], normalised, "row-normalised (recall)", "{:.2f}")]:
        image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), class_names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{title} {name}".strip(), fontsize=10)
        for i in range(k):
            for j in range(k):
                value = int(values[i, j]) if values is matrix else float(values[i, j])
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7,
                        color="white" if normalised[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=axes, fraction=0.025)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_reports(evaluation: Evaluation, out_dir: Path, title: str = "") -> list[Path]:
    """Write the evaluation's reports into ``out_dir`` (which must exist).

    These are the per-class table (CSV), the confusion matrix (JSON and PNG) and the ablation
    (JSON). Returns the files written.
    """
    out_dir = Path(out_dir)
    written = [out_dir / PER_CLASS_FILE]
    with open(written[0], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["class", "precision", "recall", "f1",
                                                    "support"])
        writer.writeheader()
        writer.writerows(evaluation.per_class)
    if evaluation.confusion is not None:
        matrix = evaluation.confusion
        (out_dir / CONFUSION_JSON).write_text(json.dumps({
            "classes": evaluation.class_names, "rows": "true class", "columns": "predicted class",
            "counts": matrix.tolist(), "row_normalised": row_normalised(matrix).round(6).tolist(),
        }, indent=2) + "\n")
        plot_confusion(matrix, evaluation.class_names, out_dir / CONFUSION_PNG, title)
        written += [out_dir / CONFUSION_JSON, out_dir / CONFUSION_PNG]
    if evaluation.ablation:
        headline = {k: v for k, v in evaluation.metrics.items()
                    if not k.startswith(("ablation_", "ci_")) and "_ci_" not in k
                    and k != "samples"}
        (out_dir / ABLATION_FILE).write_text(json.dumps(
            {"all_modalities": headline,
             "replaced_by_training_mean": evaluation.ablation}, indent=2) + "\n")
        written.append(out_dir / ABLATION_FILE)
    return written


# ---------------------------------------------------------------------------------------------
# Uncertainty: 95 % intervals by resampling whole spatial blocks (a block's patches correlate).

INTERVAL_METRICS = {SINGLE_LABEL: ("overall_accuracy", "kappa", "macro_f1"),
                    MULTI_LABEL: ("micro_f1", "macro_f1")}


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    out = np.zeros(np.shape(denominator))
    np.divide(2 * tp, denominator, out=out, where=denominator > 0)
    return out


def confusion_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Overall accuracy, Cohen's kappa and macro F1 of confusion matrices ``(..., K, K)``.

    The same figures as ``classification_metrics`` (macro F1 over the classes seen in the
    truth or the predictions, as scikit-learn's), for a stack of matrices at once.
    """
    total = confusion.sum(axis=(-2, -1)).astype(np.float64)
    tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    truth, predicted = confusion.sum(axis=-1), confusion.sum(axis=-2)
    accuracy = tp.sum(axis=-1) / total
    chance = (truth * predicted).sum(axis=-1) / np.square(total)
    kappa = np.divide(accuracy - chance, 1 - chance, out=np.zeros(total.shape),
                      where=chance < 1)
    seen = (truth + predicted) > 0
    f1 = _f1(tp, predicted - tp, truth - tp)
    macro = (f1 * seen).sum(axis=-1) / np.maximum(seen.sum(axis=-1), 1)
    return {"overall_accuracy": accuracy, "kappa": kappa, "macro_f1": macro}


def _multilabel_scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    return {"micro_f1": _f1(tp.sum(axis=-1), fp.sum(axis=-1), fn.sum(axis=-1)),
            "macro_f1": _f1(tp, fp, fn).mean(axis=-1)}


def block_intervals(labels: np.ndarray, decisions: np.ndarray, groups: np.ndarray, task: str,
                    resamples: int = 1000, seed: int = 0, level: float = 0.95
                    ) -> dict[str, float]:
    """Percentile bootstrap intervals of the headline metrics, resampling whole groups.

    ``groups`` names each sample's spatial block: the patches of a block are correlated, so
    the blocks (not the patches) are drawn with replacement, ``resamples`` times (seeded: every
    scheme's evaluation draws the same blocks). Returns ``<metric>_ci_low``/``_ci_high`` for
    ``INTERVAL_METRICS[task]`` and ``ci_blocks``, the number of blocks.
    """
    _, group = np.unique(groups, return_inverse=True)
    blocks = int(group.max(initial=-1)) + 1
    draws = np.random.default_rng(seed).integers(0, blocks, (resamples, blocks))
    weights = np.zeros((resamples, blocks))
    np.add.at(weights, (np.repeat(np.arange(resamples), blocks), draws.ravel()), 1)
    if task == MULTI_LABEL:
        truth, said = labels.astype(bool), decisions.astype(bool)
        per_sample = np.stack([truth & said, ~truth & said, truth & ~said], axis=-1)
        per_block = np.zeros((blocks, *per_sample.shape[1:]))
        np.add.at(per_block, group, per_sample)
        scores = _multilabel_scores(np.tensordot(weights, per_block, axes=1))
    else:
        classes = int(max(labels.max(initial=0), decisions.max(initial=0))) + 1
        per_block = np.zeros((blocks, classes, classes))
        np.add.at(per_block, (group, labels, decisions), 1)
        scores = confusion_scores(np.tensordot(weights, per_block, axes=1))
    tail = 100 * (1 - level) / 2
    out = {"ci_blocks": float(blocks)}
    for name in INTERVAL_METRICS[task]:
        low, high = np.percentile(scores[name], [tail, 100 - tail])
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = float(low), float(high)
    return out
