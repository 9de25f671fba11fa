"""Data-parallel inference on real Spark: the model broadcast, mapInArrow over the partitions."""

from pathlib import Path

import pytest
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.inference.data_parallel import samples_table, time_data_parallel
from pipeline.model import ModelConfig, MultimodalCNN, predict
from pipeline.model_store import load_model
from pipeline.objective import MULTI_LABEL

pytestmark = pytest.mark.slow


def test_spark_workers_predict_what_one_process_predicts(spark: object, model_dir: Path,
                                                         prepared_dir: Path) -> None:
    model, _ = load_model(model_dir)
    inputs = PreparedDataset.open(prepared_dir).split("test").inputs
    total = next(iter(inputs.values())).shape[0]
    result = time_data_parallel(spark, model, inputs, batch_size=64, workers=2, repeats=2,
                                warmup=1)
    assert torch.equal(result.decisions, predict(model, inputs))
    assert len(result.pass_seconds) == 2
    assert len(result.batch_seconds) >= 2 * -(-total // 64)  # every batch of every pass timed
    assert result.bytes_moved >= samples_table(inputs).nbytes  # the inputs cross to Python
    assert result.model_bytes_shipped > 0


def test_multi_label_decisions_come_back_as_multi_hot_rows(spark: object) -> None:
    torch.manual_seed(0)
    model = MultimodalCNN(ModelConfig(channels={"s1": 2, "s2": 3}, num_classes=11,
                                      branch_width=4, branch_depth=1, fusion_width=8,
                                      task=MULTI_LABEL))
    inputs = {"s1": torch.randn(40, 2, 5, 5), "s2": torch.randn(40, 3, 5, 5)}
    result = time_data_parallel(spark, model, inputs, batch_size=16, workers=2, repeats=1,
                                warmup=1, threshold=0.5)
    assert torch.equal(result.decisions, predict(model, inputs, threshold=0.5))
