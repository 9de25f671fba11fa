"""The command line of a stage: parse paths, run the flow, turn known errors into one line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from flows.layout import LAYOUT
from pipeline.config import load_params
from pipeline.errors import (
    DatasetError,
    JavaNotFoundError,
    ParamsError,
    PipelineBusyError,
    PortInUseError,
    TrackingStoreError,
    TrainingError,
)
from pipeline.io import write_json
from pipeline.stage_clock import CLOCK

if TYPE_CHECKING:
    from prefect import Flow

# When the stage command started, if not this process (a stage host runs it: flows.stage_host)
STAGE_STARTED: ContextVar[float | None] = ContextVar("stage_started", default=None)

USER_ERRORS = (ParamsError, JavaNotFoundError, PortInUseError, DatasetError, TrainingError,
               PipelineBusyError, TrackingStoreError)


def run_stage(flow: Flow[..., Any], description: str, paths: dict[str, str | None],
              argv: list[str] | None = None, tracked: bool = False) -> Any:
    """Parse ``--<name> PATH`` for each entry of ``paths`` (defaults as given) and run ``flow``.

    A known user error (bad params, missing Java, missing data, failed training, an MLflow
    server that does not answer) is printed as one ``error:`` line on stderr, without the
    traceback Prefect logs for the failed flow run (that stays in the stage's log file,
    ``logs/stages/<stage>.log``), and the process exits with status 1. A ``tracked`` stage
    (one that writes to MLflow) checks the tracking store before its flow starts. A stage that
    succeeds records its wall time, from process start (imports included), and where it went
    (:mod:`pipeline.stage_clock`) in ``logs/stage_times/``.
    """
    before_flow_s = time.time() - command_started()
    CLOCK.reset()
    parser = argparse.ArgumentParser(description=description)
    for name, default in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default,
                            help=f"(default: {default})")
    args = vars(parser.parse_args(argv))
    stage = stage_name(flow.name, args.get("scheme"))
    with reporting_user_errors("the stage stopped its workers; its MLflow run is marked FAILED"), \
            stage_log(Path(LAYOUT.stage_logs) / f"{stage}.log"):
        if "params" in args:  # a typo stops here, before any flow run starts
            config = load_params(args["params"]).for_scheme(args.get("scheme"))
            if tracked:
                from pipeline.tracking import check_store

                check_store(config.tracking.uri)
        result = flow(**args)
    record_stage_time(flow.name, args.get("scheme"), before_flow_s)
    return result


def command_started() -> float:
    """When the stage command started (its process, or the command that handed it to a host)."""
    started = STAGE_STARTED.get()
    return started if started is not None else psutil.Process().create_time()


def stage_name(name: str, scheme: str | None = None) -> str:
    """The stage of flow ``name`` as ``dvc.yaml`` names it (``train@hybrid``)."""
    return name.removeprefix("landcover-") + (f"@{scheme}" if scheme else "")


class _NotUserErrors(logging.Filter):
    """Keeps the records about a user error (its traceback, the failed state) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            return False
        message = record.getMessage()
        return not (message.startswith("Finished in state Failed")
                    and any(error.__name__ in message for error in USER_ERRORS))


@contextmanager
def stage_log(path: Path) -> Iterator[None]:
    """Log Prefect's records of this stage, tracebacks included, to ``path`` (overwritten).

    The console keeps every record except those about a user error, which the stage reports
    as one ``error:`` line instead.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, mode="w", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - "
                                           "%(message)s"))
    prefect_logger = logging.getLogger("prefect")  # flow and task run records pass through it
    prefect_logger.addHandler(to_file)
    console = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
               and not isinstance(h, logging.FileHandler)]
    quiet = _NotUserErrors()
    for handler in console:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in console:
            handler.removeFilter(quiet)
        prefect_logger.removeHandler(to_file)
        to_file.close()


def record_stage_time(name: str, scheme: str | None = None, before_flow_s: float = 0.0) -> None:
    """Write this process's wall time so far as stage ``name`` (of ``scheme``) took it.

    With its breakdown: ``work_s``, ``outside_work_s`` and the ``phases`` the stage marked on
    :data:`~pipeline.stage_clock.CLOCK`, ``before_flow_s`` of them before its flow started.
    """
    stage = stage_name(name, scheme)
    started = command_started()
    seconds = time.time() - started
    write_json(Path(LAYOUT.stage_times) / f"{stage}.json", {
        "stage": stage, "seconds": round(seconds, 1),
        "ran_on": "own process" if STAGE_STARTED.get() is None else "stage host",
        **CLOCK.breakdown(seconds, before_flow_s),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds")})


@contextmanager
def reporting_user_errors(interrupted: str) -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C and report user errors and interruptions.

    A known user error becomes one ``error:`` line and exit status 1, an interruption the
    ``interrupted`` line and exit status 130.
    """
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except USER_ERRORS as exc:
        flush_prefect()
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None


def flush_prefect(timeout_s: float = 30.0) -> None:
    """Send the events and logs Prefect still queues now, not at exit.

    Its services drain at interpreter exit and, on a busy machine, log "Still processing
    items" there, after the stage's ``error:`` line; draining first keeps that line the last.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=timeout_s, at_exit=False)


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: Spark jobs cancelled, workers stopped, runs marked."""
    raise KeyboardInterrupt(f"signal {signum}")
