"""Scene mode: the user's rasters, on their own grids, aligned onto the label raster's grid."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from pipeline.config import ModalityParams, PrepareParams, SceneParams
from pipeline.data.ingest import ingest_scene
from pipeline.data.prepare import prepare_dataset
from pipeline.errors import DatasetError

CLASSES = {1: "water", 2: "forest", 3: "cropland"}


def write_tif(path: Path, data: np.ndarray, crs: int | None = 32633, x0: float = 500_000.0,
              y0: float = 4_500_000.0, res: float = 10.0, nodata: float | None = None) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2],
                       count=data.shape[0], dtype=data.dtype, nodata=nodata,
                       crs=CRS.from_epsg(crs) if crs else None,
                       transform=from_origin(x0, y0, res, res)) as dst:
        dst.write(data)
    return path


@pytest.fixture
def user_data(tmp_path: Path) -> Path:
    """Labels at 10 m; optical at 20 m as a multi-band file; SAR as a folder of bands at 10 m."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.repeat(rng.integers(1, 4, (8, 8)), 8, 0), 8, 1).astype(np.uint8)
    write_tif(tmp_path / "labels.tif", labels)
    optical = rng.integers(200, 3000, (4, 32, 32)).astype(np.uint16)
    write_tif(tmp_path / "s2.tif", optical, res=20.0, nodata=0)
    (tmp_path / "s1").mkdir()
    for band in ("VV", "VH"):
        write_tif(tmp_path / f"s1/S1_{band}.tif",
                  rng.gamma(4, 0.01, (64, 64)).astype(np.float32))
    return tmp_path


def scene_params(**changes: object) -> SceneParams:
    base = {
        "modalities": {
            "optical": ModalityParams(path="s2.tif", kind="optical",
                                      bands=["B02", "B03", "B04", "B08"]),
            "sar": ModalityParams(path="s1", kind="sar", bands=["VV", "VH"]),
        },
        "labels": "labels.tif", "classes": CLASSES, "ignore_codes": [0],
    }
    return SceneParams(**(base | changes))


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
