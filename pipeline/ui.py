"""Start the MLflow UI over the project's store, on loopback: ``python -m pipeline.ui``."""

from __future__ import annotations

import argparse
import os
import sys

from pipeline.config import load_params
from pipeline.errors import ParamsError, PortInUseError
from pipeline.runtime import configure_environment, require_free_port


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for the project's tracking store."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    """Check the port, then replace this process with ``mlflow ui``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MLFLOW_UI_PORT", 5000)))
    args = parser.parse_args(argv)
    configure_environment()
    try:
        params = load_params(args.params)
        require_free_port(args.host, args.port, "the MLflow UI",
                          f"stop what is using it, or choose another: "
                          f"`make ui PORT={args.port + 1}`")
    except (ParamsError, PortInUseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"MLflow UI on http://{args.host}:{args.port} (Ctrl-C to stop)", flush=True)
    command = ui_command(params.tracking.uri, args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
