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
