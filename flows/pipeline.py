"""The whole pipeline as one Prefect flow: every stage as a subflow, each recorded in DVC.

Run it from the project root (paths in ``params.yaml`` and ``flows.layout`` are relative to it,
as they are for ``dvc repro``). After each stage, ``dvc commit`` records the stage's outputs in
``dvc.lock``, so a Prefect-run pipeline leaves DVC exactly as ``dvc repro`` would: ``dvc status``
clean, and a following ``dvc repro`` runs nothing. The stages share this process's imports and
one Spark application, started once (as they share the stage host's under ``make run``).

Overrides (``schemes``, ``overrides={"train.epochs": 1}``) are written into ``params.yaml``
first, as ``dvc exp run -S`` does, so ``dvc.lock`` records the values the run used. The MLflow
runs are those of ``dvc repro``: one parent run (opened once the data is prepared, closed by the
compare stage), a child per scheme.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import yaml
from prefect import flow, task

from flows._cli import reporting_user_errors
from flows.compare import compare_flow
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from flows.layout import LAYOUT
from flows.prepare import prepare_flow
from flows.train import train_flow
from pipeline.config import Params, load_params, write_overrides
from pipeline.data.prepared_store import dataset_fingerprint
from pipeline.runtime import project_lock
from pipeline.spark import spark_session
from pipeline.tracking import (
    dvc_out_hash,
    failing_pipeline_run,
    git_commit,
    open_pipeline_run,
)


@task(retries=2, retry_delay_seconds=[2, 5, 15])
def record_stage(stage: str) -> None:
    """Record ``stage``'s current deps and outs in ``dvc.lock`` (``dvc commit --force``)."""
    subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", stage],
                   check=True)


@flow(name="landcover-pipeline", log_prints=True)
def pipeline_flow(params: str = LAYOUT.params, schemes: list[str] | None = None,
                  overrides: dict[str, Any] | None = None, record_in_dvc: bool = True) -> dict:
    """Ingest, prepare, train and evaluate every scheme of ``train.compare``, compare them.

    ``schemes`` replaces ``train.compare``; ``overrides`` sets dotted keys of ``params.yaml``
    (written into the file before any stage runs). Each stage is recorded in DVC. Returns the
    parent MLflow run id, each scheme's run id and test metrics, and the registered model.

    One pipeline run at a time per project: a second one started meanwhile is refused
    (:class:`~pipeline.errors.PipelineBusyError`) instead of interleaving outputs.
    """
    load_params(params)  # fail fast on bad params, before anything is written
    with project_lock(LAYOUT.pipeline_lock):
        changes = dict(overrides or {})
        if schemes:
            changes["train.compare"] = list(schemes)
        config = write_overrides(params, changes) if changes else load_params(params)
        if changes:
            print(f"params.yaml updated: {changes}")
        return _run_stages(params, config, record_in_dvc)


def _run_stages(params: str, config: Params, record_in_dvc: bool) -> dict:
    """Every stage in this process, on one Spark application (each stage finds it active)."""
    with spark_session(config.spark):
        return _stages(params, config, record_in_dvc)


def _stages(params: str, config: Params, record_in_dvc: bool) -> dict:
    def done(stage: str) -> None:
        if record_in_dvc:
            record_stage(stage)

    ingest_flow(params=params, out=LAYOUT.raw)
    done("ingest")
    prepare_flow(params=params, raw=LAYOUT.raw, out=LAYOUT.prepared)
    done("prepare")
    data_hash = dataset_fingerprint(LAYOUT.prepared)
    parent = open_pipeline_run(config, data_hash, tags={
        "data_hash": data_hash, "git_commit": git_commit(),
        "dvc_data_md5": dvc_out_hash(LAYOUT.lock, LAYOUT.prepared), "orchestrator": "prefect"})
    results = {}
    with failing_pipeline_run(config.tracking, parent):
        for scheme in config.train.compare:
            trained = train_flow(params=params, data=LAYOUT.prepared,
                                 out=LAYOUT.model_dir(scheme), scheme=scheme)
            done(f"train@{scheme}")
            metrics = evaluate_flow(params=params, model=LAYOUT.model_dir(scheme),
                                    data=LAYOUT.prepared, metrics=LAYOUT.metrics_file(scheme))
            done(f"evaluate@{scheme}")
            results[scheme] = {"run_id": trained["run_id"], **metrics}
        comparison = compare_flow(params=params, data=LAYOUT.prepared, models=LAYOUT.models,
                                  out=LAYOUT.reports)
        done("compare")
    return {"parent_run_id": parent, "schemes": results,
            "registered": comparison["registered"]}


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.pipeline [--params P] [--schemes a,b] [-S key=value ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=LAYOUT.params)
    parser.add_argument("--schemes", default=None, help="comma-separated; replaces train.compare")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="set a params.yaml value (YAML), like "
                        "`dvc exp run -S`; repeatable")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"-S needs KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    with reporting_user_errors("the pipeline stopped; its MLflow runs are marked FAILED"):
        result = pipeline_flow(params=args.params, overrides=overrides or None,
                               schemes=args.schemes.split(",") if args.schemes else None)
    print(json.dumps({"parent_run_id": result["parent_run_id"],
                      "registered": result["registered"]}, indent=2))


if __name__ == "__main__":
    main()
