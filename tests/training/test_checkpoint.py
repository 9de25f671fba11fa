"""Checkpoints belong to one job and one prepared dataset; a resumed run says where it started."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.model import ModelConfig
from pipeline.training import Fault, ParallelSettings, TrainJob
from pipeline.training.checkpoint import Checkpointer, Position, job_key
from pipeline.training.worker import train_worker


def tiny_job(data: Path, **changes: object) -> TrainJob:
    dataset = PreparedDataset.open(data)
    job = TrainJob(data_dir=str(data),
                   model=ModelConfig(channels=dataset.channels,
                                     num_classes=len(dataset.class_names), branch_width=4,
                                     branch_depth=1, fusion_width=8),
                   batch_size=32, epochs=1, learning_rate=0.1, momentum=0.9, seed=5,
                   validate=False, parallel=ParallelSettings(workers=1))
    return replace(job, **changes)


@pytest.fixture
def data(prepared_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(prepared_dir, tmp_path / "prepared"))


def reprepare(data: Path) -> None:
    """The same path holding a dataset prepared again: its fingerprint changes."""
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["fingerprint"] = "another-split"
    (data / "manifest.json").write_text(json.dumps(manifest))


def test_the_checkpoint_key_includes_the_prepared_datas_fingerprint(data: Path) -> None:
    before = job_key(tiny_job(data))
    assert job_key(tiny_job(data, max_steps=3, timeout_s=5)) == before  # limits do not count
    reprepare(data)
    assert job_key(tiny_job(data)) != before


def test_a_checkpoint_of_other_data_at_the_same_path_is_not_resumed(data: Path,
                                                                   tmp_path: Path) -> None:
    job = tiny_job(data, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "position.json").write_text(json.dumps(
        {"key": job_key(job), "world_size": 1, "position": vars(Position(steps=2))}))
    reprepare(data)
    assert Checkpointer(job, 0, 1).restore(strategy=None) is None


def test_a_resumed_run_starts_at_the_checkpoint_and_runs_only_the_rest(data: Path,
                                                                     tmp_path: Path) -> None:
    job = tiny_job(data, checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_every=2,
                   max_steps=5)
    fresh = train_worker(replace(job, checkpoint_dir=None))
    assert (fresh.resumed_from_step, fresh.steps_run, fresh.steps) == (0, 5, 5)
    with pytest.raises(RuntimeError, match="injected fault at step 4"):  # checkpoint of step 2
        train_worker(replace(job, fault=Fault(rank=0, step=4, kind="crash")))
    resumed = train_worker(job)
    # a rerun that ignored the checkpoint would end with the same parameters: these tell
    assert (resumed.resumed_from_step, resumed.steps_run, resumed.steps) == (2, 3, 5)
    assert resumed.metrics()["resumed_from_step"] == 2.0
    for key, expected in fresh.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[key], expected, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "ckpt").exists()  # cleared once finished
