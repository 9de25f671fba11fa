"""The comparison of the schemes of one pipeline run, read by metric name from their MLflow runs.

``python -m pipeline.report`` prints the table of the latest pipeline run (``--run ID`` for a
given parent run). The compare stage writes the same table as CSV, Markdown and JSON (a DVC
metrics file) plus the comparison plots, and logs them into the parent run.

Every scheme's run has the same metric names (``TrainResult.metrics()``, the evaluate stage's
``test_*`` with their 95 % intervals, ``test_<metric>_ci_low``/``_high``, shown in the
metric's cell, and ``val_*``); a column says whether a scheme's headline differs from the best
one's by more than the intervals. A metric no run has (e.g. inference timing before it is
measured) is left out, and a metric some runs lack shows as ``-``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import cast

from mlflow.entities import Run

COLUMNS = [  # (MLflow metric or tag, header, format): the table's columns, in order
    ("world_size", "workers", "{:.0f}"),
    ("val_overall_accuracy", "val acc (selects)", "{:.3f}"),
    ("val_micro_f1", "val micro F1 (selects)", "{:.3f}"),
    ("test_overall_accuracy", "overall acc", "{:.3f}"),
    ("test_kappa", "kappa", "{:.3f}"),
    ("test_macro_f1", "macro F1", "{:.3f}"),
    ("test_micro_f1", "micro F1", "{:.3f}"),
    ("test_mean_average_precision", "mAP", "{:.3f}"),
    ("training_time_s", "train s", "{:.1f}"),
    ("samples_per_s", "train samples/s", "{:,.0f}"),
    ("steps", "steps", "{:.0f}"),
    ("step_s_p50", "step s (measured)", "{:.4f}"),
    ("modelled_step_s", "step s (modelled)", "{:.4f}"),
    ("modelled_to_measured_step", "modelled ÷ measured", "{:.2f}"),
    ("link_rate_mbit_s", "link Mbit/s", "{:,.0f}"),
    ("payload_bytes_sent_per_step", "payload B/step", "{:,.0f}"),
    ("payload_bytes_sent_total", "payload B sent", "{:,.0f}"),
    ("wire_bytes_sent_process_group_total", "wire B sent (pg)", "{:,.0f}"),
    ("wire_bytes_sent_spark_total", "wire B sent (Spark)", "{:,.0f}"),
    ("max_worker_param_bytes", "max param bytes", "{:,.0f}"),
    ("inference_samples_per_s", "infer samples/s", "{:,.0f}"),
    ("inference_batch_p50_ms", "infer batch p50 ms", "{:.2f}"),  # submission to decisions
]
INTERVALS = ("test_overall_accuracy", "test_kappa", "test_macro_f1", "test_micro_f1")
VERSUS_BEST = "quality_vs_best"  # the headline's difference to the best scheme's, and whether
# it is larger than the 95 % intervals (they do not overlap: a conservative test)
TABLE_FILES = ("comparison.csv", "comparison.md", "comparison.json")
PLOTS = {  # file -> (x metric, y metric or None for the ranking metric, title)
    "accuracy_vs_bytes_sent.png": ("payload_bytes_sent_total", None,
                                   "quality vs payload bytes sent"),
    "accuracy_vs_training_time.png": ("training_time_s", None, "quality vs training time"),
    "inference_throughput.png": (None, "inference_samples_per_s", "inference throughput"),
}


def _value(run: Run, key: str) -> float | None:
    if key in run.data.metrics:
        return run.data.metrics[key]
    if key == "world_size" and key in run.data.tags:  # a tag on runs of older stages
        return float(run.data.tags[key])
    return None


def comparison_rows(runs: list[Run], modelled_step_s: dict[str, float] | None = None
                    ) -> list[dict[str, object]]:
    """One row per run: scheme, status, then every metric of ``COLUMNS`` any run has, run id.

    ``modelled_step_s`` (scheme -> the cost model's step time) adds the modelled step and its
    ratio to the measured one.
    """
    modelled = modelled_step_s or {}

    def value(run: Run, key: str) -> float | None:
        scheme = run.data.tags.get("scheme", "?")
        if key == "modelled_step_s":
            return modelled.get(scheme)
        if key == "modelled_to_measured_step":
            measured = _value(run, "step_s_p50")
            return modelled[scheme] / measured if scheme in modelled and measured else None
        return _value(run, key)

    present = [key for key, _, _ in COLUMNS if any(value(r, key) is not None for r in runs)]
    present += [f"{key}_ci_{end}" for key in INTERVALS if key in present for end in ("low", "high")
                if any(value(r, f"{key}_ci_{end}") is not None for r in runs)]
    rows = [{"scheme": run.data.tags.get("scheme", "?"), "status": run.info.status}
            | {key: value(run, key) for key in present} for run in runs]
    versus = versus_best(rows)
    return [row | ({VERSUS_BEST: versus[i]} if versus else {}) | {"run_id": run.info.run_id}
            for i, (row, run) in enumerate(zip(rows, runs, strict=True))]


def versus_best(rows: list[dict[str, object]]) -> list[str | None]:
    """Per row, its headline test metric's difference to the best row's, and its meaning.

    The difference is larger than the 95 % intervals when they do not overlap. Empty when no
    row has the headline metric with its interval.
    """
    key = next((k for k in ("test_overall_accuracy", "test_micro_f1")
                if any(isinstance(r.get(f"{k}_ci_low"), float) for r in rows)), None)
    if key is None:
        return []
    scored = [r for r in rows if isinstance(r.get(key), float)]
    best = max(scored, key=lambda r: cast(float, r[key]))
    out: list[str | None] = []
    for row in rows:
        if row is best:
            out.append("best")
        elif row in scored and isinstance(row.get(f"{key}_ci_high"), float):
            beyond = cast(float, row[f"{key}_ci_high"]) < cast(float, best[f"{key}_ci_low"])
            out.append(f"{cast(float, row[key]) - cast(float, best[key]):+.3f}, "
                       + ("beyond the intervals" if beyond else "within the intervals"))
        else:
            out.append(None)
    return out


def modelled_steps_of(parent: Run) -> dict[str, float]:
    """The modelled step time per scheme that the compare stage logged in the parent run."""
    suffix = "_modelled_step_s"
    return {key.removesuffix(suffix): value for key, value in parent.data.metrics.items()
            if key.endswith(suffix)}


def _cell(key: str, value: object, row: dict[str, object] | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        fmt = next((f for k, _, f in COLUMNS if k == key), "{:g}")
        low, high = ((row or {}).get(f"{key}_ci_{end}") for end in ("low", "high"))
        if isinstance(low, float) and isinstance(high, float):  # the 95 % interval
            return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"
        return fmt.format(value)
    return str(value)


def _headers(rows: list[dict[str, object]]) -> list[tuple[str, str]]:
    """The text tables' columns: the intervals are shown inside their metric's cell."""
    names = dict((k, h) for k, h, _ in COLUMNS) | {"scheme": "scheme", "status": "status",
                                                   "run_id": "run",
                                                   VERSUS_BEST: "vs best (95 % intervals)"}
    for key in INTERVALS:
        names[key] = names[key] + " [95 %]"
    return [(k, names.get(k, k)) for k in (rows[0] if rows else []) if "_ci_" not in k]


def format_table(rows: list[dict[str, object]]) -> str:
    """The rows as aligned text for a terminal."""
    if not rows:
        return "(no scheme runs)"
    headers = _headers(rows)
    cells = [[h for _, h in headers]]
    cells += [[_cell(k, r[k])[:8] if k == "run_id" else _cell(k, r[k], r) for k, _ in headers]
              for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def markdown_table(rows: list[dict[str, object]]) -> str:
    """The rows as a Markdown table."""
    headers = _headers(rows)
    lines = ["| " + " | ".join(h for _, h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(k, r[k], r) for k, _ in headers) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_comparison(rows: list[dict[str, object]], out_dir: Path, metric: str) -> list[Path]:
    """Write ``comparison.{csv,md,json}`` and the comparison plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else ["scheme"]
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    (out_dir / "comparison.md").write_text(markdown_table(rows))
    metrics = {str(r["scheme"]): {k: v for k, v in r.items()
                                  if isinstance(v, float) and not math.isnan(v)} for r in rows}
    (out_dir / "comparison.json").write_text(json.dumps(metrics, indent=2) + "\n")
    written = [out_dir / name for name in TABLE_FILES]
    return written + write_plots(rows, out_dir, metric)


def write_plots(rows: list[dict[str, object]], out_dir: Path, metric: str) -> list[Path]:
    """The comparison plots whose metrics some run has (others are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # a model chosen on val_<m> is shown by its test_<m>: the split that is only reported
    reported = "test_" + metric.removeprefix("val_") if metric.startswith("val_") else metric
    for name, (x_key, y_key, title) in PLOTS.items():
        y_key = y_key or reported
        points = [r for r in rows if r.get(y_key) is not None
                  and (x_key is None or r.get(x_key) is not None)]
        if not points:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        labels = [str(r["scheme"]) for r in points]
        ys = [float(cast(float, r[y_key])) for r in points]
        if x_key is None:
            ax.bar(labels, ys, color="tab:blue")
            ax.tick_params(axis="x", rotation=20)
        else:
            xs = [float(cast(float, r[x_key])) for r in points]
            ax.scatter(xs, ys, color="tab:blue")
            for x, y, label in zip(xs, ys, labels, strict=True):
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4))
            ax.set_xlabel(x_key)
        ax.set_ylabel(y_key)
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> None:
    """Print the comparison table of the latest pipeline run, or of ``--run``."""
    from pipeline.config import load_params
    from pipeline.errors import ParamsError
    from pipeline.runtime import configure_environment
    from pipeline.tracking import client_for, compared_runs, latest_pipeline_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--run", default=None, help="parent run id (default: the latest)")
    args = parser.parse_args(argv)
    configure_environment()
    try:
        params = load_params(args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    experiment = params.tracking.experiment_name(params.ingest.source)
    parent = (client_for(params.tracking).get_run(args.run) if args.run
              else latest_pipeline_run(params))
    if parent is None:
        print(f"error: no pipeline run in experiment {experiment} of {params.tracking.uri}; "
              "run the pipeline first (`make run`)", file=sys.stderr)
        raise SystemExit(1)
    tags = parent.data.tags
    print(f"\nPipeline run {parent.info.run_id} ({parent.info.status}; experiment {experiment},"
          f" store {params.tracking.uri})\n")
    print(format_table(comparison_rows(compared_runs(params.tracking, parent),
                                       modelled_steps_of(parent))))
    if "registered_model" in tags:
        print(f"\nbest: {tags.get('best_scheme')} -> registered {tags['registered_model']}")
    if "error" in tags:
        print(f"\nerror: {tags['error']}")
    print("\nCompare runs in the MLflow UI: `make ui`, then open http://127.0.0.1:5000")


if __name__ == "__main__":
    main()
