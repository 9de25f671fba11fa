"""Run by the cluster tests in their own process (a process has one SparkContext): train each
scheme named on the command line against a Spark master, save what the test checks.

``spec`` is JSON: ``{"train": {...}, "model": {...}}`` overrides of the settings below, and
``"max_steps"`` to stop each run after that many steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.runtime import configure_environment


def train_on_cluster(master: str, data: Path, out: Path, spec: dict, runs: list[str]) -> Path:
    """Run this script for ``runs`` (``scheme`` or ``scheme:workers``) against ``master``.

    Fails the calling test with the script's error output if it fails. Returns ``out``.
    """
    done = subprocess.run(
        [sys.executable, __file__, master, str(data), str(out), json.dumps(spec), *runs],
        capture_output=True, text=True, timeout=600, cwd=out,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def main(master: str, data: str, out: str, spec: str, *schemes: str) -> None:
    configure_environment()
    from pipeline.config import ModelParams, SparkParams, TrainParams
    from pipeline.data.dataset import PreparedDataset
    from pipeline.spark import spark_session
    from pipeline.training import fit
    from pipeline.training.trainer import make_job

    overrides = json.loads(spec)
    train = TrainParams(**{"batch_size": 32, "epochs": 1, "learning_rate": 0.1, "seed": 5,
                           "workers": 2, "checkpoint_every": 0, "timeout_s": 300}
                        | overrides.get("train", {}))
    model = ModelParams(**{"branch_width": 8, "branch_depth": 2, "fusion_width": 16}
                        | overrides.get("model", {}))
    conf = {"spark.executor.cores": "1", "spark.executor.memory": "1g"}
    with spark_session(SparkParams(master=master, conf=conf)) as spark:
        for scheme in schemes:
            scheme, _, workers = scheme.partition(":")  # data_parallel:4 -> 4 workers
            if workers:
                train = train.model_copy(update={"workers": int(workers)})
            name = f"{scheme}_{workers}" if workers else scheme
            job = replace(make_job(train, model, Path(data), scheme),
                          max_steps=overrides.get("max_steps"))
            result = fit(spark, job, PreparedDataset.open(data).manifest["patch_size"])
            torch.save(result.state_dict, Path(out) / f"{name}.pt")
            (Path(out) / f"{name}.json").write_text(json.dumps(
                {"job_seed": job.seed, "steps": result.steps, "workers": result.workers,
                 "metrics": result.metrics()}, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:])
