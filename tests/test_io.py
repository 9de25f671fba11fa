import json
from pathlib import Path

import pytest

from pipeline.io import atomic_path, write_json


def test_directory_output_appears_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous run")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "half.txt").write_text("half-written")
        raise RuntimeError("crash mid-write")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp left behind


def test_directory_output_replaces_previous_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("previous run")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_creates_parents(tmp_path: Path) -> None:
    write_json(tmp_path / "metrics" / "m.json", {"a": 1})
    assert json.loads((tmp_path / "metrics" / "m.json").read_text()) == {"a": 1}
