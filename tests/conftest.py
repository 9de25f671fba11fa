"""Shared fixtures. The process environment is set before anything imports Prefect or Spark."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def _session_dir(variable: str, prefix: str) -> None:
    """Point ``variable`` at a new temporary folder, removed when the session ends (unless set)."""
    if variable not in os.environ:
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, os.environ[variable], ignore_errors=True)


if "PYTEST_XDIST_WORKER" in os.environ:  # each worker its own Prefect home: not one database
    os.environ.pop("PREFECT_HOME", None)  # for two workers' temporary servers (the Makefile's)
_session_dir("PREFECT_HOME", "prefect-home-")
# the cost model's profiles and latency probe: measured once per test session, not in ~/.cache
_session_dir("LANDCOVER_CACHE_DIR", "landcover-cache-")
# The suite starts dozens of JVMs (drivers, cluster daemons, executors) that live seconds to a
# minute: most of a short JVM's CPU goes to its optimising (C2) compiler. The tests' JVMs, and
# those of the commands they start, compile with C1 only (`make run` and users' jobs keep the
# default): a session's start and first jobs took 17 s instead of 22 s on this machine.
_C1_ONLY = "-XX:TieredStopAtLevel=1"
os.environ.setdefault("PYSPARK_SUBMIT_ARGS", f"--driver-java-options={_C1_ONLY} --conf "
                      f"spark.executor.extraJavaOptions={_C1_ONLY} pyspark-shell")
os.environ.setdefault("SPARK_DAEMON_JAVA_OPTS", _C1_ONLY)  # a standalone cluster's daemons
from pipeline.runtime import configure_environment  # noqa: E402

configure_environment(Path(__file__).resolve().parents[1])

from pipeline.config import (  # noqa: E402
    Params,
    PrepareParams,
    SparkParams,
    SyntheticSceneParams,
)
from pipeline.data.prepare import prepare_dataset  # noqa: E402
from pipeline.data.synthetic import write_synthetic_scene  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The longest modules first (minutes on a 2-core machine), so that under `make test`'s two
# workers (`--dist loadfile --no-loadscope-reorder`: whole files, in collection order) the long
# ones start at once and the short ones fill in behind them; each file stays in one worker.
SLOWEST_FIRST = ["test_pipeline_e2e.py", "test_emulated_network.py", "test_operations.py",
                 "test_cluster.py", "training/test_schemes.py", "test_stage_host.py",
                 "plan/test_plan_cli.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, the slowest files first (stable: a file keeps its tests' order)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    tests = PROJECT_ROOT / "tests"

    def rank(item: pytest.Item) -> int:
        name = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else ""
        return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)

    items.sort(key=rank)

SMALL_SCENE = SyntheticSceneParams(seed=7, height=96, width=96, region_scale_px=6.0)
SMALL_PREPARE = PrepareParams(patch_size=7, stride=3, block_size=16, seed=1)


@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic scene written as GeoTIFFs (read-only for tests)."""
    out = tmp_path_factory.mktemp("scene") / "raw"
    write_synthetic_scene(SMALL_SCENE, out)
    return out


@pytest.fixture(scope="session")
def prepared_dir(scene_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small scene's prepared patches (read-only for tests)."""
    out = tmp_path_factory.mktemp("prepared") / "prepared"
    prepare_dataset(scene_dir, out, SMALL_PREPARE)
    return out


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A real local SparkSession with two task slots, shared by the Spark tests."""
    from pipeline.spark import spark_session

    with spark_session(SparkParams(master="local[4]", app_name="landcover-tests")) as session:
        yield session


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One real Prefect server on loopback for the rest of the session, with its own home.

    Its URL goes into this process's environment, which every stage command started afterwards
    inherits: each reports its flow run there instead of starting Prefect's temporary server
    (about 5 s per command). Stopped by PID at the end of the session. Yields the variables.
    """
    from flows.serve import start_server, stop, wait_healthy
    from pipeline.cluster import free_port

    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {"PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    saved = dict(os.environ)
    os.environ.update(env)  # the server and every later subprocess inherit it
    server = start_server("127.0.0.1", port, home / "server.log")
    try:
        wait_healthy(env["PREFECT_API_URL"], server, timeout_s=240)
        yield env
    finally:
        stop(server)
        os.environ.clear()
        os.environ.update(saved)


@functools.cache
def _empty_mlflow_store() -> Path:
    """An MLflow SQLite store whose schema exists, made once per test process."""
    import mlflow

    folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    store = folder / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{store}").search_experiments()  # runs the migrations
    return store


def seed_mlflow_store(folder: Path) -> None:
    """Give ``folder`` an empty MLflow store (``mlflow.db``) whose schema already exists.

    A new SQLite store costs 3-4 s of schema migrations (alembic) on this machine, a copy
    nothing. For tests whose subject is not a new store; the end-to-end tests keep making theirs
    as a user's first run does.
    """
    if not (folder / "mlflow.db").exists():  # never over a store with runs
        shutil.copy2(_empty_mlflow_store(), folder / "mlflow.db")


def run_stage(module: str, *args: str, cwd: Path, timeout: float = 120
              ) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` in ``cwd``: its result, whatever its exit status."""
    import sys

    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    """A user's scene: labels at 10 m, optical at 20 m (one file), SAR as a folder of bands."""
    from .data.rasters import make_user_data

    return make_user_data(tmp_path)


@pytest.fixture
def default_params() -> Params:
    return Params()


# --- a temporary copy of the project, as a user's checkout (shared by the end-to-end tests) ---

PROJECT_SOURCES = ["pipeline", "flows", "dvc.yaml", "params.yaml", "prefect.yaml", ".dvcignore",
                   ".gitignore"]
SMALL_PARAMS = {
    "ingest": {"synthetic": {"height": 96, "width": 96, "region_scale_px": 6.0}},
    "prepare": {"patch_size": 7, "block_size": 16},
    "train": {"epochs": 2, "batch_size": 32, "compare": ["data_parallel", "branch_parallel"]},
    "evaluate": {"inference": {"samples": 1024, "repeats": 2}, "map": {"stride": 2}},
}


def merge(base: dict, override: dict) -> dict:
    """``base`` with ``override``'s values, nested mappings merged."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def sh(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a command of the project (this venv first on PATH); fail the test if it fails."""
    import sys

    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
                        "GIT_COMMITTER_NAME": "test",
                        "GIT_COMMITTER_EMAIL": "test@example.invalid", "COLUMNS": "250"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def dvc(*args: str, cwd: Path) -> str:
    """``dvc <args>`` in ``cwd``; its stdout."""
    import sys

    return sh(sys.executable, "-m", "dvc", *args, cwd=cwd).stdout


def make_project(root: Path, params: dict) -> Path:
    """Copy the project into ``root`` with ``params`` merged into ``params.yaml``.

    Git and DVC are initialised and the copy committed (``dvc exp`` needs a commit).
    """
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_SOURCES:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    base = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(base, params), sort_keys=False))
    sh("git", "init", "-q", cwd=root)
    dvc("init", "-q", cwd=root)
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")  # analytics, remote
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-q", "-m", "project", cwd=root)
    return root
