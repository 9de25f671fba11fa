import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import JavaNotFoundError, PortInUseError
from pipeline.runtime import environment_defaults, require_free_port, require_java

from .conftest import PROJECT_ROOT


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JavaNotFoundError, match="Java 17.*JAVA_HOME"):
        require_java()


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}.*Fix: pick another"):
            require_free_port("127.0.0.1", port, "a server", "pick another")


def test_environment_keeps_spark_on_loopback_and_telemetry_off(tmp_path: Path) -> None:
    env = environment_defaults(tmp_path)
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["PYSPARK_PYTHON"] == sys.executable
    assert env["PREFECT_HOME"].startswith(str(tmp_path))
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["DVC_NO_ANALYTICS"] == "1"


def test_ui_refuses_a_busy_port_with_the_fix() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "pipeline.ui", "--port", str(port)],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                              env=os.environ | {"PATH": os.environ["PATH"]})
    assert done.returncode == 1
    assert f"Port 127.0.0.1:{port} for the MLflow UI is already in use" in done.stderr
    assert f"make ui PORT={port + 1}" in done.stderr
