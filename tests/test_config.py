from pathlib import Path

import pytest
import yaml

from pipeline.config import MODEL_SIZES, Params, load_params
from pipeline.errors import ParamsError

from .conftest import PROJECT_ROOT


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_project_params_yaml_is_valid_and_complete() -> None:
    load_params(PROJECT_ROOT / "params.yaml")
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())

    def keys(tree: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in tree.items():
            name = f"{prefix}{key}"
            out |= keys(value, name + ".") if isinstance(value, dict) and value else {name}
        return out

    # Every parameter the code knows is spelled out in the project's params.yaml, except the
    # model's shape keys: model.size spells them out, and a key written there would override it.
    shape = {f"model.{key}" for key in MODEL_SIZES["tiny"]}
    assert keys(raw) - {"spark.conf"} == set(Params().flat()) - shape


def test_omitted_values_take_defaults(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, {"train": {"epochs": 3}}))
    assert params.train.epochs == 3
    assert params.train.batch_size == Params().train.batch_size


def test_flat_names_every_parameter_with_its_section() -> None:
    flat = Params().flat()
    assert flat["train.batch_size"] == 64
    assert flat["prepare.split.test"] == 0.2
    assert flat["spark.master"] == "local[4]"
    assert flat["train.model_parallel.micro_batches"] == 1


def test_for_scheme_switches_the_scheme_and_rejects_unknown_ones() -> None:
    assert Params().for_scheme("hybrid").train.scheme == "hybrid"
    with pytest.raises(ParamsError, match="--scheme.*unknown scheme 'magic'"):
        Params().for_scheme("magic")


def test_overrides_are_written_into_the_params_file_keeping_comments(tmp_path: Path) -> None:
    from pipeline.config import write_overrides

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 8   # passes over the data\n  batch_size: 64\n")
    params = write_overrides(path, {"train.epochs": 1, "train.compare": ["hybrid"]})
    assert params.train.epochs == 1
    assert load_params(path).train.compare == ["hybrid"]
    assert "# passes over the data" in path.read_text()


def test_a_bad_override_leaves_the_params_file_unchanged(tmp_path: Path) -> None:
    from pipeline.config import write_overrides

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: 8\n")
    with pytest.raises(ParamsError, match="did you mean 'epochs'"):
        write_overrides(path, {"train.epoch": 1})
    assert path.read_text() == "train:\n  epochs: 8\n"
