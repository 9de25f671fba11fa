"""The whole pipeline, as a user runs it, in one project: DVC, then Prefect, then DVC again.

One project copy (two schemes) is shared by the steps, in order: each step starts from the state
the previous one left, as a user's project would.

1. ``dvc repro`` as ``make run`` runs it (a stage host runs every stage command; they report to
   the session's Prefect server);
2. ``dvc metrics show`` and ``dvc status`` read what it left;
3. ``prefect deploy`` from ``prefect.yaml`` against a real ``prefect server start`` on loopback,
   and a worker runs a triggered deployment run of the pipeline with ``train.epochs: 1`` as an
   override: it re-trains every scheme and leaves DVC up to date;
4. the DVC remote round-trips the outputs;
5. ``dvc exp run -S train.batch_size=16`` on one scheme's stages gives a new experiment.

The DVC commands run with a stage host (``python -m flows.with_prefect_server``, as ``make run``
does): each stage command in its own process costs ~20-40 s of imports and Spark start, which
the stage host pays once; a stage command without a host is tested in ``test_stage_host.py``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from flows.serve import deploy, start_worker, stop

from .conftest import SMALL_PARAMS, dvc, make_project, sh

pytestmark = pytest.mark.slow

SCHEMES = SMALL_PARAMS["train"]["compare"]
EXPERIMENT_SCHEME = "data_parallel"  # the scheme `dvc exp run` re-trains


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, prefect_api: dict[str, str]) -> Path:
    """The user's project; its stage commands report to the session's Prefect server."""
    return make_project(tmp_path_factory.mktemp("project") / "landcover", SMALL_PARAMS)


@pytest.fixture(scope="module")
def prefect_env(prefect_api: dict[str, str]) -> dict[str, str]:
    """The environment of the session's Prefect server, with this interpreter's tools first.

    The worker asks for scheduled work every 2 s instead of Prefect's 10 s.
    """
    return os.environ | prefect_api | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PREFECT_WORKER_QUERY_SECONDS": "2"}


def store(root: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def runs(root: Path, role: str = "scheme") -> list[mlflow.entities.Run]:
    client = store(root)
    experiment = client.get_experiment_by_name("landcover-synthetic")
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`landcover.role` = '{role}'",
                              order_by=["attributes.start_time ASC"])


def model_run(root: Path, scheme: str) -> mlflow.entities.Run:
    """The MLflow run of the model in ``models/<scheme>`` (the run its ``run.json`` names)."""
    return store(root).get_run(
        json.loads((root / "models" / scheme / "run.json").read_text())["run_id"])


def assert_one_parent_with_a_child_per_scheme(root: Path, parent: mlflow.entities.Run,
                                              children: list[mlflow.entities.Run]) -> None:
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.tags["scheme"] for c in children) == sorted(SCHEMES)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    # every child has the same parameter and metric names: the compare view lines them up
    assert len({frozenset(c.data.params) for c in children}) == 1
    assert len({frozenset(c.data.metrics) for c in children}) == 1
    for child in children:
        for tag in ("scheme", "world_size", "git_commit", "data_hash", "dvc_data_md5",
                    "data_source", "model_uri"):
            assert child.data.tags.get(tag) not in (None, "", "unknown"), tag
        assert child.inputs.dataset_inputs[0].dataset.digest == child.data.tags["data_hash"][:36]
    artifacts = {a.path for a in store(root).list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.csv", "comparison/comparison.md",
            "comparison/accuracy_vs_bytes_sent.png",
            "comparison/accuracy_vs_training_time.png"} <= artifacts
    version = store(root).get_model_version_by_alias("landcover-classifier", "champion")
    assert version.tags["pipeline_run_id"] == parent.info.run_id
    best = max(children, key=lambda c: c.data.metrics["val_overall_accuracy"])  # not on test
    assert version.tags["run_id"] == best.info.run_id


def metrics_of(root: Path, scheme: str) -> dict[str, float]:
    return json.loads((root / "metrics" / f"{scheme}.json").read_text())


def stage_times(root: Path) -> dict[str, dict]:
    """Each stage's record of its last run (``logs/stage_times/<stage>.json``)."""
    return {p.stem: json.loads(p.read_text())
            for p in (root / "logs" / "stage_times").glob("*.json")}


def test_dvc_repro_runs_every_stage_and_tracks_each_scheme(project: Path) -> None:
    # as `make run` runs it: `dvc repro` with a stage host (the session's Prefect server)
    out = sh(sys.executable, "-m", "flows.with_prefect_server", "dvc", "repro",
             cwd=project).stdout
    stages = ["ingest", "prepare", *(f"{s}@{scheme}" for scheme in SCHEMES
                                     for s in ("train", "evaluate")), "compare"]
    for stage in stages:
        assert f"Running stage '{stage}'" in out
    # each stage recorded its wall time, for the benchmark report's split of `make run`
    times = stage_times(project)
    assert sorted(t["stage"] for t in times.values()) == sorted(stages)
    assert all(t["seconds"] > 0 for t in times.values())
    assert {t["ran_on"] for t in times.values()} == {"stage host"}

    by_scheme = {run.data.tags["scheme"]: run for run in runs(project)}
    assert sorted(by_scheme) == sorted(SCHEMES)
    for scheme, run in by_scheme.items():
        metrics = metrics_of(project, scheme)
        assert metrics["overall_accuracy"] > 0.5  # six classes: chance is ~0.17
        assert run.info.status == "FINISHED"
        assert run.data.params["train.scheme"] == scheme
        assert run.data.metrics["test_overall_accuracy"] == pytest.approx(
            metrics["overall_accuracy"])
        assert run.data.metrics["test_kappa"] == pytest.approx(metrics["kappa"])
        assert run.data.metrics["training_time_s"] > 0
        assert run.data.metrics["payload_bytes_sent_per_step"] > 0
        assert run.data.metrics["payload_ratio_counted_to_modelled"] == pytest.approx(1.0)
        assert run.data.params["train.epochs"] == "2"
        # The evaluation: ablation, map and inference timing, in the file and in the run.
        assert run.data.metrics["val_overall_accuracy"] == pytest.approx(  # selects the model
            metrics["val_overall_accuracy"])
        for key in ("weighted_f1", "ablation_sar_overall_accuracy_drop"):  # quality: test_*
            assert run.data.metrics[f"test_{key}"] == pytest.approx(metrics[key])
        for key in ("map_predicted_pixels", "inference_samples_per_s",
                    "inference_ratio_to_single_process", "inference_batch_p95_ms",
                    "spark_startup_s"):
            assert run.data.metrics[key] == pytest.approx(metrics[key])
        # the deployment predicts what one process does
        assert metrics["inference_agreement"] == 1.0
        reports = project / "reports" / scheme
        for name in ("confusion_matrix.png", "per_class.csv", "landcover_map.tif",
                     "landcover_map.png", "inference.json", "ablation.json"):
            assert (reports / name).is_file(), name
        artifacts = {a.path for a in mlflow.MlflowClient(
            f"sqlite:///{project / 'mlflow.db'}").list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/landcover_map.tif" in artifacts
    # Equivalent schemes at equal global batch and epochs reach comparable accuracy.
    accuracies = [metrics_of(project, s)["overall_accuracy"] for s in SCHEMES]
    assert max(accuracies) - min(accuracies) <= 0.02
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert {o["path"] for o in lock["ingest"]["outs"]} == {"data/raw"}
    manifest = json.loads((project / "data/prepared/manifest.json").read_text())
    assert run.data.tags["data_hash"] == manifest["fingerprint"]  # the run names its data
    assert (project / "data/prepared/preview.png").is_file()
    [parent] = runs(project, "pipeline")
    assert_one_parent_with_a_child_per_scheme(project, parent, list(by_scheme.values()))
    assert "data_parallel" in (project / "reports/comparison.md").read_text()
    table = sh(sys.executable, "-m", "pipeline.report", cwd=project).stdout
    assert parent.info.run_id in table and "branch_parallel" in table
    # the cost model's step time next to the measured one, per scheme, in the parent run
    plan = json.loads((project / "reports/plan.json").read_text())
    assert sorted(plan) == sorted(SCHEMES)
    for scheme, run in by_scheme.items():
        modelled = parent.data.metrics[f"{scheme}_modelled_step_s"]
        measured = parent.data.metrics[f"{scheme}_measured_step_s"]
        assert modelled == pytest.approx(plan[scheme]["step_s"])
        assert measured == pytest.approx(run.data.metrics["step_s_p50"])
        assert parent.data.metrics[f"{scheme}_modelled_to_measured_step"] == pytest.approx(
            modelled / measured)
    assert "step s (modelled)" in table and "modelled ÷ measured" in table


def test_dvc_metrics_show_lists_every_scheme(project: Path) -> None:
    shown = json.loads(dvc("metrics", "show", "--json", cwd=project))
    files = next(iter(shown.values()))["data"]
    for scheme in SCHEMES:
        assert "inference_samples_per_s" in files[f"metrics/{scheme}.json"]["data"]


def test_after_dvc_repro_the_pipeline_is_up_to_date(project: Path) -> None:
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
    assert "Running stage" not in dvc("repro", cwd=project)


def test_a_deployment_of_prefect_yaml_runs_on_a_real_server_and_leaves_dvc_up_to_date(
        project: Path, prefect_env: dict[str, str], tmp_path: Path) -> None:
    deploy(project, prefect_env)
    for name, cron in (("nightly", "0 2 * * *"), ("weekly-comparison", "0 3 * * 0")):
        shown = sh(sys.executable, "-m", "prefect", "deployment", "inspect",
                   f"landcover-pipeline/{name}", cwd=project).stdout
        assert cron in shown, shown[-2000:]

    # a triggered run of the nightly deployment, with one parameter changed: it re-trains
    worker = start_worker(project, prefect_env, tmp_path / "worker.log")
    try:
        ran = sh(sys.executable, "-m", "prefect", "deployment", "run",
                 "landcover-pipeline/nightly", "--param", 'overrides={"train.epochs": 1}',
                 "--watch", "--watch-timeout", "500", "--watch-interval", "2", cwd=project,
                 timeout=550)
    finally:
        stop(worker)
    assert "Completed" in ran.stdout, (
        ran.stdout[-2000:] + (tmp_path / "worker.log").read_text()[-3000:])

    # The override went into params.yaml and dvc.lock records it for every training
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 1
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for scheme in SCHEMES:
        assert lock[f"train@{scheme}"]["params"]["params.yaml"]["train.epochs"] == 1
    # The Prefect-run pipeline left DVC as `dvc repro` would...
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)
    assert "Running stage" not in dvc("repro", cwd=project)
    # ...and logged to the project's store: its runs are the latest, the models' runs
    latest = runs(project)[len(SCHEMES):]
    assert sorted(r.info.run_id for r in latest) == sorted(
        model_run(project, scheme).info.run_id for scheme in SCHEMES)
    parent = runs(project, "pipeline")[-1]
    assert parent.data.tags["orchestrator"] == "prefect"
    assert_one_parent_with_a_child_per_scheme(project, parent, latest)
    for run in latest:
        scheme = run.data.tags["scheme"]
        assert run.data.params["train.epochs"] == "1"
        assert run.data.metrics["test_overall_accuracy"] == pytest.approx(
            metrics_of(project, scheme)["overall_accuracy"])
        assert run.data.metrics["test_overall_accuracy"] > 0.3


def test_outputs_round_trip_through_the_local_dvc_remote(project: Path) -> None:
    dvc("push", cwd=project)
    assert any((project / "dvc-remote").rglob("*"))
    sh("rm", "-rf", "data/prepared", ".dvc/cache", cwd=project)
    dvc("pull", cwd=project)
    assert (project / "data/prepared/manifest.json").is_file()
    assert "Data and pipelines are up to date" in dvc("status", cwd=project)


def exp_metrics(project: Path, scheme: str) -> set[tuple[int, float, float]]:
    """Of each experiment ``dvc exp show`` lists: batch size, ``scheme``'s accuracy and speed."""
    rows = json.loads(dvc("exp", "show", "--json", cwd=project))
    found = set()
    for row in rows:
        for exp in [row, *(e for ex in row.get("experiments") or []
                           for e in ex.get("revs", []))]:
            data = exp.get("data") or {}
            metrics = (data.get("metrics") or {}).get(f"metrics/{scheme}.json", {})
            params = (data.get("params") or {}).get("params.yaml", {})
            if metrics.get("data"):
                found.add((params["data"]["train"]["batch_size"],
                           metrics["data"]["overall_accuracy"],
                           metrics["data"]["inference_samples_per_s"]))
    return found


def test_dvc_exp_run_with_a_new_batch_size_gives_a_new_experiment(project: Path) -> None:
    sh("git", "add", "-A", cwd=project)  # the deployment run's dvc.lock and metrics: baseline
    sh("git", "commit", "-q", "-m", "pipeline run", cwd=project)
    scheme = EXPERIMENT_SCHEME
    before, before_run = metrics_of(project, scheme), model_run(project, scheme)

    # one scheme's stages (a target), as a user tries a value on one scheme first
    out = sh(sys.executable, "-m", "flows.with_prefect_server", "dvc", "exp", "run", "-S",
             "train.batch_size=16", f"evaluate@{scheme}", cwd=project).stdout
    assert f"Running stage 'train@{scheme}'" in out
    assert f"Running stage 'evaluate@{scheme}'" in out
    assert "Running stage 'ingest'" not in out  # data unchanged: not rerun
    assert "Running stage 'train@branch_parallel'" not in out  # not needed by the target

    after, after_run = metrics_of(project, scheme), model_run(project, scheme)
    assert after_run.data.params["train.batch_size"] == "16"
    # half the batch, twice the optimisation steps over the same epoch
    assert after_run.data.metrics["steps"] == pytest.approx(
        2 * before_run.data.metrics["steps"], abs=1)
    assert exp_metrics(project, scheme) >= {
        (32, before["overall_accuracy"], before["inference_samples_per_s"]),
        (16, after["overall_accuracy"], after["inference_samples_per_s"])}
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=project))
    assert "overall_accuracy" in diff[f"metrics/{scheme}.json"]
    assert "inference_samples_per_s" in diff[f"metrics/{scheme}.json"]
    plots = json.loads(dvc("plots", "show", "--json", cwd=project))
    assert any("comparison.csv" in json.dumps(v) for v in plots.values())
