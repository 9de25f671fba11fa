"""The whole pipeline as one Prefect flow: every stage as a subflow, each recorded in DVC.

Run it from the project root (paths in ``params.yaml`` and ``flows.layout`` are relative to it,
as they are for ``dvc repro``). After each stage, ``dvc commit`` records the stage's outputs in
``dvc.lock``, so a Prefect-run pipeline leaves DVC exactly as ``dvc repro`` would: ``dvc status``
clean, and a following ``dvc repro`` runs nothing.
"""

from __future__ import annotations

import subprocess
import sys

from prefect import flow, task

from flows._cli import run_stage
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from flows.layout import LAYOUT
from flows.prepare import prepare_flow
from flows.train import train_flow
from pipeline.config import Params, load_params
from pipeline.runtime import project_lock


@task(retries=2, retry_delay_seconds=[2, 5, 15])
def record_stage(stage: str) -> None:
    """Record ``stage``'s current deps and outs in ``dvc.lock`` (``dvc commit --force``)."""
    subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", stage],
                   check=True)


@flow(name="landcover-pipeline", log_prints=True)
def pipeline_flow(params: str = LAYOUT.params, record_in_dvc: bool = True) -> dict:
    """Ingest, prepare, then train and evaluate every scheme of ``train.compare``; record each
    stage in DVC. Returns the MLflow run id and test metrics of each scheme.

    One pipeline run at a time per project: a second one started meanwhile is refused
    (:class:`~pipeline.errors.PipelineBusyError`) instead of interleaving outputs.
    """
    config = load_params(params)  # fail fast on bad params, before any stage runs
    with project_lock(LAYOUT.lock):
        return _run_stages(params, config, record_in_dvc)


def _run_stages(params: str, config: Params, record_in_dvc: bool) -> dict:
    def done(stage: str) -> None:
        if record_in_dvc:
            record_stage(stage)

    ingest_flow(params=params, out=LAYOUT.raw)
    done("ingest")
    prepare_flow(params=params, raw=LAYOUT.raw, out=LAYOUT.prepared)
    done("prepare")
    results = {}
    for scheme in config.train.compare:
        trained = train_flow(params=params, data=LAYOUT.prepared,
                             out=LAYOUT.model_dir(scheme), scheme=scheme)
        done(f"train@{scheme}")
        metrics = evaluate_flow(params=params, model=LAYOUT.model_dir(scheme),
                                data=LAYOUT.prepared, metrics=LAYOUT.metrics_file(scheme))
        done(f"evaluate@{scheme}")
        results[scheme] = {"run_id": trained["run_id"], **metrics}
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.pipeline [--params P]``."""
    run_stage(pipeline_flow, __doc__, {"params": LAYOUT.params}, argv)


if __name__ == "__main__":
    main()
