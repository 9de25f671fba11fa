"""Data parallelism on real Spark barrier tasks (TorchDistributor, gloo) against one process."""

from pathlib import Path

import pytest
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.errors import TrainingError
from pipeline.model import ModelConfig
from pipeline.training import TrainJob
from pipeline.training.schemes import DataParallel, scheme_for
from pipeline.training.worker import build_model, train_worker

pytestmark = pytest.mark.slow


def job_for(prepared_dir: Path, **overrides: object) -> TrainJob:
    dataset = PreparedDataset.open(prepared_dir)
    settings = dict(
        data_dir=str(prepared_dir),
        model=ModelConfig(channels=dataset.channels, num_classes=len(dataset.class_names),
                          branch_width=8, branch_depth=2, fusion_width=16),
        batch_size=32, epochs=1, learning_rate=0.1, momentum=0.9, seed=5, max_steps=3,
    )
    return TrainJob(**(settings | overrides))


def test_two_spark_workers_compute_the_same_parameters_as_one_process(
        spark: object, prepared_dir: Path) -> None:
    job = job_for(prepared_dir)
    single = train_worker(job)
    distributed = DataParallel(workers=2).fit(spark, job)

    assert distributed.world_size == 2 and distributed.steps == single.steps == 3
    initial = build_model(job).state_dict()
    assert any(not torch.equal(initial[k], single.state_dict[k]) for k in initial)
    assert distributed.state_dict.keys() == single.state_dict.keys()
    for name, expected in single.state_dict.items():
        torch.testing.assert_close(distributed.state_dict[name], expected, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_more_workers_than_task_slots_is_refused_with_the_fix(
        spark: object, prepared_dir: Path) -> None:
    with pytest.raises(TrainingError, match="only 2 task slots.*lower train.workers"):
        DataParallel(workers=3).fit(spark, job_for(prepared_dir))


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="train.scheme must be one of"):
        scheme_for("magic", 2)
