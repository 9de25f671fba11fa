"""A warm process that runs stage commands for ``make run``: imports and Spark paid once.

Every DVC stage is a command of its own (``python -m flows.stage train ...``), and on a small
machine such a process pays ~6-10 s of imports (torch, MLflow, Prefect) and ~10 s of JVM and
SparkContext start before its work. Under ``make run`` (:mod:`flows.with_prefect_server`) one
host process has imported the stages and started one Spark application before ``dvc repro``
begins; each stage command then hands its command line, working folder, environment and its
standard streams (the file descriptors themselves, over a Unix socket) to the host, which runs
the stage exactly as the command would — same code, same outputs, same MLflow runs — and sends
back its exit status. The stage finds the host's Spark session active and uses it
(:func:`pipeline.spark.spark_session` reuses an active session and leaves it running).

One stage at a time; Ctrl-C or SIGTERM to the stage command is passed on to the host as
SIGINT, which interrupts the stage as it would the command (workers stopped, runs marked
FAILED, exit status 130). When the host is not there, the stage command runs in its own
process (:mod:`flows.stage`): the host only saves time, it never changes a result.

``python -m flows.stage_host --socket PATH [--params params.yaml]`` runs a host until SIGTERM or
SIGINT; :class:`StageHost` starts one for the duration of a block.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from flows.stage import HOST_VARIABLE, STAGES

if TYPE_CHECKING:
    from pipeline.config import SparkParams

STREAMS = (0, 1, 2)
# what the stages import only when they get there: the model export of mlflow.pytorch (pt2,
# torch.export: ~5 s to import on 2 cores, paid by the first training stage otherwise)
LAZY_IMPORTS = ("mlflow.models", "mlflow.pytorch", "torch.export")


def _exit_status(exit: SystemExit) -> int:
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    print(exit.code, file=sys.stderr)  # what the interpreter does with a message
    return 1


def run_here(request: dict, streams: list[int]) -> int:
    """Run the stage of ``request`` in this process with the client's streams, env and folder.

    Everything is put back afterwards; the exit status the command would have had is returned.
    """
    from flows._cli import STAGE_STARTED

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_streams = [os.dup(fd) for fd in STREAMS]
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    started = STAGE_STARTED.set(float(request["started"]))
    try:
        for fd, received in zip(STREAMS, streams, strict=True):
            os.dup2(received, fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        importlib.import_module(f"flows.{request['stage']}").main(list(request["argv"]))
        return 0
    except SystemExit as exit:
        return _exit_status(exit)
    except KeyboardInterrupt:
        return 130
    except BaseException:  # what the command would have printed before dying
        traceback.print_exc()
        return 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, saved in zip(STREAMS, saved_streams, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        for received in streams:
            os.close(received)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        STAGE_STARTED.reset(started)


def _serve_one(connection: socket.socket) -> None:
    """Run one stage command's request; a client that went away costs nothing but its stage."""
    try:
        message, streams, _, _ = socket.recv_fds(connection, 1 << 20, len(STREAMS))
        request = json.loads(message.decode())
        refused = _refusal(request, streams)
        if refused:
            for received in streams:
                os.close(received)
            connection.sendall(json.dumps({"refused": refused}).encode() + b"\n")
            return
        connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        status = run_here(request, streams)
        connection.sendall(json.dumps({"exit": status}).encode() + b"\n")
    except (OSError, ValueError) as exc:
        print(f"stage host: a request failed: {exc!r}", file=sys.stderr, flush=True)


def _refusal(request: object, streams: list[int]) -> str | None:
    """Why the host does not run ``request`` (the command then runs it itself), if it does not.

    A host serves the project it was started in: MLflow's and Spark's state in the process
    belong to that project (a relative tracking URI, the application's settings).
    """
    if not isinstance(request, dict) or request.get("stage") not in STAGES \
            or len(streams) != len(STREAMS):
        return "not a stage request"
    if os.path.realpath(str(request.get("cwd"))) != os.path.realpath(os.getcwd()):
        return f"this host serves the project in {os.getcwd()}"
    return None


def _spark_params(params: str) -> SparkParams | None:
    """The Spark settings of ``params``, ``None`` if it cannot be read.

    Each stage then says why, as it would without a host.
    """
    from pipeline.config import load_params
    from pipeline.errors import ParamsError

    try:
        return load_params(params).spark
    except (ParamsError, OSError):
        return None


def _warm(spark: Any) -> None:
    """Start what a stage's first Spark job would wait for.

    The UI's REST layer (the training reads its task metrics there) and the executors' Python
    daemons and workers (one job, a task a slot).
    """
    from pipeline.training.spark_metrics import prime

    prime(spark)
    slots = spark.sparkContext.defaultParallelism
    spark.sparkContext.parallelize(range(slots), slots).count()


def serve(path: Path, params: str) -> None:
    """Import the stages, start the Spark application of ``params``, serve on ``path``."""
    from flows._cli import interrupt
    from pipeline.errors import JavaNotFoundError
    from pipeline.spark import spark_session

    for module in (*(f"flows.{stage}" for stage in STAGES), *LAZY_IMPORTS):
        importlib.import_module(module)
    # SIGTERM unwinds like Ctrl-C, as in a stage command: a stage's status, or the host's stop
    signal.signal(signal.SIGTERM, interrupt)
    with ExitStack() as stack:
        spark = _spark_params(params)
        if spark is not None:  # else each stage starts its own application, or says why not
            try:
                _warm(stack.enter_context(spark_session(spark)))
            except JavaNotFoundError:
                pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stack.callback(listener.close)
        binding = path.with_name(path.name + ".new")  # the path appears once it answers
        binding.unlink(missing_ok=True)
        listener.bind(str(binding))
        listener.listen(1)
        binding.rename(path)
        stack.callback(path.unlink, missing_ok=True)
        print(f"stage host ready on {path}", file=sys.stderr, flush=True)
        try:
            while True:
                connection, _ = listener.accept()
                with connection:
                    _serve_one(connection)
        except KeyboardInterrupt:  # between stages (a stage's own turns into its status)
            print("stage host stopped", file=sys.stderr, flush=True)


class StageHost:
    """A stage host process, started at once, stopped on exit from ``with`` (or :meth:`stop`).

    Run with ``env`` in the project folder ``root`` (default: this one), it writes to
    ``output`` (default: this process's output): so do the Spark tasks it starts (the workers'
    progress lines, Spark's warnings), as they would from a stage command. Its socket lives in
    a temporary folder (a socket's path is short). It runs in a session of its own (the Ctrl-C
    meant for ``dvc repro`` reaches the stage commands, which pass it on) and is stopped by PID.
    """

    def __init__(self, env: dict[str, str], root: Path | None = None,
                 params: str = "params.yaml", output: IO[bytes] | None = None) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="landcover-host-")
        self.path = Path(self._folder.name) / "host.sock"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "flows.stage_host", "--socket", str(self.path),
             "--params", params], cwd=root, env=env, stdout=output,
            stderr=output and subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout_s: float = 180) -> dict[str, str]:
        """Wait until it answers; the variables that send a stage command to it."""
        deadline = time.monotonic() + timeout_s
        while not self.path.exists():
            if self._process.poll() is not None:
                raise RuntimeError(f"the stage host exited with status "
                                   f"{self._process.returncode} (its error is printed above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the stage host was not ready in {timeout_s:.0f} s")
            time.sleep(0.2)
        return {HOST_VARIABLE: str(self.path)}

    def stop(self) -> None:
        """Stop it (SIGINT, then SIGTERM, then SIGKILL) and remove its socket's folder."""
        from flows.serve import stop

        stop(self._process, timeout_s=30)
        self._folder.cleanup()

    def __enter__(self) -> StageHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.stage_host --socket PATH [--params params.yaml]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    serve(args.socket, args.params)


if __name__ == "__main__":
    main()
