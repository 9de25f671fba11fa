"""MLflow tracking: an experiment per dataset, a parent run per pipeline run, a child per scheme.

A *pipeline run* is one parent MLflow run. Under ``dvc repro`` every stage is its own process, so
the stages find their parent in the store rather than in memory: a parent is *open* while its
status is RUNNING, and it carries the tag ``pipeline_key``, a hash of every parameter (except
``train.scheme``) and of the prepared data's fingerprint. The first ``train@<scheme>`` stage of a
pipeline run opens the parent, the others find it by key and nest their run under it, and the
``compare`` stage writes the comparison into it, registers the best model and closes it
(FINISHED). The Prefect pipeline flow calls the same functions, so both paths give the same runs.

Each scheme's child run holds every parameter (flattened ``params.yaml``), the tags ``scheme``,
``world_size``, ``git_commit``, ``data_hash``, ``dvc_data_md5`` and ``data_source``, the training
data as a dataset input, the training figures and the model (``mlflow.pytorch``, with a
signature and an input example). The evaluate stage reopens the child (``run.json``).

A stage that raises marks its run FAILED with the error in the ``error`` tag, and marks the
parent FAILED too; the next pipeline run opens a new parent. A training retried by Prefect stays in
one run: ``train_attempts`` counts its attempts, ``train_attempt_<n>_error`` holds a failed one's
error. Only complete children (FINISHED, with the ranking metric and a logged model) are
candidates for the model registry.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import torch
import yaml
from mlflow.entities import Run

from pipeline.config import CompareParams, Params, TrackingParams
from pipeline.errors import DatasetError, TrackingStoreError
from pipeline.training.job import TrainResult
from pipeline.training.timeline import timeline_metrics

if TYPE_CHECKING:
    from pipeline.model import MultimodalCNN

RUN_FILE = "run.json"
ROLE_TAG = "landcover.role"  # "pipeline" (parent) or "scheme" (child)
KEY_TAG = "pipeline_key"
PARENT_TAG = "mlflow.parentRunId"
MODEL_URI_TAG = "model_uri"
COMPARED_TAG = "compared_runs"


# --- the store -------------------------------------------------------------------------------

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the MLflow 3 UI's view of an experiment
EXPERIMENT_KIND = "custom_model_development"  # training runs, not the GenAI traces overview


def use_store(params: Params) -> str:
    """Point MLflow at the project's store and the dataset's experiment; its id.

    The experiment is marked as model development, so the MLflow UI opens it on its runs.
    """
    mlflow.set_tracking_uri(params.tracking.uri)
    experiment = mlflow.set_experiment(params.tracking.experiment_name(params.ingest.source))
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                                 EXPERIMENT_KIND)
    return str(experiment.experiment_id)


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast when ``uri`` names an MLflow server that does not answer.

    One request to the server's ``/health`` endpoint, without MLflow's HTTP retries (up to
    ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` with exponential backoff: minutes); database and file
    stores need no check.

    Raises:
        TrackingStoreError: no MLflow server answers at ``uri`` within ``timeout_s``.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingStoreError(uri, f"no MLflow server answers there ({reason})") from None
    if status != 200:
        raise TrackingStoreError(uri, f"the server answers HTTP {status} on /health, it is not "
                                      "an MLflow tracking server")


def client_for(tracking: TrackingParams) -> mlflow.MlflowClient:
    """A client of the project's store."""
    return mlflow.MlflowClient(tracking.uri)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:5000]


# --- provenance ------------------------------------------------------------------------------

def git_commit(root: Path | str = ".") -> str:
    """The commit checked out in ``root`` (``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def dvc_out_hash(lock_file: Path | str, out_path: str) -> str:
    """The md5 ``dvc.lock`` records for the output ``out_path``, or ``unknown``."""
    lock_file = Path(lock_file)
    if not lock_file.is_file():
        return "unknown"
    stages = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == out_path:
                return str(out.get("md5", "unknown"))
    return "unknown"


def pipeline_key(params: Params, data_hash: str) -> str:
    """What identifies a pipeline run: every parameter but ``train.scheme``, and the data."""
    flat = {k: v for k, v in params.flat().items() if k != "train.scheme"}
    text = json.dumps([flat, data_hash], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the parent run --------------------------------------------------------------------------

def open_pipeline_run(params: Params, data_hash: str, tags: dict[str, str] | None = None) -> str:
    """The id of the open parent run of these parameters and data; created if there is none."""
    experiment_id = use_store(params)
    client = client_for(params.tracking)
    key = pipeline_key(params, data_hash)
    found = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`{ROLE_TAG}` = 'pipeline' and tags.{KEY_TAG} = '{key}' "
                       "and attributes.status = 'RUNNING'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        open_id: str = found[0].info.run_id
        return open_id
    run = client.create_run(experiment_id, run_name=f"pipeline-{key[:8]}",
                            tags={ROLE_TAG: "pipeline", KEY_TAG: key, "data_hash": data_hash,
                                  "schemes": ",".join(params.train.compare),
                                  "data_source": params.ingest.source} | (tags or {}))
    shared = {k: v for k, v in params.flat().items() if k != "train.scheme"}
    items = list(shared.items())
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[
            mlflow.entities.Param(k, str(v)[:6000]) for k, v in items[start:start + 100]])
    new_id: str = run.info.run_id
    return new_id


def fail_pipeline_run(tracking: TrackingParams, run_id: str, exc: BaseException) -> None:
    """Mark the parent ``run_id`` FAILED with the error (a stage of it failed)."""
    client = client_for(tracking)
    client.set_tag(run_id, "error", _error_text(exc))
    client.set_terminated(run_id, "FAILED")


def finish_pipeline_run(tracking: TrackingParams, run_id: str) -> None:
    """Close the parent ``run_id``: FINISHED."""
    client_for(tracking).set_terminated(run_id, "FINISHED")


@contextmanager
def failing_pipeline_run(tracking: TrackingParams, run_id: str | None) -> Iterator[None]:
    """Mark the parent FAILED (error recorded) if the body raises."""
    try:
        yield
    except BaseException as exc:
        if run_id is not None:
            fail_pipeline_run(tracking, run_id, exc)
        raise


def latest_pipeline_run(params: Params) -> Run | None:
    """The most recent parent run of the dataset's experiment, if any."""
    experiment_id = use_store(params)
    found = client_for(params.tracking).search_runs(
        [experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'pipeline'",
        order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def compared_runs(tracking: TrackingParams, parent: Run) -> list[Run]:
    """The scheme runs a parent compares: those its comparison named, else its children."""
    client = client_for(tracking)
    named = parent.data.tags.get(COMPARED_TAG)
    if named:
        return [client.get_run(run_id) for run_id in named.split(",")]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.{PARENT_TAG} = '{parent.info.run_id}'",
        order_by=["attributes.start_time ASC"])
    latest: dict[str, Run] = {}
    for child in children:  # a scheme rerun after a failure: its latest run counts
        latest[child.data.tags.get("scheme", child.info.run_id)] = child
    return list(latest.values())


# --- a scheme's run --------------------------------------------------------------------------

@contextmanager
def _recording_errors(tracking: TrackingParams | None = None,
                      parent_run_id: str | None = None) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        mlflow.set_tag("error", _error_text(exc))
        if tracking is not None and parent_run_id is not None:
            fail_pipeline_run(tracking, parent_run_id, exc)
        raise


@contextmanager
def training_run(params: Params, run_name: str | None = None,
                 tags: dict[str, str] | None = None,
                 parent_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """Start a scheme's run (nested under ``parent_run_id``) with every parameter logged.

    The run, and its parent, are marked FAILED with the error if the body raises.
    """
    use_store(params)
    interval = params.train.timeline_interval_s
    if interval > 0:  # the driver's host: MLflow's own system metrics (system/*)
        mlflow.set_system_metrics_sampling_interval(  # type: ignore[no-untyped-call]
            max(interval, 1.0))
    with mlflow.start_run(run_name=run_name, parent_run_id=parent_run_id,
                          log_system_metrics=interval > 0) as run, \
            _recording_errors(params.tracking, parent_run_id):
        mlflow.log_params(params.flat())
        mlflow.set_tags({ROLE_TAG: "scheme", "scheme": params.train.scheme,
                         "spark_master": params.spark.master,
                         "data_source": params.ingest.source} | (tags or {}))
        yield run


ATTEMPTS_TAG = "train_attempts"  # how many attempts the training took (2: one Prefect retry)


def record_attempt(run_id: str, attempt: int, error: BaseException | None = None) -> None:
    """Record a training attempt on the scheme's run ``run_id``, so a retry shows in MLflow.

    Sets ``train_attempts`` to ``attempt`` (1-based) and, for a failed attempt, its error in
    ``train_attempt_<attempt>_error``; the run of a retried training that then succeeded is
    FINISHED with ``train_attempts`` 2 and the first attempt's error.
    """
    client = mlflow.MlflowClient()
    client.set_tag(run_id, ATTEMPTS_TAG, str(attempt))
    if error is not None:
        client.set_tag(run_id, f"train_attempt_{attempt}_error", _error_text(error))


def log_dataset(data_dir: Path | str, fingerprint: str, source: str,
                context: str = "training") -> None:
    """Register the prepared data as the active run's dataset input (path, digest, source).

    Many scenes: the input's tag ``scenes`` lists their names (the manifest's ``scenes``).
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    # mlflow declares Dataset.profile abstract, but Dataset is no ABC and MetaDataset works as is.
    dataset = MetaDataset(  # type: ignore[abstract]
        source=resolve_dataset_source(str(Path(data_dir).resolve())),
        name=f"prepared-{source}", digest=fingerprint[:36])
    tags = {"data_source": source}
    manifest = Path(data_dir) / "manifest.json"
    if manifest.is_file():
        scenes = json.loads(manifest.read_text()).get("scenes")
        if scenes:
            tags["scenes"] = ",".join(scene["name"] for scene in scenes)
    mlflow.log_input(dataset, context=context, tags=tags)


def log_training(result: TrainResult, model_dir: Path) -> None:
    """Log the training figures, the per-epoch curves and the model folder to the active run.

    Figures: time, traffic, CPU, memory, every worker's. The folder goes to ``model_files/``.
    """
    mlflow.set_tag("world_size", str(result.world_size))
    mlflow.log_metrics(result.metrics())
    for record in result.history:
        step = int(record["epoch"])
        mlflow.log_metrics({f"epoch_{k}": v for k, v in record.items() if k != "epoch"},
                           step=step)
    log_timelines(result.timelines)
    mlflow.log_artifacts(str(model_dir), artifact_path="model_files")


def log_timelines(timelines: dict[int, list[dict[str, float]]]) -> None:
    """Every worker's resource samples as metrics ``timeline/<quantity>_w<rank>`` of the run."""
    from mlflow.entities import Metric

    run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    metrics = [Metric(key, value, stamp, step)
               for key, value, stamp, step in timeline_metrics(timelines)]
    client = mlflow.MlflowClient()
    for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
        client.log_batch(run_id, metrics=metrics[start:start + 1000])


def model_requirements() -> list[str]:
    """Pinned requirements of a logged model (given, so MLflow need not infer them: 10-18 s)."""
    import numpy

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={numpy.__version__}"]


def log_pytorch_model(model: MultimodalCNN, example: dict[str, torch.Tensor]) -> str:
    """Log ``model`` to the active run with ``mlflow.pytorch`` as a single-input model.

    The logged model takes the modalities stacked along channels (``StackedInputModel``), so the
    pyfunc flavour, the signature and the input example work. Returns the model's URI, also
    recorded as the run's ``model_uri`` tag (the registry takes only runs that have it).
    """
    from mlflow.models import infer_signature

    from pipeline.serving import StackedInputModel

    wrapped = StackedInputModel(model).eval()
    stacked = wrapped.stack(example)
    with torch.no_grad():
        logits = wrapped(stacked)
    x = stacked.numpy()
    info = mlflow.pytorch.log_model(
        wrapped, name="model", signature=infer_signature(x, logits.numpy()), input_example=x,
        pip_requirements=model_requirements())
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    model_uri: str = info.model_uri
    return model_uri


def run_reference(run: mlflow.ActiveRun, tracking: TrackingParams) -> dict[str, str]:
    """What a later stage needs to reopen ``run``."""
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
            "tracking_uri": tracking.uri}


def read_run_reference(model_dir: Path) -> dict[str, str]:
    """The run reference saved with a trained model."""
    path = Path(model_dir) / RUN_FILE
    if not path.is_file():
        raise DatasetError(path, "the model has no MLflow run reference",
                           "re-run the train stage (`dvc repro train`)")
    reference: dict[str, str] = json.loads(path.read_text())
    return reference


@contextmanager
def resumed_run(reference: dict[str, str], tracking: TrackingParams) -> Iterator[mlflow.ActiveRun]:
    """Reopen the run a model was trained in; FAILED if the body raises."""
    mlflow.set_tracking_uri(tracking.uri)
    with mlflow.start_run(run_id=reference["run_id"]) as run, _recording_errors():
        yield run


def log_evaluation(metrics: dict[str, Any], prefix: str = "test_") -> None:
    """Log evaluation metrics to the active run."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()})


def log_evaluation_artifacts(folder: Path, artifact_path: str = "evaluation") -> None:
    """Log the files of an evaluation (reports, confusion matrix, map) to the active run."""
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


# --- the model registry ----------------------------------------------------------------------

def best_run(runs: list[Run], compare: CompareParams) -> Run | None:
    """The best complete run by ``compare.metric``: FINISHED, with the metric and a model."""
    complete = [r for r in runs if r.info.status == "FINISHED"
                and compare.metric in r.data.metrics and MODEL_URI_TAG in r.data.tags]
    if not complete:
        return None
    sign = 1 if compare.mode == "max" else -1
    return max(complete, key=lambda r: sign * r.data.metrics[compare.metric])


def register_best(tracking: TrackingParams, compare: CompareParams, parent_run_id: str,
                  runs: list[Run]) -> dict[str, str] | None:
    """Register the best complete run's model and point ``compare.alias`` at it.

    Returns the registered name, version, scheme and run, or ``None`` when no run is complete
    (nothing is registered then).
    """
    best = best_run(runs, compare)
    if best is None:
        return None
    mlflow.set_tracking_uri(tracking.uri)
    version = mlflow.register_model(
        best.data.tags[MODEL_URI_TAG], compare.registered_model,
        tags={"scheme": best.data.tags.get("scheme", ""), "run_id": best.info.run_id,
              "pipeline_run_id": parent_run_id,
              compare.metric: str(best.data.metrics[compare.metric])})
    client = client_for(tracking)
    client.set_registered_model_alias(compare.registered_model, compare.alias, version.version)
    registered = {"name": compare.registered_model, "version": str(version.version),
                  "alias": compare.alias, "scheme": best.data.tags.get("scheme", ""),
                  "run_id": best.info.run_id}
    client.set_tag(parent_run_id, "best_scheme", registered["scheme"])
    client.set_tag(parent_run_id, "registered_model",
                   f"{compare.registered_model}/{version.version}@{compare.alias}")
    client.log_metric(parent_run_id, f"best_{compare.metric}", best.data.metrics[compare.metric])
    return registered
