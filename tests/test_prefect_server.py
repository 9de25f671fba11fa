"""`make run`'s one Prefect server: shared by the command it runs, stopped when that ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

from .conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

# The command run under the server: checks the server answers, records its URL and the link
# Prefect would log for a flow run, then exits with the status it is given (or waits for a signal).
CHILD = """
import os, sys, time, urllib.request
url = os.environ["PREFECT_API_URL"]
assert urllib.request.urlopen(url + "/health", timeout=10).status == 200
print(url, flush=True)
print(os.environ.get("LANDCOVER_STAGE_HOST"), flush=True)  # the stage host's socket
if sys.argv[1] != "wait":
    from prefect.utilities.urls import url_for
    print("link:", url_for("flow-run", obj_id="9f9744b8-6c3e-4524-b99d-8ddc85654de7"))
if sys.argv[1] == "wait":
    time.sleep(600)  # until the signal
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's ``PREFECT_HOME``, shared by the module's commands: the first server creates
    its database, the second starts on it (as every ``make run`` after the first does)."""
    return tmp_path_factory.mktemp("prefect-home")


def launch(tmp_path: Path, home: Path, *child: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "flows.with_prefect_server", sys.executable,
                             "-c", CHILD, *child], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def answers(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/health", timeout=5).status == 200
    except OSError:
        return False


def test_the_command_shares_one_server_that_is_stopped_when_it_fails(tmp_path: Path,
                                                                    home: Path) -> None:
    process = launch(tmp_path, home, "3")
    stdout, stderr = process.communicate(timeout=180)

    assert process.returncode == 3, stderr  # the command's status, passed on
    url, host, link = stdout.strip().splitlines()
    assert link == "link: None"  # no "View at" a UI the server does not serve
    assert url.startswith("http://127.0.0.1:")
    assert not answers(url)  # stopped with the command
    assert (home / "shared-server.log").is_file()
    assert host.endswith(".sock") and not Path(host).exists()  # a stage host ran, and stopped
    assert not stage_hosts(tmp_path)


def stage_hosts(project: Path) -> list[psutil.Process]:
    """The stage hosts serving ``project``."""
    return [p for p in psutil.process_iter(["cmdline", "cwd"])
            if "flows.stage_host" in " ".join(p.info["cmdline"] or [])
            and p.info["cwd"] == str(project)]


def test_sigterm_stops_the_command_and_the_server(tmp_path: Path, home: Path) -> None:
    process = launch(tmp_path, home, "wait")
    url = process.stdout.readline().strip()  # the command runs, the server answered it
    assert url, process.communicate(timeout=60)
    assert stage_hosts(tmp_path)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert not answers(url)
    assert not stage_hosts(tmp_path)
