"""Scene mode: the user's rasters, on their own grids, aligned onto the label raster's grid."""

import json
from pathlib import Path

import numpy as np
import rasterio

from pipeline.config import ModalityParams, PrepareParams
from pipeline.data.ingest import ingest_scene
from pipeline.data.prepare import prepare_dataset

from .rasters import scene_params, write_tif


def test_modalities_are_aligned_to_the_label_grid(user_data: Path) -> None:
    scene = ingest_scene(scene_params(), user_data, user_data / "raw")
    with rasterio.open(user_data / "raw/labels.tif") as ref:
        for modality in scene.modalities.values():
            with rasterio.open(user_data / "raw" / modality.path) as src:
                assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
                assert list(src.descriptions) == modality.bands
    assert scene.modalities["sar"].source == str((user_data / "s1").resolve())
    assert json.loads((user_data / "raw/scene.json").read_text())["source"] == "scene"


def test_a_different_crs_is_reprojected(user_data: Path) -> None:
    # The same area in UTM 32N (EPSG:32632) instead of 33N: still overlaps after reprojection.
    from rasterio.warp import transform as warp_transform

    xs, ys = warp_transform("EPSG:32633", "EPSG:32632", [500_000.0], [4_500_000.0])
    write_tif(user_data / "s2.tif", np.full((4, 40, 40), 1000, np.uint16), crs=32632,
              x0=xs[0] - 50, y0=ys[0] + 50, res=20.0, nodata=0)
    ingest_scene(scene_params(), user_data, user_data / "raw")
    with rasterio.open(user_data / "raw/optical.tif") as src:
        data = src.read(1)
        assert src.crs.to_epsg() == 32633
    assert (data == 1000).mean() > 0.5  # covered where the source is, nodata elsewhere


def test_sar_is_resampled_in_linear_power(user_data: Path) -> None:
    write_tif(user_data / "s1/S1_VV.tif", np.tile([[0.1, 0.001]], (32, 16)).astype(np.float32),
              res=20.0)
    write_tif(user_data / "s1/S1_VH.tif", np.full((32, 32), 0.01, np.float32), res=20.0)
    params = scene_params(modalities={
        "sar": ModalityParams(path="s1", kind="sar", bands=["VV", "VH"], resampling="average")})
    ingest_scene(params, user_data, user_data / "raw")
    with rasterio.open(user_data / "raw/sar.tif") as src:
        vv = src.read(1)
    assert vv.min() > 0  # linear power, not dB


def test_prepare_runs_on_an_ingested_user_scene(user_data: Path) -> None:
    ingest_scene(scene_params(), user_data, user_data / "raw")
    manifest = prepare_dataset(user_data / "raw", user_data / "prepared",
                               PrepareParams(patch_size=5, stride=2, block_size=16, seed=3))
    assert manifest["classes"] == ["water", "forest", "cropland"]
    assert manifest["source_files"]["optical"].endswith("s2.tif")
