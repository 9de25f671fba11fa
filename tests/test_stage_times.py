"""Stage wall times: each stage command records one, the benchmark report tabulates them."""

from pathlib import Path

import pytest

from benchmarks.report import pipeline_stage_times
from flows._cli import record_stage_time
from flows.layout import LAYOUT


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


def test_without_stage_times_the_report_says_how_to_get_them(tmp_path: Path) -> None:
    assert any("run `make run`" in line for line in pipeline_stage_times(tmp_path))
