"""Multi-label training (BigEarthNet's six real example pairs) under a model-parallel scheme."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.config import BigEarthNetParams, ModelParams, PrepareParams, TrainParams
from pipeline.data.bigearthnet import ingest_bigearthnet, prepare_bigearthnet
from pipeline.evaluation import evaluate_model
from pipeline.model_store import save_model
from pipeline.training import ParallelSettings, TrainResult, fit
from pipeline.training.trainer import make_job
from pipeline.training.worker import train_worker

pytestmark = pytest.mark.slow

TRAIN = TrainParams(batch_size=2, epochs=1, workers=2, learning_rate=0.05,
                    model_parallel={"replicas": 1})
MODEL = ModelParams(branch_width=8, branch_depth=1, fusion_width=16)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ben-train")
    ingest_bigearthnet(BigEarthNetParams(split="random"), root, root / "raw")
    prepare_bigearthnet(root / "raw", root / "prepared", PrepareParams(seed=0))
    return root / "prepared"


@pytest.fixture(scope="module")
def results(spark: object, examples: Path) -> dict[str, TrainResult]:
    job = replace(make_job(TRAIN, MODEL, examples, "branch_parallel"), max_steps=2,
                  validate=True)
    single = train_worker(replace(job, parallel=ParallelSettings(workers=1)))
    return {"single": single, "branch_parallel": fit(spark, job, 120)}


def test_multi_label_branch_parallel_equals_one_process(results: dict[str, TrainResult]) -> None:
    single, distributed = results["single"], results["branch_parallel"]
    assert distributed.steps == single.steps == 2
    for key, expected in single.state_dict.items():
        torch.testing.assert_close(distributed.state_dict[key], expected, rtol=1e-5, atol=1e-6)
    assert 0.0 <= distributed.history[-1]["val_accuracy"] <= 1.0  # label accuracy
    assert distributed.history[-1]["loss"] == pytest.approx(single.history[-1]["loss"], rel=1e-5)


def test_multi_label_model_is_evaluated_with_multi_label_metrics(
        results: dict[str, TrainResult], examples: Path, tmp_path: Path) -> None:
    job = make_job(TRAIN, MODEL, examples, "branch_parallel")
    assert job.model.task == "multi_label" and job.model.num_classes == 19
    save_model(tmp_path / "model", results["branch_parallel"].state_dict, job.model,
               [str(i) for i in range(19)])
    metrics = evaluate_model(tmp_path / "model", examples)
    assert set(metrics) == {"micro_f1", "macro_f1", "mean_average_precision", "label_accuracy",
                            "samples"}
    assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "samples")
