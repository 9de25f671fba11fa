import numpy as np
import pytest
import torch

from pipeline.evaluation import multilabel_metrics
from pipeline.objective import (
    MULTI_LABEL,
    SINGLE_LABEL,
    correct_and_total,
    decide,
    per_sample_loss,
)


def test_single_label_loss_is_cross_entropy_per_sample() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0])
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(per_sample_loss(logits, labels, SINGLE_LABEL), expected)


def test_multi_label_loss_averages_binary_cross_entropy_over_classes() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    torch.testing.assert_close(per_sample_loss(logits, labels, MULTI_LABEL),
                               torch.tensor([np.log(2.0)], dtype=torch.float32))


def test_decisions_are_argmax_or_thresholded_sigmoid() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0]])
    assert decide(logits, SINGLE_LABEL).tolist() == [1]
    assert decide(logits, MULTI_LABEL).tolist() == [[1.0, 1.0, 0.0]]
    assert decide(logits, MULTI_LABEL, threshold=0.6).tolist() == [[0.0, 1.0, 0.0]]


def test_correct_counts_samples_or_labels() -> None:
    assert correct_and_total(torch.tensor([1, 2]), torch.tensor([1, 0])) == (1.0, 2.0)
    assert correct_and_total(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])) == (1.0, 2.0)


def test_multilabel_metrics_match_hand_computed_values() -> None:
    y_true = np.array([[1, 0, 1], [0, 1, 0]])
    y_pred = np.array([[1, 0, 0], [0, 1, 1]])
    scores = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.6]])
    metrics = multilabel_metrics(y_true, y_pred, scores)
    # micro: TP=2, FP=1, FN=1 -> F1 = 2/3; per-class F1: 1, 1, 0
    assert metrics["micro_f1"] == pytest.approx(2 / 3)
    assert metrics["macro_f1"] == pytest.approx(2 / 3)
    # AP per class: 1, 1, 0.5 (the positive of class 3 ranks below a negative)
    assert metrics["mean_average_precision"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert metrics["label_accuracy"] == pytest.approx(4 / 6)
