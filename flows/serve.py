"""Serve the scheduled deployments of ``prefect.yaml``: ``python -m flows.serve`` (``make serve``).

Starts a Prefect server on 127.0.0.1 (unless ``--api-url`` names a running one), creates the
``process`` work pool, runs ``prefect deploy --all`` from the project root, and starts a worker
that runs the scheduled (and manually triggered) flow runs. Ctrl-C stops the worker and the
server it started. The processes are started and stopped by PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import PortInUseError
from pipeline.runtime import configure_environment, require_free_port

WORK_POOL = "landcover-process"


def prefect(*args: str) -> list[str]:
    """The command line of the ``prefect`` CLI of this interpreter."""
    return [sys.executable, "-m", "prefect", *args]


def start_server(host: str, port: int, log: Path) -> subprocess.Popen:
    """Start ``prefect server start`` on ``host:port`` (telemetry off), logging to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            prefect("server", "start", "--host", host, "--port", str(port), "--analytics-off"),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_healthy(api_url: str, server: subprocess.Popen | None, timeout_s: float = 180) -> None:
    """Wait until ``<api_url>/health`` answers; raise if the server exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise TimeoutError(f"the Prefect server at {api_url} did not answer in {timeout_s:.0f}s")


def deploy(project: Path, env: dict[str, str]) -> None:
    """Create the work pool and every deployment of ``project/prefect.yaml``."""
    for command in (prefect("work-pool", "create", WORK_POOL, "--type", "process",
                            "--overwrite"),
                    prefect("deploy", "--all", "--no-prompt")):
        subprocess.run(command, cwd=project, env=env, check=True)


def start_worker(project: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a process worker of the work pool."""
    with open(log, "ab") as out:
        return subprocess.Popen(prefect("worker", "start", "--pool", WORK_POOL, "--type",
                                        "process"),
                                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen | None, timeout_s: float = 30) -> None:
    """Stop ``process`` (SIGINT, which a Prefect worker obeys; then SIGTERM, then SIGKILL)."""
    if process is None or process.poll() is not None:
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        try:
            process.send_signal(sig)
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def main(argv: list[str] | None = None) -> None:
    """Start (or reuse) a server, deploy, and run a worker until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--api-url", default=None, help="a running server's API URL")
    args = parser.parse_args(argv)
    project = Path.cwd()
    configure_environment(project)
    api_url = args.api_url or f"http://{args.host}:{args.port}/api"
    env = os.environ | {"PREFECT_API_URL": api_url}
    log_dir = project / ".prefect"
    log_dir.mkdir(exist_ok=True)
    server = worker = None
    try:
        if args.api_url is None:
            require_free_port(args.host, args.port, "the Prefect server",
                              f"stop what is using it, or `make serve PREFECT_PORT="
                              f"{args.port + 1}`")
            server = start_server(args.host, args.port, log_dir / "server.log")
        wait_healthy(api_url, server)
        deploy(project, env)
        worker = start_worker(project, env, log_dir / "worker.log")
        print(f"Prefect UI on {api_url.removesuffix('/api')}; deployments of prefect.yaml "
              f"served by a worker of pool {WORK_POOL} (logs in .prefect/); Ctrl-C to stop",
              flush=True)
        worker.wait()
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        stop(worker)
        stop(server)


if __name__ == "__main__":
    main()
