"""A small trained model of the small prepared scene, shared by the inference tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import ModelParams, TrainParams
from pipeline.data.dataset import PreparedDataset
from pipeline.model_store import save_model
from pipeline.training.job import ParallelSettings
from pipeline.training.trainer import make_job
from pipeline.training.worker import train_worker

MODEL = ModelParams()


@pytest.fixture(scope="session")
def model_dir(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained for four epochs in this process (val accuracy ~0.8, every class)."""
    job = make_job(TrainParams(epochs=4, batch_size=32, learning_rate=0.05), MODEL,
                   prepared_dir)
    result = train_worker(replace(job, parallel=ParallelSettings(workers=1), validate=False))
    out = tmp_path_factory.mktemp("model") / "model"
    save_model(out, result.state_dict, job.model, PreparedDataset.open(prepared_dir).class_names)
    return out
