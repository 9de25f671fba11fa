"""The process environment the stack needs, set once by every entry point.

Spark's Python workers must run this interpreter, Spark must stay on loopback unless told
otherwise, Prefect keeps its state inside the project, and the telemetry of Prefect, MLflow and DVC
is switched off (it tries the network, which is closed on many research machines). Values the user
has already set win: every setting is a default.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

from collections.abc import Iterator
from contextlib import contextmanager

import filelock

from pipeline.errors import JavaNotFoundError, PipelineBusyError, PortInUseError


def environment_defaults(project_root: Path) -> dict[str, str]:
    """The environment variables the pipeline sets unless the user set them already."""
    return {
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PREFECT_HOME": str(project_root / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
    }


def configure_environment(project_root: Path | None = None) -> None:
    """Apply :func:`environment_defaults` to ``os.environ`` (before Prefect is imported)."""
    root = Path(project_root or Path.cwd()).resolve()
    for key, value in environment_defaults(root).items():
        os.environ.setdefault(key, value)


def require_java() -> str:
    """Return the path of the ``java`` Spark will use, or raise a clear error."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise JavaNotFoundError()
    return found


def require_free_port(host: str, port: int, what: str, fix: str) -> None:
    """Raise :class:`PortInUseError` if ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUseError(host, port, what, fix) from None


@contextmanager
def project_lock(path: Path | str) -> Iterator[None]:
    """Hold the project's pipeline lock, or raise :class:`PipelineBusyError` at once."""
    lock = filelock.FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise PipelineBusyError(Path(path)) from None
    try:
        yield
    finally:
        lock.release()
