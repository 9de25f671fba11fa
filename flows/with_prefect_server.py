"""Run a command with the services ``make run`` shares between its stages.

``make run`` runs ``python -m flows.with_prefect_server dvc repro``. Without it, every stage
command starts and stops Prefect's temporary server of its own (about 10 s each), imports the
stack and starts a Spark application of its own (another ~15-20 s each on a small machine).
With it, for the duration of the command:

- one Prefect API server on 127.0.0.1 on a free port, where every stage command reports its
  flow run (``PREFECT_API_URL``). It is the one Prefect starts as its temporary server (its
  API, no UI), on the project's ``PREFECT_HOME``; its log goes to
  ``<PREFECT_HOME>/shared-server.log``. A ``PREFECT_API_URL`` already set (a server of the
  user's) is used as it is and no server is started;
- one stage host (:mod:`flows.stage_host`) that has imported the stages and started the Spark
  application of ``params.yaml`` once, and runs each stage command handed to it
  (``python -m flows.stage``, as ``dvc.yaml`` runs them) with the same code and outputs.
  ``--no-stage-host`` leaves it out (each stage in its own process, as plain ``dvc repro``).

Everything is stopped when the command ends: on success, on failure, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil

from flows.serve import stop, wait_healthy
from flows.stage_host import StageHost
from pipeline.cluster import free_port
from pipeline.runtime import configure_environment

SERVER_LOG = "shared-server.log"


def server_command(port: int) -> list[str]:
    """The command line of Prefect's API server (as its temporary server runs it) on ``port``."""
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    app_dir = Path(spec.origin).parent.parent if spec and spec.origin else Path.cwd()
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]


@contextmanager
def prefect_server(port: int | None = None, timeout_s: float = 120) -> Iterator[str]:
    """A Prefect API server on 127.0.0.1 for the duration of the block; yields its API URL.

    On ``port`` (default: a free one). It runs in a session of its own, so that the Ctrl-C
    meant for the command does not stop it before the command has reported its flow runs as
    cancelled.
    """
    port = port or free_port()
    home = Path(os.environ["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PREFECT_UI_ENABLED": "0", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    with open(home / SERVER_LOG, "ab") as log:
        server = subprocess.Popen(server_command(port), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api_url, server, timeout_s=timeout_s)
        yield api_url
    finally:
        stop(server, timeout_s=10)


def run_with_server(command: list[str], host: bool = True) -> int:
    """Run ``command`` with ``PREFECT_API_URL`` naming one shared server; its exit status.

    With ``host``, also with a stage host (:mod:`flows.stage_host`) that runs its stage
    commands. Ctrl-C reaches the command (same process group) and is waited for; SIGTERM is
    passed on to the command and every process below it.
    """
    with ExitStack() as services:
        env, port = dict(os.environ), None
        if not env.get("PREFECT_API_URL"):
            port = free_port()
            # no UI_URL: the server has no UI and is gone after the command: no "View at" links
            env |= {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_UI_URL": ""}
        starting = services.enter_context(StageHost(env)) if host else None
        if port is not None:  # both start at once: the host calls the server only in a stage
            api_url = services.enter_context(prefect_server(port))
            print(f"Prefect API server for this run: {api_url}", file=sys.stderr, flush=True)
        if starting is not None:
            env |= starting.wait_ready()
            print("stage host for this run: ready (stages imported, Spark started)",
                  file=sys.stderr, flush=True)
        child = subprocess.Popen(command, env=env)
        previous = signal.signal(signal.SIGTERM, lambda *_: terminate_tree(child.pid))
        try:
            while True:
                try:
                    status = child.wait()
                    return 128 - status if status < 0 else status  # killed: 128 + signal
                except KeyboardInterrupt:  # the command got it too: wait for it to stop
                    continue
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 1  # not reached: mypy cannot tell that ExitStack does not swallow exceptions


def terminate_tree(pid: int) -> None:
    """SIGTERM to ``pid`` and every process below it (``dvc repro`` leaves its stage running)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            continue


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.with_prefect_server [--no-stage-host] COMMAND [ARGS...]``."""
    command = list(sys.argv[1:] if argv is None else argv)
    host = "--no-stage-host" not in command[:1]
    command = command[0 if host else 1:]
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise SystemExit("usage: python -m flows.with_prefect_server [--no-stage-host] "
                         "COMMAND [ARGS...]")
    configure_environment(Path.cwd())
    try:
        raise SystemExit(run_with_server(command, host=host))
    except KeyboardInterrupt:  # before the command started: the services are stopped already
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
