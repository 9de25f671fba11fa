"""The command line of a stage: parse paths, run the flow, turn known errors into one line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    TrainingError,
)
from pipeline.io import write_json

if TYPE_CHECKING:
    from prefect import Flow

USER_ERRORS = (ParamsError, JavaNotFoundError, PortInUseError, DatasetError, TrainingError,
               PipelineBusyError)


def run_stage(flow: Flow[..., Any], description: str, paths: dict[str, str | None],
              argv: list[str] | None = None) -> Any:
    """Parse ``--<name> PATH`` for each entry of ``paths`` (defaults as given) and run ``flow``.

    A known user error (bad params, missing Java, missing data, failed training) is printed as one
    ``error:`` line on stderr and the process exits with status 1. A stage that succeeds records
    its wall time, from process start (imports included), in ``logs/stage_times/``.
    """
    parser = argparse.ArgumentParser(description=description)
    for name, default in paths.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=default,
                            help=f"(default: {default})")
    args = vars(parser.parse_args(argv))
    with reporting_user_errors("the stage stopped its workers; its MLflow run is marked FAILED"):
        if "params" in args:  # a typo stops here, before any flow run starts
            load_params(args["params"]).for_scheme(args.get("scheme"))
        result = flow(**args)
    record_stage_time(flow.name, args.get("scheme"))
    return result


def record_stage_time(name: str, scheme: str | None = None) -> None:
    """Write this process's wall time so far as stage ``name`` (of ``scheme``) took it."""
    stage = name.removeprefix("landcover-") + (f"@{scheme}" if scheme else "")
    process = psutil.Process()
    write_json(Path(LAYOUT.stage_times) / f"{stage}.json", {
        "stage": stage, "seconds": round(time.time() - process.create_time(), 1),
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
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        raise SystemExit(130) from None


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: Spark jobs cancelled, workers stopped, runs marked."""
    raise KeyboardInterrupt(f"signal {signum}")
