"""Small user rasters for scene-mode tests: real GeoTIFFs on different grids."""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from pipeline.config import ModalityParams, SceneParams

CLASSES = {1: "water", 2: "forest", 3: "cropland"}


def write_tif(path: Path, data: np.ndarray, crs: int | None = 32633, x0: float = 500_000.0,
              y0: float = 4_500_000.0, res: float = 10.0, nodata: float | None = None,
              driver: str = "GTiff", **options: object) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver=driver, **options, height=data.shape[1],
                       width=data.shape[2],
                       count=data.shape[0], dtype=data.dtype, nodata=nodata,
                       crs=CRS.from_epsg(crs) if crs else None,
                       transform=from_origin(x0, y0, res, res)) as dst:
        dst.write(data)
    return path


def make_user_data(tmp_path: Path) -> Path:
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
