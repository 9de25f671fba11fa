"""Every bad input the pipeline handles, in one place, each with the message a user sees.

Each message names the file (and band or field) and the fix; nothing half-written is left behind.
Sections follow the pipeline: parameters, stage commands, rasters, preparation, BigEarthNet, the
machine, training.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from pipeline.config import (
    BigEarthNetParams,
    ModalityParams,
    Params,
    PrepareParams,
    load_params,
)
from pipeline.data.bigearthnet import ingest_bigearthnet, labels_19, prepare_bigearthnet
from pipeline.data.ingest import ingest_scene
from pipeline.data.prepare import prepare_dataset
from pipeline.errors import (
    DatasetError,
    JavaNotFoundError,
    ParamsError,
    PortInUseError,
    TrainingError,
)
from pipeline.runtime import require_free_port, require_java

from .conftest import PROJECT_ROOT, SMALL_PREPARE, run_stage
from .data.bigearthnet.data import write_fake_bigearthnet
from .data.rasters import scene_params, write_tif
from .data.test_prepare import copy_scene, set_nodata


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


PREPARE = PrepareParams(seed=0)


# --- params.yaml: unknown keys, bad values, inconsistent settings ---------------------------------
def test_unknown_key_suggests_the_nearest_valid_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"train": {"batch_sise": 32}})
    with pytest.raises(ParamsError,
                       match=r"train\.batch_sise.*unknown key.*"
                             r"did you mean 'batch_size'"):
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
        load_params(write(tmp_path,
                          {"prepare": {"split": {"train": 0.5, "val": 0.1, "test": 0.1}}}))


def test_a_test_split_selection_metric_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"compare\.metric.*would choose the model on the test "
                                          r"split.*optimistic.*'val_kappa'"):
        load_params(write(tmp_path, {"compare": {"metric": "test_kappa"}}))


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


def test_micro_batches_larger_than_the_batch_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="micro_batches .* larger than the batch"):
        load_params(write(tmp_path, {"train": {"batch_size": 8,
                                               "model_parallel": {"micro_batches": 16}}}))


def test_pipeline_stages_cannot_exceed_the_model_layers(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="pipeline_stages .* exceeds the model's 4 layers"):
        load_params(write(tmp_path, {"model": {"branch_depth": 2},
                                     "train": {"model_parallel": {"pipeline_stages": 5}}}))


def test_scene_source_needs_a_scene_section(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="source 'scene' needs an ingest.scene section"):
        load_params(write(tmp_path, {"ingest": {"source": "scene"}}))


def test_typo_inside_a_modality_suggests_the_key(tmp_path: Path) -> None:
    scene = {"modalities": {"s2": {"path": "a.tif", "kind": "optical", "bands": ["B02"],
                                   "resampeling": "nearest"}},
             "labels": "l.tif", "classes": {1: "a", 2: "b"}}
    with pytest.raises(ParamsError,
                       match=r"modalities\.s2\.resampeling.*did you mean 'resampling'"):
        load_params(write(tmp_path, {"ingest": {"source": "scene", "scene": scene}}))

def test_unknown_spark_master_names_the_field_and_the_accepted_forms(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, {"spark": {"master": "sparky://nowhere"}}))
    message = str(info.value)
    assert "spark.master" in message and "'sparky://nowhere'" in message
    for form in ("local[N]", "local[*]", "spark://host:port", "yarn", "k8s://"):
        assert form in message


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,2]",
                                    "local-cluster[2,1,1024]", "spark://10.0.0.5:7077",
                                    "spark://a:7077,b:7077", "yarn",
                                    "k8s://https://kube.example:6443"])
def test_every_spark_master_form_is_accepted(tmp_path: Path, master: str) -> None:
    assert load_params(write(tmp_path, {"spark": {"master": master}})).spark.master == master


@pytest.mark.parametrize("text", ["", "# every line commented out\n", "{}\n"])
def test_an_empty_params_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError, match=r"params\.yaml.*is empty.*built-in defaults.*"
                                          r"git checkout params\.yaml"):
        load_params(path)


# --- Stage commands: one clear line and exit status 1 ---------------------------------------------
def test_an_mlflow_server_that_is_not_there_fails_the_stage_at_once(tmp_path: Path) -> None:
    """No minutes of HTTP retries: the store is checked once, before the flow starts."""
    from pipeline.cluster import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    params["tracking"]["uri"] = uri
    path = write(tmp_path, params)
    done = run_stage("flows.train", "--params", str(path), cwd=tmp_path)  # evaluate, compare:
    assert done.returncode == 1, done.stderr                                # the same check
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "tracking.uri" in last and uri in last
    assert "no MLflow server answers" in last and "mlflow server" in last
    assert "Traceback" not in done.stderr



@pytest.mark.usefixtures("prefect_api")
def test_params_typo_stops_the_stage_with_the_field_and_fix(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    done = run_stage("flows.train", "--params", str(params), cwd=PROJECT_ROOT)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "train.epoch" in last and "did you mean 'epochs'" in last


@pytest.mark.usefixtures("prefect_api")
def test_missing_input_names_the_stage_to_run(tmp_path: Path) -> None:
    done = run_stage("flows.prepare", "--params", str(PROJECT_ROOT / "params.yaml"),
                     "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                     cwd=tmp_path)
    assert done.returncode == 1
    assert "scene description not found" in done.stderr
    assert "dvc repro ingest" in done.stderr
    assert not (tmp_path / "out").exists()
    # the message alone on the console; Prefect's traceback of the failed flow run in the log
    assert "Traceback" not in done.stderr and "Finished in state Failed" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    log = (tmp_path / "logs" / "stages" / "prepare.log").read_text()
    assert "Traceback" in log and "scene description not found" in log

# --- Your own rasters (scene mode ingestion) ------------------------------------------------------
def test_missing_file_names_the_file_and_the_params_field(user_data: Path) -> None:
    params = scene_params(labels="nope.tif")
    with pytest.raises(DatasetError, match=r"nope\.tif: raster not found.*params\.yaml"):
        ingest_scene(params, user_data, user_data / "raw")
    assert not (user_data / "raw").exists()


def test_corrupt_geotiff_is_reported(user_data: Path) -> None:
    (user_data / "s2.tif").write_bytes(b"II*\x00 garbage")
    with pytest.raises(DatasetError, match=r"s2\.tif: unreadable raster"):
        ingest_scene(scene_params(), user_data, user_data / "raw")


def test_raster_without_crs_is_reported(user_data: Path) -> None:
    write_tif(user_data / "s2.tif", np.ones((4, 32, 32), np.uint16), crs=None)
    with pytest.raises(DatasetError, match=r"s2\.tif: raster has no CRS.*gdal_edit"):
        ingest_scene(scene_params(), user_data, user_data / "raw")


def test_band_count_must_match_params(user_data: Path) -> None:
    params = scene_params(modalities={
        "optical": ModalityParams(path="s2.tif", kind="optical", bands=["B02", "B03", "B04"])})
    with pytest.raises(DatasetError, match=r"s2\.tif: 4 bands, but params\.yaml "
                                           r"ingest\.scene\.modalities\.optical\.bands lists 3"):
        ingest_scene(params, user_data, user_data / "raw")


def test_missing_band_file_in_a_folder_names_the_band(user_data: Path) -> None:
    (user_data / "s1/S1_VH.tif").unlink()
    with pytest.raises(DatasetError, match=r"s1: band VH of ingest\.scene\.modalities\.sar"):
        ingest_scene(scene_params(), user_data, user_data / "raw")


def test_modalities_that_do_not_overlap_are_refused(user_data: Path) -> None:
    write_tif(user_data / "s2.tif", np.ones((4, 32, 32), np.uint16), x0=700_000.0, res=20.0)
    with pytest.raises(DatasetError, match=r"s2\.tif: does not overlap the label raster"):
        ingest_scene(scene_params(), user_data, user_data / "raw")
    assert not (user_data / "raw").exists()


def test_sar_in_decibels_is_refused(user_data: Path) -> None:
    write_tif(user_data / "s1/S1_VV.tif", np.full((64, 64), -12.0, np.float32))
    with pytest.raises(DatasetError, match=r"S1_VV\.tif: band VV has negative values.*linear"):
        ingest_scene(scene_params(), user_data, user_data / "raw")

# --- Preparation of an ingested scene -------------------------------------------------------------
def test_missing_scene_description_names_the_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"scene\.json.*dvc repro ingest"):
        prepare_dataset(tmp_path, tmp_path / "out", SMALL_PREPARE)


def test_band_count_mismatch_names_the_file(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    scene = json.loads((raw / "scene.json").read_text())
    scene["modalities"]["sar"]["bands"] = ["VV"]
    (raw / "scene.json").write_text(json.dumps(scene))
    with pytest.raises(DatasetError, match=r"sar\.tif: 2 bands, scene\.json lists 1"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_unknown_label_codes_are_reported(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    scene = json.loads((raw / "scene.json").read_text())
    del scene["classes"]["6"]
    (raw / "scene.json").write_text(json.dumps(scene))
    with pytest.raises(DatasetError,
                       match=r"labels\.tif: label codes \[6\] are not in the class map"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_corrupt_raster_is_reported_by_name(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    (raw / "optical.tif").write_bytes(b"II*\x00 this is not a GeoTIFF")
    with pytest.raises(DatasetError, match=r"optical\.tif: unreadable raster"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_an_empty_split_is_an_error(scene_dir: Path, tmp_path: Path) -> None:
    huge_blocks = PrepareParams(patch_size=7, stride=3, block_size=96)
    with pytest.raises(DatasetError, match=r"cannot be put in the test split: .*room for 0 "
                                           r"blocks.*smaller prepare\.block_size"):
        prepare_dataset(scene_dir, tmp_path / "out", huge_blocks)


def test_nan_values_name_the_file_and_band(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    set_nodata(raw / "sar.tif", slice(40, 42), slice(40, 42), value=np.nan)
    with pytest.raises(DatasetError, match=r"sar\.tif: band VV has 4 NaN/inf values.*nodata"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)
    assert not (tmp_path / "out").exists()


def test_inf_values_are_reported(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    set_nodata(raw / "sar.tif", slice(5, 6), slice(5, 6), value=np.inf)
    with pytest.raises(DatasetError, match=r"sar\.tif: band VV has 1 NaN/inf values"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_all_nodata_region_is_an_error(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    set_nodata(raw / "optical.tif", slice(None), slice(None))
    with pytest.raises(DatasetError, match=r"optical\.tif: all-nodata region"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)
    assert not (tmp_path / "out").exists()


def test_class_with_too_few_samples_is_an_error(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    with rasterio.open(raw / "labels.tif", "r+") as dst:
        labels = dst.read(1)
        labels[labels == 6] = 5
        labels[48, 48] = 6  # one pixel of bare soil, on the stride grid
        dst.write(labels, 1)
    with pytest.raises(DatasetError, match=r"labels\.tif: class 6 \(bare_soil\) has only 1 "
                                           r"patches.*too few to split.*ignored codes"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)

def test_a_class_with_no_pixel_is_a_warning_recorded_in_the_manifest(
        scene_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    scene = json.loads((raw / "scene.json").read_text())
    scene["classes"]["9"] = "snow"  # in the class map, nowhere in the label raster
    (raw / "scene.json").write_text(json.dumps(scene))
    manifest = prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)
    assert manifest["absent_classes"] == {9: "snow"}
    assert "snow" in manifest["classes"]
    stored = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert stored["absent_classes"] == {"9": "snow"}
    warning = capsys.readouterr().out
    assert "warning: class 9 (snow)" in warning and "no pixel" in warning


def test_a_class_with_pixels_but_no_patch_is_refused(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    with rasterio.open(raw / "labels.tif", "r+") as dst:
        labels = dst.read(1)
        labels[labels == 6] = 5
        labels[49, 49] = 6  # one pixel of bare soil, off the stride grid: no patch centre
        dst.write(labels, 1)
    with pytest.raises(DatasetError, match=r"class 6 \(bare_soil\) has only 0 patches.*"
                                           r"min_class_samples"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)
    assert not (tmp_path / "out").exists()


# --- BigEarthNet-MM -------------------------------------------------------------------------------
def test_unknown_corine_label_names_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"meta\.json: field 'labels': \['Lava'\]"):
        labels_19(["Lava"], tmp_path / "meta.json")


def test_missing_band_names_the_file(tmp_path: Path) -> None:
    s1_root, s2_root = write_fake_bigearthnet(tmp_path / "ben", n=4)
    next(s2_root.glob("*/*_B03.tif")).unlink()
    params = BigEarthNetParams(s1_root=str(s1_root), s2_root=str(s2_root), split="random")
    ingest_bigearthnet(params, tmp_path, tmp_path / "raw")
    with pytest.raises(DatasetError, match=r"_B03\.tif: band B03 not found"):
        prepare_bigearthnet(tmp_path / "raw", tmp_path / "out", PREPARE)
    assert not (tmp_path / "out").exists()


def test_missing_root_names_the_field(tmp_path: Path) -> None:
    params = BigEarthNetParams(s1_root="nope1", s2_root="nope2")
    with pytest.raises(DatasetError, match=r"nope1: BigEarthNet folder not found.*s1_root"):
        ingest_bigearthnet(params, tmp_path, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()

# --- The machine: Java, ports ---------------------------------------------------------------------
def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(JavaNotFoundError, match="Java 17.*JAVA_HOME"):
        require_java()


def test_port_in_use_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}.*Fix: pick another"):
            require_free_port("127.0.0.1", port, "a server", "pick another")


def test_ui_refuses_a_busy_port_with_the_fix() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "pipeline.ui", "--port", str(port)],
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
                              env=os.environ | {"PATH": os.environ["PATH"]})
    assert done.returncode == 1
    assert f"Port 127.0.0.1:{port} for the MLflow UI is already in use" in done.stderr
    assert f"make ui PORT={port + 1}" in done.stderr


def test_truncated_geotiff_is_reported(user_data: Path) -> None:
    data = (user_data / "s2.tif").read_bytes()
    (user_data / "s2.tif").write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError, match=r"s2\.tif: unreadable raster"):
        ingest_scene(scene_params(), user_data, user_data / "raw")
    assert not (user_data / "raw").exists()


def test_label_raster_of_floats_is_refused(user_data: Path) -> None:
    write_tif(user_data / "labels.tif", np.full((64, 64), 1.5, np.float32))
    with pytest.raises(DatasetError, match=r"labels\.tif: label raster has data type float32"):
        ingest_scene(scene_params(), user_data, user_data / "raw")


def test_unknown_scheme_on_the_command_line_lists_the_schemes() -> None:
    with pytest.raises(ParamsError, match=r"--scheme.*unknown scheme 'magic'.*data_parallel"):
        Params().for_scheme("magic")


@pytest.mark.slow
def test_more_workers_than_spark_task_slots_is_refused(spark: object,
                                                       prepared_dir: Path) -> None:
    from pipeline.config import ModelParams, TrainParams
    from pipeline.training.trainer import train_model

    with pytest.raises(TrainingError, match=r"needs 8 workers but the Spark application has only "
                                            r"4 task slots.*Fix: lower train.workers"):
        train_model(spark, TrainParams(workers=8, batch_size=64), ModelParams(), prepared_dir,
                    "data_parallel")
