"""The process environment the stack needs, set once by every entry point.

Spark's Python workers must run this interpreter, Spark must stay on loopback unless told
otherwise, Prefect keeps its state inside the project, and the telemetry of Prefect, MLflow and DVC
is switched off (it tries the network, which is closed on many research machines). Values the user
has already set win: every setting is a default.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from pipeline.errors import JavaNotFoundError, PipelineBusyError, PortInUseError

# glibc's malloc: blocks up to MMAP_THRESHOLD come from the heap, and the heap keeps up to
# TRIM_THRESHOLD of freed memory instead of handing it back to the kernel. By default it returns
# blocks of a few MB (a batch's activations, a window's arrays) when they are freed and takes
# fresh, zeroed pages at the next allocation: measured here, a 1-thread forward of the default
# model over 256 samples took 15.5 ms instead of 6.1 ms, every batch.
MALLOC_MMAP_THRESHOLD = 32 << 20  # the documented maximum (DEFAULT_MMAP_THRESHOLD_MAX)
MALLOC_TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt() parameters (malloc.h)


def allocator_environment() -> dict[str, str]:
    """The variables that give processes started from here :func:`retain_freed_memory`."""
    return {"MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM_THRESHOLD)}


def retain_freed_memory() -> bool:
    """Make this process's malloc keep freed memory for reuse (glibc only; see above).

    Processes started after :func:`configure_environment` (the Spark JVM and its Python workers,
    torchrun's workers) read :func:`allocator_environment` when they start; the process that is
    already running needs this call. Returns False, changing nothing, where the C library is not
    glibc or the user set the variables themselves.
    """
    if any(key in os.environ and os.environ[key] != value
           for key, value in allocator_environment().items()):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


def environment_defaults(project_root: Path) -> dict[str, str]:
    """The environment variables the pipeline sets unless the user set them already."""
    return allocator_environment() | {
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
    retain_freed_memory()


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
