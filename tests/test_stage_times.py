"""Stage wall times: each stage command records one, the benchmark report tabulates them."""

import json
from pathlib import Path

import pytest

from benchmarks.report import pipeline_stage_times
from flows._cli import record_stage_time
from flows.layout import LAYOUT
from pipeline.stage_clock import CLOCK, WORK, StageClock


def test_recorded_stage_times_become_the_reports_split_of_make_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    record_stage_time("prepare")
    record_stage_time("train", "hybrid")
    record_stage_time("train", "hybrid")  # a rerun replaces the stage's record
    lines = pipeline_stage_times(tmp_path / LAYOUT.stage_times)
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    names = [row.split(" | ")[0] for row in rows]
    assert names[0] == "| stage" and names[-1] == "| **all stages**"
    assert sorted(names[1:-1]) == ["| prepare", "| train@hybrid"]  # same second: either order
    seconds = [float(row.split(" | ")[1]) for row in rows[1:3]]
    assert all(s > 0 for s in seconds)  # this test process has been running a while
    assert rows[3].split(" | ")[1] == f"**{sum(seconds):.1f}**"


def test_a_stage_record_splits_its_wall_time_into_work_and_named_fixed_costs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    CLOCK.reset()
    CLOCK.add("spark start", 1.0)
    CLOCK.add(WORK, 0.5)
    record_stage_time("train", "hybrid", before_flow_s=0.75)
    CLOCK.reset()
    record = json.loads((tmp_path / LAYOUT.stage_times / "train@hybrid.json").read_text())
    phases = record["phases"]
    assert phases["imports and start-up"] == 0.8 and phases["spark start"] == 1.0
    assert record["work_s"] == 0.5
    assert sum(phases.values()) == pytest.approx(record["seconds"], abs=0.3)  # rounding
    assert record["outside_work_s"] == pytest.approx(record["seconds"] - 0.5, abs=0.1)
    assert record["started_at"] <= record["finished_at"]
    table = "\n".join(pipeline_stage_times(tmp_path / LAYOUT.stage_times))
    assert "| train@hybrid |" in table and "other (Prefect, MLflow, files)" in table


def test_a_phase_inside_another_is_counted_once() -> None:
    clock = StageClock()
    with clock.phase(WORK):
        clock.add("spark start", 5.0)  # as if Spark started inside the stage's work
        with clock.phase("tracking"):
            pass
    assert clock.phases["spark start"] == 5.0
    assert clock.phases[WORK] == 0.0  # its wall time (~0) less the 5 s inside it, never < 0
    record = clock.breakdown(total_s=10.0, before_s=2.0)
    assert record["work_s"] == 0.0 and record["outside_work_s"] == 10.0
    assert record["phases"] == {"imports and start-up": 2.0, WORK: 0.0, "spark start": 5.0,
                                "tracking": 0.0, "other (Prefect, MLflow, files)": 3.0}


def test_without_stage_times_the_report_says_how_to_get_them(tmp_path: Path) -> None:
    assert any("run `make run`" in line for line in pipeline_stage_times(tmp_path))
