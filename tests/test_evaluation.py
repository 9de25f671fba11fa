import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.dataset import PatchSplit
from pipeline.evaluation import (
    ABLATION_FILE,
    CONFUSION_JSON,
    CONFUSION_PNG,
    PER_CLASS_FILE,
    block_intervals,
    classification_metrics,
    confusion_scores,
    evaluate_split,
    per_class_scores,
    row_normalised,
    score,
    selection_metrics,
    with_training_mean,
    write_reports,
)
from pipeline.model import ModelConfig, MultimodalCNN
from pipeline.objective import MULTI_LABEL


def test_metrics_match_hand_computed_values() -> None:
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 2, 2, 2])
    metrics = classification_metrics(y_true, y_pred)
    assert metrics["overall_accuracy"] == pytest.approx(5 / 6)
    # kappa = (po - pe) / (1 - pe), pe = (2*2 + 2*1 + 2*3) / 36 = 1/3
    assert metrics["kappa"] == pytest.approx((5 / 6 - 1 / 3) / (1 - 1 / 3))
    # per-class F1: 1, 2/3, 0.8
    assert metrics["macro_f1"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)


def test_weighted_f1_weights_classes_by_support() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 1, 1])
    # F1: class 0 = 2*1*0.75/1.75 = 6/7, class 1 = 2*(2/3)*1/(5/3) = 0.8; supports 4 and 2
    assert classification_metrics(y_true, y_pred)["weighted_f1"] == pytest.approx(
        (4 * 6 / 7 + 2 * 0.8) / 6)


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 2, 1])
    assert classification_metrics(y, y) == {"overall_accuracy": 1.0, "kappa": 1.0,
                                            "macro_f1": 1.0, "weighted_f1": 1.0}


def test_per_class_scores_name_every_class_even_unseen_ones() -> None:
    table = per_class_scores(np.array([0, 0, 1]), np.array([0, 1, 1]), ["water", "forest", "urban"])
    assert [row["class"] for row in table] == ["water", "forest", "urban"]
    assert table[0] == {"class": "water", "precision": 1.0, "recall": 0.5,
                        "f1": pytest.approx(2 / 3), "support": 2}
    assert table[2]["support"] == 0 and table[2]["f1"] == 0.0


def test_row_normalised_rows_sum_to_one_and_empty_rows_stay_zero() -> None:
    out = row_normalised(np.array([[3, 1], [0, 0]]))
    assert out.tolist() == [[0.75, 0.25], [0.0, 0.0]]


def test_training_mean_is_zero_in_the_normalised_input_space() -> None:
    inputs = {"s1": torch.randn(4, 2, 3, 3), "s2": torch.randn(4, 3, 3, 3)}
    out = with_training_mean(inputs, "s1")
    assert torch.equal(out["s1"], torch.zeros(4, 2, 3, 3)) and out["s2"] is inputs["s2"]
    with pytest.raises(ValueError, match="modality must be one of"):
        with_training_mean(inputs, "s3")


def blind_model(task: str = "single_label") -> MultimodalCNN:
    """A model whose head ignores the s1 branch: ablating s1 cannot change a decision."""
    torch.manual_seed(0)
    model = MultimodalCNN(ModelConfig(channels={"s1": 2, "s2": 3}, num_classes=3,
                                      branch_width=4, branch_depth=1, fusion_width=8, task=task))
    with torch.no_grad():
        model.head.hidden.weight[:, :4] = 0.0  # the s1 features come first in the concatenation
    return model.eval()


def split_of(task: str = "single_label", n: int = 60) -> PatchSplit:
    torch.manual_seed(1)
    labels = (torch.randint(0, 3, (n,)) if task == "single_label"
              else torch.randint(0, 2, (n, 3)).float())
    return PatchSplit({"s1": torch.randn(n, 2, 5, 5), "s2": torch.randn(n, 3, 5, 5)}, labels)


def test_ablation_of_an_ignored_modality_changes_nothing() -> None:
    result = evaluate_split(blind_model(), split_of(), ["a", "b", "c"])
    assert result.metrics["ablation_s1_overall_accuracy_drop"] == 0.0
    assert result.metrics["ablation_s1_kappa"] == result.metrics["kappa"]
    assert "ablation_s2_overall_accuracy" in result.metrics
    assert result.confusion.sum() == result.metrics["samples"] == 60


def test_multi_label_evaluation_has_per_class_f1_and_no_confusion_matrix() -> None:
    result = evaluate_split(blind_model(MULTI_LABEL), split_of(MULTI_LABEL), ["a", "b", "c"])
    assert {"micro_f1", "macro_f1", "mean_average_precision", "ablation_s2_micro_f1_drop"} <= set(
        result.metrics)
    assert result.confusion is None
    assert [row["support"] for row in result.per_class] == split_of(MULTI_LABEL).labels.sum(
        0).int().tolist()


def test_reports_are_written_with_class_names(tmp_path: Path) -> None:
    result = evaluate_split(blind_model(), split_of(), ["water", "forest", "urban"])
    written = write_reports(result, tmp_path, title="test")
    assert {p.name for p in written} == {PER_CLASS_FILE, CONFUSION_JSON, CONFUSION_PNG,
                                         ABLATION_FILE}
    confusion = json.loads((tmp_path / CONFUSION_JSON).read_text())
    assert confusion["classes"] == ["water", "forest", "urban"]
    assert np.asarray(confusion["counts"]).sum() == 60
    assert (tmp_path / CONFUSION_PNG).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / PER_CLASS_FILE).read_text().splitlines()[1].startswith("water,")


def test_selection_metrics_are_the_validation_splits_named_val() -> None:
    model, split = blind_model(), split_of()
    expected = score(model(split.inputs).detach(), split.labels, "single_label")
    assert selection_metrics(model, split) == {f"val_{k}": v for k, v in expected.items()}


def test_confusion_scores_equal_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    y_pred[:150] = y_true[:150]
    expected = classification_metrics(y_true, y_pred)
    got = confusion_scores(np.bincount(y_true * 5 + y_pred, minlength=25).reshape(5, 5))
    for name in ("overall_accuracy", "kappa", "macro_f1"):
        assert float(got[name]) == pytest.approx(expected[name]), name


def test_intervals_resample_blocks_not_patches() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 40)
    y_pred = np.where(rng.random(40) < 0.7, y_true, rng.integers(0, 3, 40))
    alone = block_intervals(y_true, y_pred, np.arange(40), "single_label")
    # each sample copied 10 times into its own block: perfectly correlated patches carry no
    # more information, so the interval over blocks must not narrow (one over patches would)
    copied = block_intervals(np.repeat(y_true, 10), np.repeat(y_pred, 10),
                             np.repeat(np.arange(40), 10), "single_label")
    assert copied == pytest.approx(alone)
    by_patch = block_intervals(np.repeat(y_true, 10), np.repeat(y_pred, 10), np.arange(400),
                               "single_label")
    width = alone["overall_accuracy_ci_high"] - alone["overall_accuracy_ci_low"]
    assert by_patch["overall_accuracy_ci_high"] - by_patch["overall_accuracy_ci_low"] < width / 2
    accuracy = classification_metrics(y_true, y_pred)["overall_accuracy"]
    assert alone["overall_accuracy_ci_low"] < accuracy < alone["overall_accuracy_ci_high"]
    assert alone["ci_blocks"] == 40


def test_evaluation_carries_intervals_of_the_headline_metrics() -> None:
    split = split_of()
    result = evaluate_split(blind_model(), PatchSplit(split.inputs, split.labels,
                                                      groups=np.arange(60) // 6), ["a", "b", "c"])
    assert result.metrics["ci_blocks"] == 10
    for name in ("overall_accuracy", "kappa", "macro_f1"):
        assert result.metrics[f"{name}_ci_low"] <= result.metrics[name] \
            <= result.metrics[f"{name}_ci_high"]
    multi = evaluate_split(blind_model(MULTI_LABEL), split_of(MULTI_LABEL), ["a", "b", "c"])
    assert multi.metrics["micro_f1_ci_low"] <= multi.metrics["micro_f1"] \
        <= multi.metrics["micro_f1_ci_high"]
