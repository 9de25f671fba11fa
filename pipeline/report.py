"""Print the results of the latest pipeline run, one row per scheme: ``python -m pipeline.report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.tracking import read_run_reference

COLUMNS = ["scheme", "workers", "train s", "samples/s", "KB sent/step", "max param KB",
           "overall acc", "kappa", "macro F1"]


def scheme_row(scheme: str, metrics_file: Path, model_dir: Path, tracking_uri: str) -> list[str]:
    """One row of the results table, from the scheme's metrics file and MLflow run."""
    import mlflow

    metrics = json.loads(metrics_file.read_text())
    run = mlflow.MlflowClient(tracking_uri).get_run(read_run_reference(model_dir)["run_id"])
    logged = run.data.metrics
    return [
        scheme, f"{logged.get('world_size', float('nan')):.0f}",
        f"{logged.get('training_time_s', float('nan')):.1f}",
        f"{logged.get('samples_per_s', float('nan')):,.0f}",
        f"{logged.get('bytes_sent_per_step', float('nan')) / 1024:,.1f}",
        f"{logged.get('max_worker_param_bytes', float('nan')) / 1024:,.1f}",
        f"{metrics['overall_accuracy']:.3f}", f"{metrics['kappa']:.3f}",
        f"{metrics['macro_f1']:.3f}",
    ]


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns under :data:`COLUMNS`."""
    widths = [max(len(r[i]) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [COLUMNS, *rows])


def main(argv: list[str] | None = None) -> None:
    """Print the results table and how to open the MLflow UI."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="metrics", help="folder of <scheme>.json files")
    parser.add_argument("--models", default="models", help="folder of <scheme>/ model folders")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    rows = [scheme_row(s, Path(args.metrics) / f"{s}.json", Path(args.models) / s,
                       params.tracking.uri) for s in params.train.compare]
    print(f"\nResults of the latest pipeline run (MLflow store {params.tracking.uri}, experiment "
          f"{params.tracking.experiment}):\n")
    print(format_table(rows))
    print("\nCompare runs in the MLflow UI: `make ui`, then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
