"""Scene mode reads any raster GDAL reads: JPEG 2000, VRT mosaics, bands named as ESA names them."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.config import ModalityParams
from pipeline.data.ingest import ingest_scene
from pipeline.errors import DatasetError

from .rasters import scene_params, write_tif

BANDS = ["B02", "B03", "B04", "B08"]


def write_jp2(path: Path, data: np.ndarray, res: float = 20.0) -> Path:
    """A lossless JPEG 2000 (GDAL's default JP2 writing is lossy)."""
    return write_tif(path, data, res=res, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES")


def optical_from(path: str) -> dict[str, ModalityParams]:
    return {"optical": ModalityParams(path=path, kind="optical", bands=BANDS,
                                      resampling="nearest")}


def test_a_folder_of_jp2_bands_named_as_esa_names_them(user_data: Path) -> None:
    rng = np.random.default_rng(1)
    data = rng.integers(200, 3000, (4, 32, 32)).astype(np.uint16)
    folder = user_data / "IMG_DATA"
    folder.mkdir()
    names = ["T33UUP_20200101T100309_B02_10m.jp2", "T33UUP_20200101T100309_B03.jp2",
             "B04.jp2", "T33UUP_20200101T100309_B08_10m.jp2"]
    for band, name in zip(data, names, strict=True):
        write_jp2(folder / name, band)
    write_jp2(folder / "T33UUP_20200101T100309_B01_60m.jp2", data[0])  # B01, not B02...
    (folder / "MTD_TL.xml").write_text("<x/>")  # not a raster: ignored
    scene = ingest_scene(scene_params(modalities=optical_from("IMG_DATA")), user_data,
                         user_data / "raw")
    assert scene.modalities["optical"].bands == BANDS
    with rasterio.open(user_data / "raw/optical.tif") as src:
        # nearest resampling of a 20 m raster onto the 10 m grid: every value is the JP2's own
        assert set(np.unique(src.read(3))) <= set(np.unique(data[2]))


def test_a_multi_band_jp2_file(user_data: Path) -> None:
    data = np.random.default_rng(2).integers(200, 3000, (4, 32, 32)).astype(np.uint16)
    write_jp2(user_data / "s2.jp2", data)
    params = scene_params(modalities={"optical": ModalityParams(
        path="s2.jp2", kind="optical", bands=BANDS, resampling="nearest")})
    ingest_scene(params, user_data, user_data / "raw")
    with rasterio.open(user_data / "raw/optical.tif") as src:
        assert np.array_equal(src.read()[:, ::2, ::2], data)  # lossless, 20 m onto 10 m


def test_a_vrt_mosaic_of_two_tiles(user_data: Path) -> None:
    left = np.full((4, 32, 16), 1000, np.uint16)
    right = np.full((4, 32, 16), 2000, np.uint16)
    write_tif(user_data / "west.tif", left, res=20.0)
    write_tif(user_data / "east.tif", right, x0=500_000.0 + 16 * 20, res=20.0)
    sources = "".join(
        f'<ComplexSource><SourceFilename relativeToVRT="1">{name}</SourceFilename>'
        f'<SourceBand>{b}</SourceBand><SrcRect xOff="0" yOff="0" xSize="16" ySize="32"/>'
        f'<DstRect xOff="{x}" yOff="0" xSize="16" ySize="32"/></ComplexSource>'
        for name, x in (("west.tif", 0), ("east.tif", 16)) for b in [0])
    bands = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{b}">'
        + sources.replace("<SourceBand>0</SourceBand>", f"<SourceBand>{b}</SourceBand>")
        + "</VRTRasterBand>" for b in range(1, 5))
    with rasterio.open(user_data / "west.tif") as src:
        wkt = src.crs.to_wkt()
    (user_data / "mosaic.vrt").write_text(
        f'<VRTDataset rasterXSize="32" rasterYSize="32"><SRS>{wkt}</SRS>'
        '<GeoTransform>500000, 20, 0, 4500000, 0, -20</GeoTransform>' + bands + "</VRTDataset>")
    params = scene_params(modalities={"optical": ModalityParams(
        path="mosaic.vrt", kind="optical", bands=BANDS, resampling="nearest")})
    ingest_scene(params, user_data, user_data / "raw")
    with rasterio.open(user_data / "raw/optical.tif") as src:
        band = src.read(1)
    assert (band[:, :32] == 1000).all() and (band[:, 32:] == 2000).all()


def test_a_band_matching_no_file_names_the_band_and_the_files(user_data: Path) -> None:
    folder = user_data / "bands"
    folder.mkdir()
    for band in ("B02", "B03", "B04", "B8A"):
        write_jp2(folder / f"T33_{band}_20m.jp2", np.ones((32, 32), np.uint16))
    with pytest.raises(DatasetError, match=r"bands: band B08 of ingest\.scene\.modalities\."
                                           r"optical: no file has B08 in its name \(found "
                                           r"T33_B02_20m\.jp2, .*T33_B8A_20m\.jp2\)"):
        ingest_scene(scene_params(modalities=optical_from("bands")), user_data,
                     user_data / "raw")
    assert not (user_data / "raw").exists()


def test_a_band_matching_two_files_names_both(user_data: Path) -> None:
    folder = user_data / "bands"
    folder.mkdir()
    for band in BANDS:
        write_jp2(folder / f"T33_{band}_20m.jp2", np.ones((32, 32), np.uint16))
    write_jp2(folder / "T33_B03_60m.jp2", np.ones((32, 32), np.uint16))
    with pytest.raises(DatasetError, match=r"band B03 of ingest\.scene\.modalities\.optical "
                                           r"matches several files: T33_B03_20m\.jp2, "
                                           r"T33_B03_60m\.jp2"):
        ingest_scene(scene_params(modalities=optical_from("bands")), user_data,
                     user_data / "raw")
    assert not (user_data / "raw").exists()
