"""A stage command as ``dvc.yaml`` runs it: ``python -m flows.stage <stage> [ARGS...]``.

The same as ``python -m flows.<stage> [ARGS...]``, but when a stage host is running
(:mod:`flows.stage_host`, started by ``make run``; its socket in ``LANDCOVER_STAGE_HOST``) the
stage runs there, in a process that has its imports and its Spark application already, with
this command's streams, folder and environment. This module imports nothing heavy, so handing
the stage over costs milliseconds. Without a host, or if it cannot be reached, the stage runs
here.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
import time

HOST_VARIABLE = "LANDCOVER_STAGE_HOST"
STAGES = ("ingest", "prepare", "train", "evaluate", "compare")
STARTED = time.time()


def _connect(path: str) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        return None
    return connection


def run_on_host(path: str, stage: str, argv: list[str]) -> int | None:
    """Run ``stage`` on the host at ``path``; its exit status, or ``None`` if none answers."""
    connection = _connect(path)
    if connection is None:
        return None
    with connection:
        request = {"stage": stage, "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "started": STARTED}
        socket.send_fds(connection, [json.dumps(request).encode()], [0, 1, 2])
        replies = connection.makefile("r", encoding="utf-8")
        accepted = json.loads(replies.readline() or "{}")
        if "pid" not in accepted:
            return None
        host = int(accepted["pid"])

        def pass_on(signum: int, frame: object) -> None:
            os.kill(host, signal.SIGINT)  # the stage unwinds as it would on Ctrl-C

        signal.signal(signal.SIGINT, pass_on)
        signal.signal(signal.SIGTERM, pass_on)
        line = replies.readline()
    if not line:
        print(f"error: the stage host (pid {host}) stopped while running stage {stage}",
              file=sys.stderr)
        return 1
    return int(json.loads(line)["exit"])


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.stage <stage> [ARGS...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in STAGES:
        raise SystemExit(f"usage: python -m flows.stage {{{','.join(STAGES)}}} [ARGS...]")
    stage, rest = args[0], args[1:]
    host = os.environ.get(HOST_VARIABLE)
    status = run_on_host(host, stage, rest) if host else None
    if status is not None:
        raise SystemExit(status)
    importlib.import_module(f"flows.{stage}").main(rest)


if __name__ == "__main__":
    main()
