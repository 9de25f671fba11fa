"""A local STAC Item or Catalog as a modality: bands from asset keys or eo:bands, no fetching."""

from datetime import datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from pipeline.config import ModalityParams
from pipeline.data.ingest import ingest_scene
from pipeline.errors import DatasetError

from .rasters import scene_params, write_tif

BANDS = ["B02", "B03", "B04", "B08"]
DATA = np.arange(1, 5, dtype=np.uint16)[:, None, None] * np.full((1, 32, 32), 500, np.uint16)


def item(folder: Path, assets: dict[str, pystac.Asset], item_id: str = "S2_tile") -> pystac.Item:
    out = pystac.Item(id=item_id, geometry=None, bbox=None, datetime=datetime(2020, 1, 1),
                      properties={})
    for key, asset in assets.items():
        out.add_asset(key, asset)
    out.set_self_href(str(folder / f"{item_id}.json"))
    return out


def optical(path: str) -> dict[str, ModalityParams]:
    return {"optical": ModalityParams(path=path, kind="optical", bands=BANDS,
                                      resampling="nearest")}


def check_optical(user_data: Path) -> None:
    with rasterio.open(user_data / "raw/optical.tif") as src:
        assert np.array_equal(src.read()[:, ::2, ::2], DATA)


def test_an_item_whose_asset_keys_are_the_bands(user_data: Path) -> None:
    for band, data in zip(BANDS, DATA, strict=True):
        write_tif(user_data / f"{band}.tif", data, res=20.0)
    stac = item(user_data, {b: pystac.Asset(href=f"./{b}.tif") for b in BANDS})
    stac.add_asset("thumbnail", pystac.Asset(href="https://example.com/thumb.png"))
    stac.save_object(include_self_link=False)
    ingest_scene(scene_params(modalities=optical("S2_tile.json")), user_data, user_data / "raw")
    check_optical(user_data)


def test_a_catalog_with_a_multi_band_asset_named_by_eo_bands(user_data: Path) -> None:
    write_tif(user_data / "s2_stack.tif", DATA, res=20.0)
    asset = pystac.Asset(href="./s2_stack.tif",
                         extra_fields={"eo:bands": [{"name": b} for b in BANDS]})
    catalog = pystac.Catalog(id="my-data", description="local imagery")
    catalog.add_item(item(user_data, {"visual": asset}))
    catalog.normalize_and_save(str(user_data / "stac"),
                               catalog_type=pystac.CatalogType.SELF_CONTAINED)
    # the asset href is relative to the item, which moved into the catalog's folder
    (user_data / "stac/S2_tile/s2_stack.tif").write_bytes((user_data / "s2_stack.tif").read_bytes())
    ingest_scene(scene_params(modalities=optical("stac/catalog.json")), user_data,
                 user_data / "raw")
    check_optical(user_data)


def test_a_remote_href_is_refused_and_nothing_fetched(user_data: Path) -> None:
    stac = item(user_data, {b: pystac.Asset(href=f"https://example.com/{b}.tif") for b in BANDS})
    stac.save_object(include_self_link=False)
    with pytest.raises(DatasetError, match=r"S2_tile\.json: band B02 of ingest\.scene\."
                                           r"modalities\.optical: asset href https://example"
                                           r"\.com/B02\.tif of item S2_tile is remote.*download"):
        ingest_scene(scene_params(modalities=optical("S2_tile.json")), user_data,
                     user_data / "raw")
    assert not (user_data / "raw").exists()


def test_a_band_no_asset_has_names_the_assets(user_data: Path) -> None:
    write_tif(user_data / "B02.tif", DATA[0], res=20.0)
    item(user_data, {"B02": pystac.Asset(href="./B02.tif")}).save_object(include_self_link=False)
    with pytest.raises(DatasetError, match=r"band B03 of ingest\.scene\.modalities\.optical: "
                                           r"no asset has it .*\(found b02\)"):
        ingest_scene(scene_params(modalities=optical("S2_tile.json")), user_data,
                     user_data / "raw")
    assert not (user_data / "raw").exists()
