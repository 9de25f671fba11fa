"""Run a command with one Prefect API server for all of it (``make run``).

``make run`` runs ``python -m flows.with_prefect_server dvc repro``. Without it, every stage
command starts and stops Prefect's temporary server of its own (about 10 s each); with it, the
server starts once, on 127.0.0.1 on a free port, every stage command reports its flow run there
through ``PREFECT_API_URL``, and the server is stopped when the command ends: on success, on
failure, on Ctrl-C and on SIGTERM. ``dvc repro`` keeps a temporary server per stage.

The server is the one Prefect starts as its temporary server (its API, no UI), on the project's
``PREFECT_HOME``; its log goes to ``<PREFECT_HOME>/shared-server.log``. A ``PREFECT_API_URL``
already set (a server of the user's) is used as it is and nothing is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from flows.serve import stop, wait_healthy
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
def prefect_server(timeout_s: float = 120) -> Iterator[str]:
    """A Prefect API server on 127.0.0.1 for the duration of the block; yields its API URL.

    It runs in a session of its own, so that the Ctrl-C meant for the command does not stop it
    before the command has reported its flow runs as cancelled.
    """
    port = free_port()
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


def run_with_server(command: list[str]) -> int:
    """Run ``command`` with ``PREFECT_API_URL`` naming one shared server; its exit status.

    Ctrl-C reaches the command (same process group) and is waited for; SIGTERM is passed on
    to the command and every process below it.
    """
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(command)
    with prefect_server() as api_url:
        print(f"Prefect API server for this run: {api_url}", file=sys.stderr, flush=True)
        # no UI_URL: the server has no UI and is gone after the command, so no "View at" links
        child = subprocess.Popen(command, env=os.environ | {"PREFECT_API_URL": api_url,
                                                            "PREFECT_UI_URL": ""})
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
    """``python -m flows.with_prefect_server COMMAND [ARGS...]``."""
    command = list(sys.argv[1:] if argv is None else argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise SystemExit("usage: python -m flows.with_prefect_server COMMAND [ARGS...]")
    configure_environment(Path.cwd())
    try:
        raise SystemExit(run_with_server(command))
    except KeyboardInterrupt:  # before the command started: the server is stopped already
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
