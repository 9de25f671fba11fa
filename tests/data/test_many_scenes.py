"""Many scenes: each on its own grid and UTM zone, prepared in one job, trained on and mapped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.config import (
    EvaluateParams,
    IngestParams,
    MapParams,
    ModalityParams,
    ModelParams,
    Params,
    PrepareParams,
    TrainParams,
)
from pipeline.data.dataset import PreparedDataset
from pipeline.data.ingest import ingest_scenes
from pipeline.data.prepare import prepare_dataset
from pipeline.data.prepared_store import dataset_fingerprint, open_all_scene_arrays
from pipeline.data.split import SPLITS
from pipeline.data.split_reader import read_split
from pipeline.errors import DatasetError
from pipeline.model_store import save_model
from pipeline.training.job import ParallelSettings
from pipeline.training.trainer import make_job
from pipeline.training.worker import train_worker

from ..conftest import seed_mlflow_store
from .rasters import scene_params, write_tif

PREPARE = PrepareParams(patch_size=5, stride=2, block_size=16, seed=3, window_size=32)
BY_SCENE = PREPARE.model_copy(update={"split_by": "scene"})
ZONES = {"north": 32633, "east": 32634, "south": 32633}


def write_scene(folder: Path, crs: int, seed: int, brightness: int) -> None:
    """Labels at 10 m, optical at 20 m (values from ``brightness``), SAR bands at 10 m."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    labels = np.repeat(np.repeat(rng.integers(1, 4, (8, 8)), 8, 0), 8, 1).astype(np.uint8)
    write_tif(folder / "labels.tif", labels, crs=crs)
    write_tif(folder / "s2.tif", rng.integers(brightness, brightness + 800, (4, 32, 32)
                                              ).astype(np.uint16), crs=crs, res=20.0, nodata=0)
    (folder / "s1").mkdir()
    for band in ("VV", "VH"):
        write_tif(folder / f"s1/S1_{band}.tif", rng.gamma(4, 0.01, (64, 64)).astype(np.float32),
                  crs=crs)


def scenes_params(names: list[str]) -> list:
    """One ``ingest.scene`` entry per scene folder ``<name>/`` (paths relative to the base)."""
    return [scene_params(name=name, labels=f"{name}/labels.tif", modalities={
        "optical": ModalityParams(path=f"{name}/s2.tif", kind="optical",
                                  bands=["B02", "B03", "B04", "B08"]),
        "sar": ModalityParams(path=f"{name}/s1", kind="sar", bands=["VV", "VH"])})
        for name in names]


@pytest.fixture(scope="module")
def user_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("scenes")
    for k, (name, crs) in enumerate(ZONES.items()):
        write_scene(base / name, crs, seed=k, brightness=300 + 2000 * k)
    return base


@pytest.fixture(scope="module")
def two_scenes(user_scenes: Path) -> Path:
    """Two scenes in UTM zones 33N and 34N, ingested."""
    ingest_scenes(scenes_params(["north", "east"]), user_scenes, user_scenes / "raw2")
    return user_scenes / "raw2"


@pytest.fixture(scope="module")
def prepared(spark: object, two_scenes: Path) -> Path:
    prepare_dataset(two_scenes, two_scenes.parent / "prepared2", PREPARE, spark)
    return two_scenes.parent / "prepared2"


def test_each_scene_is_ingested_on_its_own_grid(two_scenes: Path) -> None:
    for name in ("north", "east"):
        with rasterio.open(two_scenes / name / "labels.tif") as ref:
            assert ref.crs.to_epsg() == ZONES[name]
            for modality in ("optical", "sar"):
                with rasterio.open(two_scenes / name / f"{modality}.tif") as src:
                    assert (src.crs, src.transform) == (ref.crs, ref.transform)


def test_blocks_are_split_within_each_scene_with_no_pixel_shared(prepared: Path) -> None:
    manifest = PreparedDataset.open(prepared).manifest
    assert [s["name"] for s in manifest["scenes"]] == ["north", "east"]
    assert manifest["windows"] == 2 * 4  # the windows of both scenes, in one job
    assert set(manifest["source_files"]) == {f"{s}/{m}" for s in ("north", "east")
                                             for m in ("optical", "sar")}
    half = PREPARE.patch_size // 2
    for k, scene in enumerate(manifest["scenes"]):
        assert all(scene["split_sizes"][s] > 0 for s in SPLITS)
        seen = np.full((scene["grid"]["height"], scene["grid"]["width"]), -1)
        for index, name in enumerate(SPLITS):
            centres = read_split(prepared, name)
            mine = centres["scene"] == k
            for row, col in zip(centres["row"][mine], centres["col"][mine], strict=True):
                footprint = seen[row - half:row + half + 1, col - half:col + half + 1]
                assert np.isin(footprint, [-1, index]).all()  # no pixel of another split
                footprint[...] = index
    assert dataset_fingerprint(prepared) == manifest["fingerprint"]


def test_patches_are_cut_from_their_own_scene(prepared: Path) -> None:
    arrays = read_split(prepared, "train")
    scenes = open_all_scene_arrays(prepared, PreparedDataset.open(prepared).manifest)
    for k in (0, 1):
        i = int(np.flatnonzero(arrays["scene"] == k)[0])
        row, col = int(arrays["row"][i]), int(arrays["col"][i])
        np.testing.assert_array_equal(arrays["optical"][i, :, 2, 2],
                                      scenes[k]["optical"][:, row, col])
    streamed = PreparedDataset.open(prepared).stream("train")
    whole = PreparedDataset.open(prepared).split("train")
    index = np.arange(len(whole))
    np.testing.assert_allclose(streamed.batch(index)[0]["optical"], whole.inputs["optical"])


def test_a_model_trained_on_two_scenes_maps_each_on_its_grid(prepared: Path, two_scenes: Path,
                                                              tmp_path: Path) -> None:
    from flows.evaluate import draw_map

    job = make_job(TrainParams(epochs=1, batch_size=64, learning_rate=0.05), ModelParams(),
                   prepared)
    result = train_worker(replace(job, parallel=ParallelSettings(workers=1), validate=False))
    save_model(tmp_path / "model", result.state_dict, job.model,
               PreparedDataset.open(prepared).class_names)
    config = Params(evaluate=EvaluateParams(map=MapParams(stride=2, window_size=32)))
    figures = draw_map.fn(None, str(two_scenes), str(tmp_path / "model"), str(prepared), config,
                          tmp_path, "single")
    assert figures["map_pixels"] == 2 * 64 * 64
    for name in ("north", "east"):
        assert (tmp_path / f"landcover_map_{name}.png").is_file()
        with rasterio.open(tmp_path / f"landcover_map_{name}.tif") as src, \
                rasterio.open(two_scenes / name / "labels.tif") as ref:
            assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
            assert src.tags()["SCENE"] == name
            assert np.isin(src.read(1), [1, 2, 3, 255]).all() and (src.read(1) != 255).any()


def test_split_by_scene_puts_each_scene_in_one_split(user_scenes: Path) -> None:
    names = list(ZONES)
    ingest_scenes(scenes_params(names), user_scenes, user_scenes / "raw3")
    manifest = prepare_dataset(user_scenes / "raw3", user_scenes / "prepared3",
                               BY_SCENE)
    splits = [[s for s in SPLITS if scene["split_sizes"][s]] for scene in manifest["scenes"]]
    assert sorted(len(s) for s in splits) == [1, 1, 1]
    assert sorted(s[0] for s in splits) == sorted(SPLITS)
    assert manifest["dropped_patches"]["guard_band"] == 0


def test_split_by_scene_needs_three_scenes(two_scenes: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="at least 3 scenes"):
        prepare_dataset(two_scenes, tmp_path / "out", BY_SCENE)


def test_scenes_whose_bands_differ_are_refused_naming_the_scene(user_scenes: Path) -> None:
    scenes = scenes_params(["north", "east"])
    odd = scenes[1].modalities | {"sar": ModalityParams(path="east/s1", kind="sar",
                                                        bands=["VV"])}
    scenes[1] = scenes[1].model_copy(update={"modalities": odd})
    with pytest.raises(ValueError, match=r"ingest.scene\[1\] \(scene 'east'\): modalities.sar"):
        IngestParams(source="scene", scene=scenes)
    with pytest.raises(DatasetError, match="'east'.*modalities.sar"):
        ingest_scenes(scenes, user_scenes, user_scenes / "raw-bad")
    assert not (user_scenes / "raw-bad").exists()


def test_a_scene_off_its_labels_is_refused_naming_the_scene(user_scenes: Path) -> None:
    far = user_scenes / "far"
    write_scene(far, 32634, seed=9, brightness=500)
    write_tif(far / "s2.tif", np.full((4, 32, 32), 900, np.uint16), crs=32634, x0=300_000.0,
              res=20.0, nodata=0)  # 200 km west of its labels
    with pytest.raises(DatasetError, match=r"scene 'far' \(ingest.scene\[1\]\).*does not overlap"):
        ingest_scenes(scenes_params(["north", "far"]), user_scenes, user_scenes / "raw-far")
    assert not (user_scenes / "raw-far").exists()


def test_the_mlflow_dataset_input_lists_the_scenes(prepared: Path, tmp_path: Path) -> None:
    import mlflow

    from pipeline.config import TrackingParams
    from pipeline.tracking import log_dataset, training_run

    seed_mlflow_store(tmp_path)
    params = Params(tracking=TrackingParams(uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    fingerprint = PreparedDataset.open(prepared).fingerprint or ""
    with training_run(params) as run:
        log_dataset(prepared, fingerprint, "scene")
    inputs = mlflow.MlflowClient(params.tracking.uri).get_run(run.info.run_id
                                                               ).inputs.dataset_inputs
    assert {t.key: t.value for t in inputs[0].tags}["scenes"] == "north,east"
