"""The stage commands DVC runs: dvc.yaml and the flows agree on every path they read and write."""

import ast
from pathlib import Path

import pytest
import yaml

from flows.layout import LAYOUT
from flows.stage import STAGES

from .conftest import PROJECT_ROOT


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
    # the cost model's prediction depends on the model, the scheme settings and the cluster
    assert {"train", "model", "prepare.patch_size", "spark", "cluster", "plan", "ingest.source",
            "tracking", "compare"} == set(compare["params"])
    assert "pipeline/plan" in compare["deps"]


PROJECT_PACKAGES = ("pipeline", "flows")


def module_files(name: str) -> list[Path]:
    """The project files that importing module ``name`` runs: its packages' ``__init__.py``s
    and the module (a ``.py`` file or a package's ``__init__.py``); none outside the project."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return []
    files = []
    for depth in range(1, len(parts) + 1):
        base = PROJECT_ROOT.joinpath(*parts[:depth])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                files.append(candidate)
    return files


def imported_modules(entry: Path) -> set[str]:
    """The project files (``pipeline/``, ``flows/``) that ``entry`` runs by importing, transitively.

    Read from the import statements (function-level imports included), not by importing.
    """
    seen: set[Path] = {entry, *module_files("flows")}
    todo = list(seen)
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                for path in module_files(name):
                    if path not in seen:
                        seen.add(path)
                        todo.append(path)
    return {str(p.relative_to(PROJECT_ROOT)) for p in seen}


def stage_deps(stage: str) -> set[str]:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return set((stages[stage].get("do") or stages[stage])["deps"])


def missing_deps(imported: set[str], deps: set[str]) -> list[str]:
    """The imported files that no dep names (itself, or a folder above it)."""
    return sorted(f for f in imported
                  if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))


@pytest.mark.parametrize("stage", STAGES)
def test_stage_deps_list_every_project_module_the_stage_imports(stage: str) -> None:
    command = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"][stage]
    assert f"python -m flows.stage {stage} " in (command.get("do") or command)["cmd"]
    # the command's module (which imports the stage's when it runs it) and the stage's
    imported = imported_modules(PROJECT_ROOT / "flows" / "stage.py") | imported_modules(
        PROJECT_ROOT / "flows" / f"{stage}.py")
    assert f"flows/{stage}.py" in imported and "pipeline/config.py" in imported, \
        "the import walk no longer reads the flows"
    missing = missing_deps(imported, stage_deps(stage))
    assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}: a change there would " \
                        "leave `dvc status` clean with stale outputs"


def test_the_lineage_check_catches_a_missing_dep() -> None:
    imported = imported_modules(PROJECT_ROOT / "flows" / "train.py")
    assert {"pipeline/objective.py", "pipeline/model_store.py", "pipeline/__init__.py",
            "pipeline/training/worker.py"} <= imported  # transitively, packages included
    deps = stage_deps("train")
    assert missing_deps(imported, deps - {"pipeline/objective.py"}) == ["pipeline/objective.py"]
    without_folder = missing_deps(imported, deps - {"pipeline/training"})
    assert "pipeline/training/worker.py" in without_folder
