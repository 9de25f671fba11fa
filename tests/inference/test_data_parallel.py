"""Data-parallel inference on real Spark: the model broadcast, mapPartitions over the shards."""

from pathlib import Path

import pytest
import torch

from pipeline.config import BigEarthNetParams, PrepareParams
from pipeline.data.bigearthnet import ingest_bigearthnet, prepare_bigearthnet
from pipeline.data.dataset import PreparedDataset
from pipeline.inference.data_parallel import shard_ranges, time_data_parallel
from pipeline.inference.job import InferJob, timed_inputs
from pipeline.model import ModelConfig, MultimodalCNN, predict
from pipeline.model_store import load_model, save_model
from pipeline.objective import MULTI_LABEL
from pipeline.training.job import ParallelSettings

pytestmark = pytest.mark.slow


def test_spark_workers_predict_what_one_process_predicts(spark: object, model_dir: Path,
                                                         prepared_dir: Path) -> None:
    model, _ = load_model(model_dir)
    samples = 300  # more than the split: the samples repeat, in order
    job = InferJob(model_dir=str(model_dir), data_dir=str(prepared_dir),
                   parallel=ParallelSettings(workers=2), samples=samples, batch_size=64,
                   repeats=2, warmup=1)
    result = time_data_parallel(spark, job)
    assert torch.equal(result.decisions,
                       predict(model, timed_inputs(str(prepared_dir), "test", samples)))
    assert len(result.pass_seconds) == 2
    assert len(result.batch_seconds) == 2 * (3 + 3)  # 2 passes of 2 shards of 150: 64+64+22
    assert result.bytes_moved < samples * 4 + 200  # decisions and shard ranges, not inputs
    assert result.model_bytes_shipped > 0


def test_multi_label_decisions_come_back_as_multi_hot_rows(
        spark: object, tmp_path: Path) -> None:
    ingest_bigearthnet(BigEarthNetParams(split="random"), tmp_path, tmp_path / "raw")
    prepare_bigearthnet(tmp_path / "raw", tmp_path / "prepared", PrepareParams(seed=0))
    dataset = PreparedDataset.open(tmp_path / "prepared")
    torch.manual_seed(0)
    config = ModelConfig(channels=dataset.channels, num_classes=len(dataset.class_names),
                         branch_width=4, branch_depth=1, fusion_width=8, task=MULTI_LABEL)
    save_model(tmp_path / "model", MultimodalCNN(config).state_dict(), config,
               dataset.class_names)
    job = InferJob(model_dir=str(tmp_path / "model"), data_dir=str(tmp_path / "prepared"),
                   parallel=ParallelSettings(workers=2), samples=40, batch_size=16, repeats=1)
    result = time_data_parallel(spark, job)
    model, _ = load_model(tmp_path / "model")
    expected = predict(model, timed_inputs(job.data_dir, "test", 40), threshold=0.5)
    assert torch.equal(result.decisions, expected)


def test_shards_are_contiguous_and_cover_every_sample() -> None:
    assert shard_ranges(10, 3) == [(0, 0, 3), (1, 3, 7), (2, 7, 10)]
    assert shard_ranges(1, 2) == [(0, 0, 0), (1, 0, 1)]
