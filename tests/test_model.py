from dataclasses import replace

import pytest
import torch

from pipeline.model import ModelConfig, MultimodalCNN, predict

CONFIG = ModelConfig(channels={"optical": 4, "sar": 2}, num_classes=6, branch_width=8,
                     branch_depth=2, fusion_width=16)


def inputs(batch: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"optical": torch.randn(batch, 4, 9, 9), "sar": torch.randn(batch, 2, 9, 9)}


def test_logits_have_one_column_per_class() -> None:
    assert MultimodalCNN(CONFIG)(inputs(5)).shape == (5, 6)


def test_one_branch_per_modality() -> None:
    model = MultimodalCNN(CONFIG)
    assert set(model.branches) == {"optical", "sar"}


def test_a_sample_does_not_depend_on_its_batch() -> None:
    # Needed for data parallelism to equal single-process training (no BatchNorm).
    model = MultimodalCNN(CONFIG)
    x = inputs(8)
    whole = model(x)
    halves = torch.cat([model({k: v[:4] for k, v in x.items()}),
                        model({k: v[4:] for k, v in x.items()})])
    torch.testing.assert_close(whole, halves)


def test_missing_modality_is_named() -> None:
    with pytest.raises(KeyError, match="sar"):
        MultimodalCNN(CONFIG)({"optical": torch.randn(2, 4, 9, 9)})


def test_predict_returns_argmax_in_batches() -> None:
    model = MultimodalCNN(CONFIG)
    x = inputs(10)
    expected = model(x).argmax(1)
    torch.testing.assert_close(predict(model, x, batch_size=3), expected)


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        ModelConfig(channels={"optical": 4}, num_classes=1)


def test_downsampling_halves_the_side_and_doubles_the_width() -> None:
    from pipeline.training.layout import activation_shapes

    config = ModelConfig(channels={"optical": 4}, num_classes=3, branch_width=8,
                         branch_depth=4, fusion_width=16, downsample_every=2)
    assert config.block_widths == (8, 8, 16, 16)
    shapes = activation_shapes(MultimodalCNN(config), 33)
    assert shapes["optical/block0"] == (8, 33, 33)
    assert shapes["optical/block1"] == (8, 17, 17)  # 2x2 max-pool, ceil: 33 -> 17
    assert shapes["optical/block2"] == (16, 17, 17)
    assert shapes["optical/features"] == (16,)  # the last block pools globally, not 2x2


def test_downsampling_adds_no_parameters_to_the_state_dict() -> None:
    plain = MultimodalCNN(replace(CONFIG, downsample_every=0)).state_dict()
    pooled = MultimodalCNN(replace(CONFIG, branch_depth=2, downsample_every=1)).state_dict()
    assert list(plain) == list(pooled)


def test_model_sizes_reach_ten_megabytes() -> None:
    from pipeline.config import ModelParams

    def parameter_bytes(size: str) -> int:
        config = ModelConfig(channels={"optical": 4, "sar": 2}, num_classes=6,
                             **ModelParams(size=size).shape())
        return sum(p.numel() * 4 for p in MultimodalCNN(config).parameters())

    assert parameter_bytes("tiny") == 8166 * 4  # the default: make run's model
    assert parameter_bytes("tiny") < parameter_bytes("small") < parameter_bytes("large")
    assert parameter_bytes("large") >= 10_000_000


def test_a_key_set_beside_a_size_overrides_it() -> None:
    from pipeline.config import ModelParams

    assert ModelParams(size="large").branch_width == 64
    assert ModelParams(size="large", branch_width=32).shape() == {
        "branch_width": 32, "branch_depth": 6, "fusion_width": 512, "downsample_every": 2}
