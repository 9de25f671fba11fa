"""Compare stage: the schemes side by side in the pipeline run's parent MLflow run.

Reads every scheme's run (the one its model folder names, ``models/<scheme>/run.json``) by metric
name, predicts every scheme with the cost model (:mod:`pipeline.plan`) for the configured cluster,
writes the comparison table (CSV, Markdown, JSON for ``dvc metrics``; the modelled step time
beside the measured one), the predictions (``plan.json``) and plots into ``out``, logs them
into the open parent run of these parameters and data (with each scheme's modelled and measured
step time as metrics), registers the best complete model under ``compare.registered_model``
with the alias ``compare.alias``, and closes the parent run (FINISHED; FAILED with the error if
this stage fails).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import flow, task

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import Params, load_params
from pipeline.data.prepared_store import dataset_fingerprint
from pipeline.io import write_json
from pipeline.plan import Prediction, plan
from pipeline.report import comparison_rows, format_table, write_comparison
from pipeline.stage_clock import CLOCK, WORK
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


@task
def modelled_steps(config: Params, data: str) -> dict[str, Prediction]:
    """The cost model's prediction of every compared scheme, on the configured cluster.

    Empty, with a warning, where the model fails: the comparison of what was measured is
    written all the same.
    """
    try:
        planned = plan(config, Path(data), list(config.train.compare))
        return {p.scheme: p for p in planned.predict()}
    except Exception as exc:  # noqa: BLE001 (a prediction must not cost the measured comparison)
        print(f"warning: the cost model could not predict the schemes ({type(exc).__name__}: "
              f"{exc}); the comparison is written without modelled step times")
        return {}


def write_plan(out: Path, modelled: dict[str, Prediction]) -> Path:
    """``plan.json``: every scheme's full prediction, beside the comparison."""
    path = out / "plan.json"
    write_json(path, {s: p.to_dict() for s, p in modelled.items()})
    return path


@task(retries=2, retry_delay_seconds=[2, 5, 15])
def log_modelled_vs_measured(tracking_uri: str, parent: str, rows: list[dict]) -> None:
    """Per scheme, the modelled and the measured step time and their ratio, in the parent run."""
    client = mlflow.MlflowClient(tracking_uri)
    for row in rows:
        for key, name in (("modelled_step_s", "modelled_step_s"),
                          ("step_s_p50", "measured_step_s"),
                          ("modelled_to_measured_step", "modelled_to_measured_step")):
            if row.get(key) is not None:
                client.log_metric(parent, f"{row['scheme']}_{name}", float(row[key]))


@flow(name="compare", log_prints=True)
def compare_flow(params: str = LAYOUT.params, data: str = LAYOUT.prepared,
                 models: str = LAYOUT.models, out: str = LAYOUT.reports) -> dict:
    """Compare the schemes of ``train.compare``; returns the rows and the registered model."""
    config = load_params(params)
    data_hash = dataset_fingerprint(data)
    parent = open_pipeline_run(config, data_hash, tags={
        "data_hash": data_hash, "git_commit": git_commit(),
        "dvc_data_md5": dvc_out_hash(LAYOUT.lock, data)})
    with failing_pipeline_run(config.tracking, parent), CLOCK.phase(WORK):
        client = client_for(config.tracking)
        runs = [client.get_run(read_run_reference(Path(models) / s)["run_id"])
                for s in config.train.compare]
        client.set_tag(parent, COMPARED_TAG, ",".join(r.info.run_id for r in runs))
        with CLOCK.phase("cost model (machine probe: first run on a machine)"):
            modelled = modelled_steps(config, data)
        rows = comparison_rows(runs, {s: p.step_s for s, p in modelled.items()})
        files = write_comparison(rows, Path(out), config.compare.metric)
        files.append(write_plan(Path(out), modelled))
        log_modelled_vs_measured(config.tracking.uri, parent, rows)
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
                                      "models": LAYOUT.models, "out": LAYOUT.reports}, argv,
              tracked=True)


if __name__ == "__main__":
    main()
