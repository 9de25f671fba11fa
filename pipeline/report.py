"""Print the results of the latest pipeline run: ``python -m pipeline.report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import load_params
from pipeline.tracking import read_run_reference


def results_table(metrics_path: Path, model_dir: Path, tracking_uri: str) -> str:
    """A short table of the latest run: scheme, workers, training time and test metrics."""
    import mlflow

    metrics = json.loads(metrics_path.read_text())
    reference = read_run_reference(model_dir)
    run = mlflow.MlflowClient(tracking_uri).get_run(reference["run_id"])
    header = ["scheme", "workers", "train time", "overall acc", "kappa", "macro F1"]
    row = [
        run.data.params.get("train.scheme", "?"),
        run.data.params.get("train.workers", "?"),
        f"{run.data.metrics.get('training_time_s', float('nan')):.1f} s",
        f"{metrics['overall_accuracy']:.3f}",
        f"{metrics['kappa']:.3f}",
        f"{metrics['macro_f1']:.3f}",
    ]
    widths = [max(len(h), len(v)) for h, v in zip(header, row, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
             for cells in (header, row)]
    return "\n".join([
        f"MLflow run {reference['run_id']} ({run.info.status}) in {tracking_uri}",
        *lines,
    ])


def main(argv: list[str] | None = None) -> None:
    """Print the results table and how to open the MLflow UI."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="metrics/evaluation.json")
    parser.add_argument("--model", default="models")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    print()
    print(results_table(Path(args.metrics), Path(args.model), params.tracking.uri))
    print()
    print("Compare runs in the MLflow UI: `make ui`, then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
