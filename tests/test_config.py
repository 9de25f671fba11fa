from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, load_params
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

    # Every parameter the code knows is spelled out in the project's params.yaml.
    assert keys(raw) - {"spark.conf"} == set(Params().flat())


def test_unknown_key_suggests_the_nearest_valid_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"batch_sise": 32}})
    with pytest.raises(ParamsError, match=r"train\.batch_sise.*unknown key.*did you mean 'batch_size'"):
        load_params(path)


def test_unknown_section_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"'trian'.*did you mean 'train'"):
        load_params(write(tmp_path, {"trian": {}}))


def test_out_of_range_value_names_file_field_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"batch_size": -4}})
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message and "train.batch_size" in message and "-4" in message


def test_batch_size_must_split_evenly_across_workers(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="multiple of workers"):
        load_params(write(tmp_path, {"train": {"batch_size": 63, "workers": 2}}))


def test_patch_size_must_be_odd(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="patch_size must be odd"):
        load_params(write(tmp_path, {"prepare": {"patch_size": 8}}))


def test_split_fractions_must_sum_to_one(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="must equal 1"):
        load_params(write(tmp_path, {"prepare": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}))


def test_unknown_scheme_lists_valid_schemes(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"train\.scheme.*data_parallel"):
        load_params(write(tmp_path, {"train": {"scheme": "magic"}}))


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="does not exist.*--params"):
        load_params(tmp_path / "nope.yaml")


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


def test_omitted_values_take_defaults(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, {"train": {"epochs": 3}}))
    assert params.train.epochs == 3
    assert params.train.batch_size == Params().train.batch_size


def test_flat_names_every_parameter_with_its_section() -> None:
    flat = Params().flat()
    assert flat["train.batch_size"] == 64
    assert flat["prepare.split.test"] == 0.15
    assert flat["spark.master"] == "local[4]"
    assert flat["train.model_parallel.micro_batches"] == 1


def test_micro_batches_larger_than_the_batch_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="micro_batches .* larger than the batch"):
        load_params(write(tmp_path, {"train": {"batch_size": 8,
                                               "model_parallel": {"micro_batches": 16}}}))


def test_pipeline_stages_cannot_exceed_the_model_layers(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="pipeline_stages .* exceeds the model's 4 layers"):
        load_params(write(tmp_path, {"model": {"branch_depth": 2},
                                     "train": {"model_parallel": {"pipeline_stages": 5}}}))


def test_for_scheme_switches_the_scheme_and_rejects_unknown_ones() -> None:
    assert Params().for_scheme("hybrid").train.scheme == "hybrid"
    with pytest.raises(ParamsError, match="--scheme.*unknown scheme 'magic'"):
        Params().for_scheme("magic")


def test_scene_source_needs_a_scene_section(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="source 'scene' needs an ingest.scene section"):
        load_params(write(tmp_path, {"ingest": {"source": "scene"}}))


def test_typo_inside_a_modality_suggests_the_key(tmp_path: Path) -> None:
    scene = {"modalities": {"s2": {"path": "a.tif", "kind": "optical", "bands": ["B02"],
                                   "resampeling": "nearest"}},
             "labels": "l.tif", "classes": {1: "a", 2: "b"}}
    with pytest.raises(ParamsError, match=r"modalities\.s2\.resampeling.*did you mean 'resampling'"):
        load_params(write(tmp_path, {"ingest": {"source": "scene", "scene": scene}}))


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
