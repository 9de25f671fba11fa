from pathlib import Path

import numpy as np
import rasterio

from pipeline.data.scene import SceneDescription
from pipeline.data.synthetic import CLASSES, OPTICAL_BANDS, SAR_BANDS, write_synthetic_scene

from ..conftest import SMALL_SCENE


def test_scene_is_georeferenced_geotiffs(scene_dir: Path) -> None:
    for name, dtype, bands in [("optical.tif", "uint16", OPTICAL_BANDS),
                               ("sar.tif", "float32", SAR_BANDS),
                               ("labels.tif", "uint8", ["class_code"])]:
        with rasterio.open(scene_dir / name) as src:
            assert src.driver == "GTiff"
            assert src.crs.to_epsg() == SMALL_SCENE.epsg
            assert src.transform.a == SMALL_SCENE.pixel_size_m
            assert src.transform.e == -SMALL_SCENE.pixel_size_m
            assert (src.height, src.width) == (SMALL_SCENE.height, SMALL_SCENE.width)
            assert src.dtypes[0] == dtype
            assert list(src.descriptions) == bands


def test_scene_description_matches_rasters(scene_dir: Path) -> None:
    scene = SceneDescription.load(scene_dir)
    assert set(scene.modalities) == {"optical", "sar"}
    assert scene.classes == CLASSES
    with rasterio.open(scene_dir / scene.labels) as src:
        codes = set(np.unique(src.read(1)).tolist())
    assert codes == set(CLASSES)  # every class occurs


def test_generator_is_deterministic(tmp_path: Path, scene_dir: Path) -> None:
    write_synthetic_scene(SMALL_SCENE, tmp_path / "again")
    for name in ("optical.tif", "sar.tif", "labels.tif"):
        with rasterio.open(scene_dir / name) as a, rasterio.open(tmp_path / "again" / name) as b:
            np.testing.assert_array_equal(a.read(), b.read())


def test_land_cover_comes_in_coherent_regions(scene_dir: Path) -> None:
    with rasterio.open(scene_dir / "labels.tif") as src:
        labels = src.read(1)
    same_as_right = (labels[:, 1:] == labels[:, :-1]).mean()
    assert same_as_right > 0.8  # salt-and-pepper labels would give ~1/6


def test_sar_is_linear_power_with_speckle(scene_dir: Path) -> None:
    with rasterio.open(scene_dir / "sar.tif") as src:
        sar = src.read()
    with rasterio.open(scene_dir / "labels.tif") as src:
        labels = src.read(1)
    assert (sar > 0).all()  # linear power, not dB
    water = sar[0][labels == 1]
    # Multiplicative speckle: within one class the coefficient of variation stays large.
    assert water.std() / water.mean() > 0.3
