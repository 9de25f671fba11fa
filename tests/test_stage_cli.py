"""The stage commands DVC runs: bad input gives one clear line and exit status 1."""

import subprocess
import sys
from pathlib import Path

import yaml

from flows.layout import LAYOUT

from .conftest import PROJECT_ROOT


def run_stage(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_params_typo_stops_the_stage_with_the_field_and_fix(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    done = run_stage("flows.train", "--params", str(params), cwd=PROJECT_ROOT)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "train.epoch" in last and "did you mean 'epochs'" in last


def test_missing_input_names_the_stage_to_run(tmp_path: Path) -> None:
    done = run_stage("flows.prepare", "--params", str(PROJECT_ROOT / "params.yaml"),
                     "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                     cwd=tmp_path)
    assert done.returncode == 1
    assert "scene description not found" in done.stderr
    assert "dvc repro ingest" in done.stderr
    assert not (tmp_path / "out").exists()


def test_dvc_yaml_and_flow_layout_name_the_same_paths() -> None:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["ingest"]["outs"] == [LAYOUT.raw]
    assert stages["prepare"]["outs"] == [LAYOUT.prepared]
    assert stages["train"]["foreach"] == stages["evaluate"]["foreach"] == "${train.compare}"
    assert stages["train"]["do"]["outs"] == [LAYOUT.model_dir("${item}")]
    assert list(stages["evaluate"]["do"]["metrics"][0]) == [LAYOUT.metrics_file("${item}")]
    for stage in [stages["ingest"], stages["prepare"], stages["train"]["do"],
                  stages["evaluate"]["do"]]:
        assert f"--params {LAYOUT.params}" in stage["cmd"]
        for path in stage.get("outs", []):
            assert f" {path}" in stage["cmd"]


def test_compare_stage_runs_after_every_scheme_and_writes_under_reports() -> None:
    compare = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["compare"]
    assert {LAYOUT.models, LAYOUT.metrics, LAYOUT.prepared} <= set(compare["deps"])
    assert f"--out {LAYOUT.reports}" in compare["cmd"]
    outs = [next(iter(o)) for key in ("outs", "metrics", "plots") for o in compare[key]]
    assert all(path.startswith(f"{LAYOUT.reports}/") for path in outs)
    assert {"train.compare", "ingest.source", "tracking", "compare"} == set(compare["params"])
