"""A Sentinel-2 SAFE product as a modality: bands from its metadata, reflectance with its offset."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.config import ModalityParams
from pipeline.data.ingest import ingest_scene
from pipeline.data.sentinel2_safe import read_product, safe_band_sources
from pipeline.errors import DatasetError

from .fake_safe import write_fake_safe
from .rasters import scene_params

BANDS = ["B02", "B03", "B04", "B08", "B8A"]


@pytest.mark.parametrize("level", ["L1C", "L2A"])
@pytest.mark.parametrize(("baseline", "offset"), [("04.00", -1000.0), ("02.09", 0.0)])
def test_the_offset_applies_from_baseline_04_00(tmp_path: Path, level: str, baseline: str,
                                                offset: float) -> None:
    safe = write_fake_safe(tmp_path / "S2.SAFE", level, baseline, size=8)
    product = read_product(safe)
    assert product.level == level and product.quantification == 10000.0
    sources = safe_band_sources(safe, BANDS, "ingest.scene.modalities.optical")
    assert [s.offset for s in sources] == [offset] * len(BANDS)
    assert [s.gain for s in sources] == [1.0] * len(BANDS)
    assert sources[4].path.name.startswith("T33UUP_20200101T100309_B8A")
    if level == "L2A":  # the finest resolution the product has the band at
        assert [s.path.parent.name for s in sources] == ["R10m"] * 4 + ["R20m"]


@pytest.mark.parametrize(("baseline", "expected"), [("04.00", 500.0), ("02.09", 1500.0)])
def test_an_l2a_product_ingests_as_reflectance(user_data: Path, baseline: str,
                                               expected: float) -> None:
    dn = {band: np.full((64, 64), 1500, np.uint16) for band in BANDS}
    dn["B02"][:4] = 0  # nodata
    write_fake_safe(user_data / "S2B_MSIL2A.SAFE", "L2A", baseline, dn=dn, size=64)
    params = scene_params(modalities={"optical": ModalityParams(
        path="S2B_MSIL2A.SAFE", kind="optical", bands=BANDS, resampling="nearest")})
    scene = ingest_scene(params, user_data, user_data / "raw")
    assert scene.modalities["optical"].bands == BANDS
    with rasterio.open(user_data / "raw/optical.tif") as src:
        data = src.read(masked=True)
    assert data.mask[0, :4].all()  # DN 0 is nodata, not a reflectance of -0.1
    assert not data.mask[:, 8:].any()
    np.testing.assert_allclose(data.data[:, 8:], expected)  # reflectance x 10000


def test_a_band_the_product_lacks_names_the_bands_it_has(user_data: Path) -> None:
    write_fake_safe(user_data / "S2.SAFE", "L2A", "04.00", size=8)
    params = scene_params(modalities={"optical": ModalityParams(
        path="S2.SAFE", kind="optical", bands=["B02", "B10"])})
    with pytest.raises(DatasetError, match=r"MTD_MSIL2A\.xml: band B10 of ingest\.scene\."
                                           r"modalities\.optical is not in this L2A product "
                                           r"\(it has B01, B02, .*B8A\)"):
        ingest_scene(params, user_data, user_data / "raw")
    assert not (user_data / "raw").exists()


def test_a_new_baseline_without_offsets_is_refused(tmp_path: Path) -> None:
    safe = write_fake_safe(tmp_path / "S2.SAFE", "L1C", "02.09", size=8)
    metadata = safe / "MTD_MSIL1C.xml"
    metadata.write_text(metadata.read_text().replace("02.09", "04.00"))
    with pytest.raises(DatasetError, match=r"baseline 04\.00 but no RADIO_ADD_OFFSET"):
        read_product(safe)
