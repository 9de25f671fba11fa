"""Evaluate stage: test-split metrics, written for DVC and logged to the model's MLflow run."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from flows._cli import run_stage
from flows.layout import LAYOUT
from pipeline.config import load_params
from pipeline.evaluation import evaluate_model
from pipeline.io import write_json
from pipeline.tracking import log_evaluation, read_run_reference, resumed_run


@task
def compute_metrics(model: str, data: str, threshold: float) -> dict[str, float]:
    """Metrics of the model in ``model`` on the test split of ``data``."""
    return evaluate_model(Path(model), Path(data), threshold=threshold)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str = LAYOUT.params, model: str = LAYOUT.model_dir("data_parallel"),
                  data: str = LAYOUT.prepared,
                  metrics: str = LAYOUT.metrics_file("data_parallel")) -> dict[str, float]:
    """Evaluate, write ``metrics`` (JSON) and log the metrics to the model's MLflow run."""
    config = load_params(params)
    with resumed_run(read_run_reference(Path(model)), config.tracking):
        results = compute_metrics(model, data, config.evaluate.threshold)
        log_evaluation(results)
        write_json(metrics, results)
    print("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
    return results


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.evaluate [--params P] [--model DIR] [--data DIR] [--metrics FILE]``."""
    run_stage(evaluate_flow, __doc__, {
        "params": LAYOUT.params, "model": LAYOUT.model_dir("data_parallel"),
        "data": LAYOUT.prepared, "metrics": LAYOUT.metrics_file("data_parallel")}, argv)


if __name__ == "__main__":
    main()
