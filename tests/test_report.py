from pathlib import Path

from mlflow.entities import Metric, Run, RunData, RunInfo, RunTag

from pipeline.report import comparison_rows, format_table, markdown_table, write_comparison


def run(scheme: str, metrics: dict[str, float]) -> Run:
    info = RunInfo(run_id=f"{scheme}-id", experiment_id="1", user_id="u", status="FINISHED",
                   start_time=0, end_time=1, lifecycle_stage="active")
    data = RunData(metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                   tags=[RunTag("scheme", scheme), RunTag("world_size", "2")])
    return Run(info, data)


RUNS = [run("data_parallel", {"test_overall_accuracy": 0.85, "payload_bytes_sent_total": 2e6,
                              "training_time_s": 30.0}),
        run("hybrid", {"test_overall_accuracy": 0.83, "payload_bytes_sent_total": 5e6,
                       "training_time_s": 41.0, "inference_samples_per_s": 9000.0})]


def test_rows_have_the_same_columns_by_metric_name() -> None:
    rows = comparison_rows(RUNS)
    assert [r["scheme"] for r in rows] == ["data_parallel", "hybrid"]
    assert list(rows[0]) == list(rows[1])
    assert rows[0]["world_size"] == 2.0  # from the tag when not a metric
    assert rows[0]["inference_samples_per_s"] is None  # missing in one run: a gap, not an error
    assert "test_kappa" not in rows[0]  # no run has it: no column


def test_tables_show_a_gap_for_a_missing_metric() -> None:
    rows = comparison_rows(RUNS)
    text = format_table(rows)
    assert text.splitlines()[0].split()[:3] == ["scheme", "status", "workers"]
    assert "-" in text.splitlines()[1].split()
    assert markdown_table(rows).count("\n") == 4


def test_comparison_files_and_plots(tmp_path: Path) -> None:
    written = write_comparison(comparison_rows(RUNS), tmp_path, "test_overall_accuracy")
    names = {p.name for p in written}
    assert {"comparison.csv", "comparison.md", "comparison.json",
            "accuracy_vs_bytes_sent.png", "accuracy_vs_training_time.png",
            "inference_throughput.png"} == names
    assert all(p.stat().st_size > 0 for p in written)


def test_plots_without_inference_timing_are_skipped(tmp_path: Path) -> None:
    written = write_comparison(comparison_rows(RUNS[:1]), tmp_path, "test_overall_accuracy")
    assert "inference_throughput.png" not in {p.name for p in written}


def test_the_modelled_step_stands_beside_the_measured_one() -> None:
    runs = [run("data_parallel", {"step_s_p50": 0.010}), run("hybrid", {"step_s_p50": 0.040})]
    rows = comparison_rows(runs, {"data_parallel": 0.012})
    assert rows[0]["modelled_step_s"] == 0.012
    assert rows[0]["modelled_to_measured_step"] == 0.012 / 0.010
    assert rows[1]["modelled_step_s"] is None and rows[1]["modelled_to_measured_step"] is None
    header = format_table(rows).splitlines()[0]
    assert header.index("step s (measured)") < header.index("step s (modelled)") < \
        header.index("modelled ÷ measured")


def test_intervals_stand_in_the_table_and_say_if_a_difference_exceeds_them() -> None:
    def scored(scheme: str, accuracy: float, low: float, high: float) -> Run:
        return run(scheme, {"test_overall_accuracy": accuracy,
                            "test_overall_accuracy_ci_low": low,
                            "test_overall_accuracy_ci_high": high})

    rows = comparison_rows([scored("data_parallel", 0.85, 0.82, 0.88),
                            scored("hybrid", 0.84, 0.80, 0.87),     # overlaps the best's
                            scored("branch_parallel", 0.70, 0.65, 0.75)])  # does not
    assert [r["quality_vs_best"] for r in rows] == [
        "best", "-0.010, within the intervals", "-0.150, beyond the intervals"]
    assert rows[0]["test_overall_accuracy_ci_low"] == 0.82  # in the CSV and JSON too
    text = format_table(rows)
    assert "overall acc [95 %]" in text.splitlines()[0]
    assert "0.850 [0.820, 0.880]" in text.splitlines()[1]
    assert "0.850 [0.820, 0.880]" in markdown_table(rows)
    assert "_ci_" not in markdown_table(rows)


def test_the_inference_latency_column_reads_the_evaluate_stages_metric() -> None:
    rows = comparison_rows([run("data_parallel", {"inference_batch_p50_ms": 4.25})])
    assert rows[0]["inference_batch_p50_ms"] == 4.25
    assert "infer batch p50 ms" in format_table(rows).splitlines()[0]
