"""The stage commands DVC runs: dvc.yaml and the flows agree on every path they read and write."""

import ast
from pathlib import Path

import pytest
import yaml

from flows.layout import LAYOUT

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


def imported_data_modules(entry: Path) -> set[str]:
    """The ``pipeline/data/*.py`` files that ``entry`` imports, directly or through others.

    Read from the import statements (function-level imports included), not by importing.
    """
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                path = PROJECT_ROOT / (name.replace(".", "/") + ".py")
                if name.startswith("pipeline.") and path.is_file() and path not in seen:
                    seen.add(path)
                    todo.append(path)
    return {str(p.relative_to(PROJECT_ROOT)) for p in seen
            if p.parent == PROJECT_ROOT / "pipeline" / "data" and p.name != "__init__.py"}


@pytest.mark.parametrize("stage", ["prepare", "train", "evaluate"])
def test_stage_deps_list_every_data_module_the_stage_imports(stage: str) -> None:
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    deps = set((stages[stage].get("do") or stages[stage])["deps"])
    imported = imported_data_modules(PROJECT_ROOT / "flows" / f"{stage}.py")
    assert imported, "the import walk found nothing: it no longer reads the flows"
    assert imported <= deps, f"dvc.yaml {stage} lacks {sorted(imported - deps)}"
