"""The land-cover map: the reference grid, the patch-level predictions, colours and names."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.data.rasters import to_features
from pipeline.data.scene import SceneDescription
from pipeline.data.windows import extract_patches, patch_centres
from pipeline.inference.landcover_map import (
    map_job_for,
    read_class_names,
    write_landcover_map,
    write_map_preview,
)
from pipeline.model import predict
from pipeline.model_store import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def landcover_map(spark: object, scene_dir: Path, model_dir: Path, prepared_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    job = map_job_for(scene_dir, model_dir, PreparedDataset.open(prepared_dir).manifest,
                      stride=1, max_nodata_fraction=0.1, batch_size=500)
    out = tmp_path_factory.mktemp("map") / "map.tif"
    write_landcover_map(job, out, spark, window_size=40)  # 3 x 3 windows, uneven at the edge
    return out


def patch_predictions(scene_dir: Path, model_dir: Path, prepared_dir: Path
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patch-level predictions, independently of the map: every labelled patch centre of the
    prepare stage's grid, cut from the whole scene, normalised with the training statistics."""
    scene = SceneDescription.load(scene_dir)
    manifest = PreparedDataset.open(prepared_dir).manifest
    size = manifest["patch_size"]
    with rasterio.open(scene_dir / scene.labels) as src:
        labels = src.read(1)
    rows, cols = patch_centres(labels, scene.ignore_codes, size, stride=3)
    inputs = {}
    for name, modality in scene.modalities.items():
        with rasterio.open(scene_dir / modality.path) as src:
            image = to_features(src.read(), modality.kind)
        stats = manifest["normalisation"][name]
        mean = np.asarray(stats["mean"], np.float32)[None, :, None, None]
        std = np.asarray(stats["std"], np.float32)[None, :, None, None]
        inputs[name] = torch.from_numpy((extract_patches(image, rows, cols, size) - mean) / std)
    model, _ = load_model(model_dir)
    codes = np.asarray(manifest["class_codes"])[predict(model, inputs).numpy()]
    return rows, cols, codes


def test_map_is_on_the_reference_grid(landcover_map: Path, scene_dir: Path) -> None:
    scene = SceneDescription.load(scene_dir)
    with rasterio.open(scene_dir / scene.labels) as ref, rasterio.open(landcover_map) as out:
        assert out.crs == ref.crs
        assert out.transform == ref.transform
        assert (out.height, out.width) == (ref.height, ref.width)
        assert out.count == 1


def test_map_classes_agree_with_patch_level_predictions(
        landcover_map: Path, scene_dir: Path, model_dir: Path, prepared_dir: Path) -> None:
    rows, cols, expected = patch_predictions(scene_dir, model_dir, prepared_dir)
    with rasterio.open(landcover_map) as src:
        codes = src.read(1)
    assert len(rows) > 500
    assert len(np.unique(expected)) >= 3  # a model that tells classes apart
    np.testing.assert_array_equal(codes[rows, cols], expected)


def test_map_has_nodata_only_where_no_patch_fits(landcover_map: Path, model_dir: Path,
                                                 prepared_dir: Path) -> None:
    half = PreparedDataset.open(prepared_dir).manifest["patch_size"] // 2
    with rasterio.open(landcover_map) as src:
        codes, nodata = src.read(1), src.nodata
    inner = codes[half:-half, half:-half]
    assert (inner != nodata).all()  # no nodata in the synthetic scene: every pixel predicted
    assert (codes[:half] == nodata).all() and (codes[:, -half:] == nodata).all()


def test_map_carries_colours_and_class_names(landcover_map: Path, scene_dir: Path,
                                             tmp_path: Path) -> None:
    scene = SceneDescription.load(scene_dir)
    assert read_class_names(landcover_map) == scene.classes
    with rasterio.open(landcover_map) as src:
        colours = src.colormap(1)
        assert src.descriptions[0] == "land-cover class code"
    assert len({colours[c] for c in scene.classes}) == len(scene.classes)
    write_map_preview(landcover_map, tmp_path / "map.png")
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"


def test_map_on_a_stride_predicts_the_grid_only(scene_dir: Path, model_dir: Path,
                                                prepared_dir: Path, landcover_map: Path,
                                                tmp_path: Path) -> None:
    manifest = PreparedDataset.open(prepared_dir).manifest
    job = map_job_for(scene_dir, model_dir, manifest, stride=3, max_nodata_fraction=0.1,
                      batch_size=500)
    figures = write_landcover_map(job, tmp_path / "map.tif", spark=None, window_size=64)
    half = manifest["patch_size"] // 2
    with rasterio.open(tmp_path / "map.tif") as src, rasterio.open(landcover_map) as full:
        coarse, dense, nodata = src.read(1), full.read(1), src.nodata
    grid = np.zeros(coarse.shape, bool)
    grid[half:coarse.shape[0] - half:3, half:coarse.shape[1] - half:3] = True
    assert ((coarse != nodata) == grid).all()
    np.testing.assert_array_equal(coarse[grid], dense[grid])  # windowing does not change them
    assert figures["map_predicted_pixels"] == grid.sum()
