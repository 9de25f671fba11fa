"""Sentinel-1 in decibels: converted to linear power before resampling, as if delivered linear."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from pydantic import ValidationError

from pipeline.config import ModalityParams, PrepareParams
from pipeline.data.ingest import ingest_scene
from pipeline.data.prepare import prepare_dataset
from pipeline.errors import DatasetError

from .rasters import scene_params, write_tif


def sar(units: str, resampling: str = "average") -> dict[str, ModalityParams]:
    return {"sar": ModalityParams(path="s1", kind="sar", bands=["VV", "VH"], units=units,
                                  resampling=resampling)}


def write_sar(user_data: Path, to_db: bool) -> None:
    rng = np.random.default_rng(5)
    for band in ("VV", "VH"):
        linear = rng.gamma(2, 0.02, (32, 32)).astype(np.float32)
        data = (10 * np.log10(linear)).astype(np.float32) if to_db else linear
        write_tif(user_data / f"s1/S1_{band}.tif", data, res=20.0, nodata=-9999.0)


@pytest.mark.parametrize("resampling", ["average", "bilinear"])
def test_db_input_gives_the_linear_input_result(user_data: Path, resampling: str) -> None:
    write_sar(user_data, to_db=False)
    ingest_scene(scene_params(modalities=sar("linear", resampling)), user_data,
                 user_data / "linear")
    write_sar(user_data, to_db=True)
    ingest_scene(scene_params(modalities=sar("db", resampling)), user_data, user_data / "db")
    with rasterio.open(user_data / "linear/sar.tif") as a, \
            rasterio.open(user_data / "db/sar.tif") as b:
        assert b.dtypes[0] == "float32" and list(b.descriptions) == ["VV", "VH"]
        np.testing.assert_allclose(b.read(), a.read(), rtol=1e-5)
    for name in ("linear", "db"):
        prepare_dataset(user_data / name, user_data / f"prepared_{name}",
                        PrepareParams(patch_size=5, stride=2, block_size=16, seed=3))
    np.testing.assert_allclose(np.load(user_data / "prepared_db/scene/sar.npy"),
                               np.load(user_data / "prepared_linear/scene/sar.npy"), atol=1e-4)


def test_db_nodata_stays_nodata(user_data: Path) -> None:
    data = np.full((32, 32), -12.0, np.float32)
    data[:8] = -9999.0
    for band in ("VV", "VH"):
        write_tif(user_data / f"s1/S1_{band}.tif", data, res=20.0, nodata=-9999.0)
    ingest_scene(scene_params(modalities=sar("db", "nearest")), user_data, user_data / "raw")
    with rasterio.open(user_data / "raw/sar.tif") as src:
        vv = src.read(1)
    assert np.isnan(vv[:16]).all()
    np.testing.assert_allclose(vv[16:], 10 ** -1.2, rtol=1e-5)


def test_linear_values_declared_as_db_are_refused(user_data: Path) -> None:
    with pytest.raises(DatasetError, match=r"S1_VV\.tif: band VV has no negative values, but "
                                           r"ingest\.scene\.modalities\.sar\.units is db.*"
                                           r"units: linear"):
        ingest_scene(scene_params(modalities=sar("db")), user_data, user_data / "raw")
    assert not (user_data / "raw").exists()


def test_db_values_declared_linear_name_the_units_field(user_data: Path) -> None:
    write_sar(user_data, to_db=True)
    with pytest.raises(DatasetError, match=r"band VV has negative values.*units: db"):
        ingest_scene(scene_params(modalities=sar("linear")), user_data, user_data / "raw")
    assert not (user_data / "raw").exists()


def test_units_db_on_an_optical_modality_is_a_params_error() -> None:
    with pytest.raises(ValidationError, match="units: db is for SAR"):
        ModalityParams(path="s2.tif", kind="optical", bands=["B02"], units="db")
