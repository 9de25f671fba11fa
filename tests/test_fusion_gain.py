"""The reason the product is multimodal: fused beats the best single modality by >= 5 points."""

from pathlib import Path

import pytest

from benchmarks.fusion_gain import modality_accuracies
from pipeline.config import ModelParams, PrepareParams, SyntheticSceneParams, TrainParams

pytestmark = pytest.mark.slow


def test_fused_model_beats_each_single_modality(tmp_path: Path) -> None:
    scene = SyntheticSceneParams(seed=42, height=144, width=144)
    acc = modality_accuracies(scene, PrepareParams(block_size=24), ModelParams(),
                              TrainParams(epochs=6, workers=1), tmp_path)
    best_single = max(acc["optical"], acc["sar"])
    assert acc["fused"] - best_single >= 0.05, acc
