import numpy as np
import pytest

from pipeline.evaluation import classification_metrics


def test_metrics_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 2, 2, 2])
    metrics = classification_metrics(y_true, y_pred)
    assert metrics["overall_accuracy"] == pytest.approx(5 / 6)
    # kappa = (po - pe) / (1 - pe), pe = (2*2 + 2*1 + 2*3) / 36 = 1/3
    assert metrics["kappa"] == pytest.approx((5 / 6 - 1 / 3) / (1 - 1 / 3))
    # per-class F1: 1, 2/3, 0.8
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 1])
    assert classification_metrics(y, y) == {"overall_accuracy": 1.0, "kappa": 1.0,
                                            "macro_f1": 1.0}
