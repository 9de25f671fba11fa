"""Compare stage: the schemes side by side in the pipeline run's parent MLflow run.

Reads every scheme's run (the one its model folder names, ``models/<scheme>/run.json``) by metric
name, writes the comparison table (CSV, Markdown, JSON for ``dvc metrics``) and plots into
``out``, logs them into the open parent run of these parameters and data, registers the best
complete model under ``compare.registered_model`` with the alias ``compare.alias``, and closes
the parent run (FINISHED; FAILED with the error if this stage fails).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, task

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import load_params
from pipeline.data.prepare import dataset_fingerprint
from pipeline.report import comparison_rows, format_table, write_comparison
from pipeline.tracking import (
    COMPARED_TAG,
    client_for,
    dvc_out_hash,
    failing_pipeline_run,
    finish_pipeline_run,
    git_commit,
    open_pipeline_run,
    read_run_reference,
    register_best,
)


@task(retries=2, retry_delay_seconds=[2, 5, 15])
def log_to_parent(tracking_uri: str, parent: str, files: list[str]) -> None:
    """Upload the comparison files into the parent run's ``comparison/`` artifacts."""
    client = mlflow.MlflowClient(tracking_uri)
    for path in files:
        client.log_artifact(parent, path, artifact_path="comparison")


@flow(name="compare", log_prints=True)
def compare_flow(params: str = LAYOUT.params, data: str = LAYOUT.prepared,
                 models: str = LAYOUT.models, out: str = LAYOUT.reports) -> dict:
    """Compare the schemes of ``train.compare``; returns the rows and the registered model."""
    config = load_params(params)
    data_hash = dataset_fingerprint(data)
    parent = open_pipeline_run(config, data_hash, tags={
        "data_hash": data_hash, "git_commit": git_commit(),
        "dvc_data_md5": dvc_out_hash(LAYOUT.lock, data)})
    with failing_pipeline_run(config.tracking, parent):
        client = client_for(config.tracking)
        runs = [client.get_run(read_run_reference(Path(models) / s)["run_id"])
                for s in config.train.compare]
        client.set_tag(parent, COMPARED_TAG, ",".join(r.info.run_id for r in runs))
        rows = comparison_rows(runs)
        files = write_comparison(rows, Path(out), config.compare.metric)
        log_to_parent(config.tracking.uri, parent, [str(f) for f in files])
        registered = register_best(config.tracking, config.compare, parent, runs)
        finish_pipeline_run(config.tracking, parent)
    print(format_table(rows))
    if registered:
        print(f"best by {config.compare.metric}: {registered['scheme']} -> registered "
              f"{registered['name']} version {registered['version']} @{registered['alias']}")
    else:
        print(f"no complete scheme run has {config.compare.metric}: nothing registered")
    return {"parent_run_id": parent, "rows": rows, "registered": registered}


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.compare [--params P] [--data DIR] [--models DIR] [--out DIR]``."""
    run_stage(compare_flow, __doc__, {"params": LAYOUT.params, "data": LAYOUT.prepared,
                                      "models": LAYOUT.models, "out": LAYOUT.reports}, argv)


if __name__ == "__main__":
    main()
