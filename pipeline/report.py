"""Print the results of the latest pipeline run, one row per scheme: ``python -m pipeline.report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.tracking import read_run_reference

TRAINING_COLUMNS = [  # (header, MLflow metric, scale, format)
    ("workers", "world_size", 1, "{:.0f}"),
    ("train s", "training_time_s", 1, "{:.1f}"),
    ("samples/s", "samples_per_s", 1, "{:,.0f}"),
    ("KB sent/step", "bytes_sent_per_step", 1 / 1024, "{:,.1f}"),
    ("max param KB", "max_worker_param_bytes", 1 / 1024, "{:,.1f}"),
]
QUALITY_COLUMNS = {  # by task: (header, metrics-file key)
    "single_label": [("overall acc", "overall_accuracy"), ("kappa", "kappa"),
                     ("macro F1", "macro_f1")],
    "multi_label": [("micro F1", "micro_f1"), ("macro F1", "macro_f1"),
                    ("mAP", "mean_average_precision")],
}


def results_table(schemes: list[str], metrics_dir: Path, models_dir: Path,
                  tracking_uri: str) -> str:
    """One row per scheme: training figures from its MLflow run, test metrics from its file."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    files = {s: json.loads((metrics_dir / f"{s}.json").read_text()) for s in schemes}
    task = "multi_label" if any("micro_f1" in m for m in files.values()) else "single_label"
    header = ["scheme", *(c[0] for c in TRAINING_COLUMNS), *(c[0] for c in QUALITY_COLUMNS[task])]
    rows = [header]
    for scheme in schemes:
        logged = client.get_run(read_run_reference(models_dir / scheme)["run_id"]).data.metrics
        rows.append([scheme]
                    + [fmt.format(logged.get(key, float("nan")) * scale)
                       for _, key, scale, fmt in TRAINING_COLUMNS]
                    + [f"{files[scheme].get(key, float('nan')):.3f}"
                       for _, key in QUALITY_COLUMNS[task]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def main(argv: list[str] | None = None) -> None:
    """Print the results table and how to open the MLflow UI."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="metrics", help="folder of <scheme>.json files")
    parser.add_argument("--models", default="models", help="folder of <scheme>/ model folders")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    print(f"\nResults of the latest pipeline run (MLflow store {params.tracking.uri}, experiment "
          f"{params.tracking.experiment}):\n")
    print(results_table(params.train.compare, Path(args.metrics), Path(args.models),
                        params.tracking.uri))
    print("\nCompare runs in the MLflow UI: `make ui`, then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
