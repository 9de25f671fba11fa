"""Start the MLflow UI over the project's store, on loopback: ``python -m pipeline.ui``.

It prints where to look: the experiment's runs (the classic runs view, not MLflow 3's GenAI
overview, and sorted by name, so the scheme runs are listed, not folded under their parent), the
compare view of the latest pipeline run's schemes and the parent's comparison artifacts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import quote, urlencode

from pipeline.config import Params, load_params
from pipeline.errors import ParamsError, PortInUseError
from pipeline.runtime import configure_environment, require_free_port

# MLflow's job runner (a process and four consumers, for GenAI evaluation jobs) is not started:
# this project runs no such jobs, and on two cores their start delays the UI's.
UI_ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for the project's tracking store.

    Run it with :data:`UI_ENVIRONMENT`. One server worker (MLflow's default is four): the UI
    serves one user on this machine.
    """
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port), "--workers", "1"]


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs, every run listed (parents and their scheme runs), by name.

    ``workflowType=machine_learning`` opens the model-training view of MLflow 3's UI (its
    default is the GenAI one); a sort other than by date keeps child runs out of their parent's
    fold.
    """
    query = urlencode({"workflowType": "machine_learning",
                       "orderByKey": json.dumps("attributes.run_name"), "orderByAsc": "true"})
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The compare view of ``run_ids`` (the schemes of one pipeline run)."""
    query = urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    return f"{base}/#/compare-runs?{query}"


def artifacts_url(base: str, experiment_id: str, run_id: str, path: str = "") -> str:
    """A run's artifacts, ``path`` selected."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{quote(path)}"


def landing_links(params: Params, base: str) -> list[str]:
    """Where to look in the UI, for the latest pipeline run of ``params`` (none: no runs yet)."""
    import mlflow

    from pipeline.tracking import compared_runs, latest_pipeline_run

    experiment = mlflow.MlflowClient(params.tracking.uri).get_experiment_by_name(
        params.tracking.experiment_name(params.ingest.source))
    if experiment is None:
        return []
    eid = str(experiment.experiment_id)
    links = [f"runs:       {runs_url(base, eid)}"]
    parent = latest_pipeline_run(params)
    if parent is not None:
        children = [r.info.run_id for r in compared_runs(params.tracking, parent)]
        if children:
            links.append(f"compare:    {compare_url(base, eid, children)}")
        links.append(f"comparison: {artifacts_url(base, eid, parent.info.run_id, 'comparison')}")
    return links


def main(argv: list[str] | None = None) -> None:
    """Check the port, print where to look, then replace this process with ``mlflow ui``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_UI_PORT", 5000)))
    args = parser.parse_args(argv)
    configure_environment()
    try:
        params = load_params(args.params)
        require_free_port(args.host, args.port, "the MLflow UI",
                          f"stop what is using it, or choose another: "
                          f"`make ui PORT={args.port + 1}`")
    except (ParamsError, PortInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    base = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {base} (Ctrl-C to stop)", flush=True)
    for link in landing_links(params, base):
        print(f"  {link}", flush=True)
    command = ui_command(params.tracking.uri, args.host, args.port)
    os.execve(command[0], command, os.environ | UI_ENVIRONMENT)


if __name__ == "__main__":
    main()
