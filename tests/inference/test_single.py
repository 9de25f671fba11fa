from pathlib import Path

import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.inference.single import time_single_process
from pipeline.model import predict
from pipeline.model_store import load_model


def test_baseline_predicts_what_predict_does_and_times_every_batch(
        model_dir: Path, prepared_dir: Path) -> None:
    model, _ = load_model(model_dir)
    inputs = PreparedDataset.open(prepared_dir).split("test").inputs
    total = next(iter(inputs.values())).shape[0]
    result = time_single_process(model, inputs, batch_size=50, repeats=3, warmup=1, threads=1)
    assert torch.equal(result.decisions, predict(model, inputs))
    assert len(result.pass_seconds) == 3
    assert len(result.batch_seconds) == 3 * -(-total // 50)
    assert result.metrics()["inference_samples_per_s"] > 0
    assert torch.get_num_threads() >= 1
