"""What the network is trained for: single-label (one class per patch) or multi-label.

One place decides the loss, the decision rule and what counts as correct, so every scheme, the
validation and the evaluation agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"
TASKS = (SINGLE_LABEL, MULTI_LABEL)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Loss of every sample ``(N,)``.

    Cross-entropy, or binary cross-entropy averaged over the classes of a multi-hot label.
    """
    if task == MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    return F.cross_entropy(logits, labels, reduction="none")


def decide(logits: torch.Tensor, task: str, threshold: float = 0.5) -> torch.Tensor:
    """Class indices ``(N,)`` (arg-max), or multi-hot decisions ``(N, C)`` (sigmoid > threshold)."""
    if task == MULTI_LABEL:
        return (torch.sigmoid(logits) > threshold).to(torch.float32)
    return logits.argmax(1)


def correct_and_total(decisions: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Correct decisions and decisions made.

    Counted per sample (single-label), or per sample and class (multi-label: the label
    accuracy, one minus the Hamming loss).
    """
    return float((decisions == labels).sum()), float(labels.numel())
