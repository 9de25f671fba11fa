"""The reason the product is multimodal: fused beats the best single modality by >= 5 points."""

from pathlib import Path

import pytest

from benchmarks.fusion_gain import mean_interval, modality_accuracies
from pipeline.config import ModelParams, PrepareParams, SyntheticSceneParams, TrainParams


def test_the_gain_is_reported_with_its_interval_over_seeds() -> None:
    # mean 2, sample std 1, three seeds: t(0.975, 2) = 4.303, half-width 4.303 / sqrt(3)
    got = mean_interval([1.0, 2.0, 3.0])
    assert got["mean"] == 2.0
    assert got["ci_high"] - 2.0 == pytest.approx(4.3027 / 3 ** 0.5, rel=1e-4)
    assert got["ci_low"] == pytest.approx(4.0 - got["ci_high"])


@pytest.mark.slow
def test_fused_model_beats_each_single_modality(tmp_path: Path) -> None:
    scene = SyntheticSceneParams(seed=42, height=144, width=144)
    acc = modality_accuracies(scene, PrepareParams(block_size=24), ModelParams(),
                              TrainParams(epochs=6, workers=1), tmp_path)
    best_single = max(acc["optical"], acc["sar"])
    assert acc["fused"] - best_single >= 0.05, acc
