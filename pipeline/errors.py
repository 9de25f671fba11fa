"""Errors a user can hit, each saying what went wrong and how to fix it.

Every class subclasses the builtin a caller would naturally catch, so ``except ValueError``
still works, and builds its message from the bad value plus the fix.
"""

from __future__ import annotations

from pathlib import Path


class ParamsError(ValueError):
    """A value in ``params.yaml`` is missing, unknown or out of range."""

    def __init__(self, path: Path | str, field: str, problem: str, fix: str) -> None:
        self.path = Path(path)
        self.field = field
        super().__init__(f"{self.path}: field '{field}': {problem}. Fix: {fix}")


class JavaNotFoundError(RuntimeError):
    """Spark needs a Java runtime and none was found."""

    def __init__(self) -> None:
        super().__init__(
            "Java was not found: Spark (PySpark 4) needs a Java 17+ runtime. "
            "Fix: install one (e.g. `apt-get install openjdk-17-jre-headless`) and make sure "
            "`java` is on PATH, or set JAVA_HOME to its installation directory."
        )


class PortInUseError(OSError):
    """A server the project starts cannot bind its port."""

    def __init__(self, host: str, port: int, what: str, fix: str) -> None:
        self.host = host
        self.port = port
        super().__init__(f"Port {host}:{port} for {what} is already in use. Fix: {fix}")


class PipelineBusyError(RuntimeError):
    """Another pipeline run holds the project."""

    def __init__(self, lock: Path) -> None:
        self.lock = lock
        super().__init__(
            f"another pipeline run is in progress in this project (it holds {lock}). Fix: wait "
            "for it to finish, or run the second pipeline in its own copy of the project "
            "(e.g. `dvc exp run --temp`)")


class DatasetError(ValueError):
    """A dataset on disk is missing, incomplete or inconsistent."""

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")


class TrainingError(RuntimeError):
    """Distributed training failed on the Spark workers."""


class NetworkEmulationError(RuntimeError):
    """The emulated cluster network cannot be built on this machine."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"emulated cluster network: {problem}. Fix: {fix}")


class TrackingStoreError(RuntimeError):
    """The MLflow tracking store named by ``tracking.uri`` cannot be reached."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        super().__init__(
            f"params.yaml: tracking.uri {uri!r}: {problem}. Fix: start the MLflow server there "
            "(e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
            "sqlite:///mlflow.db`), or set tracking.uri to the project's local store "
            "sqlite:///mlflow.db")
