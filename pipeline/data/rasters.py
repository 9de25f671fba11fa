"""Raster I/O of the prepare stage: a raster's grid, its pixels, and the features made of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from pipeline.errors import DatasetError


@dataclass(frozen=True)
class Grid:
    """The pixel grid of a raster: CRS, affine transform and size."""

    crs: str
    transform: list[float]
    height: int
    width: int


def read_grid(path: Path) -> tuple[Grid, int, float | None]:
    """The grid, band count and nodata value of the GeoTIFF at ``path`` (no pixels are read).

    Raises:
        DatasetError: the file is missing, unreadable or has no CRS.
    """
    if not path.is_file():
        raise DatasetError(path, "raster not found", "re-run the ingest stage")
    try:
        with rasterio.open(path) as src:
            crs = src.crs.to_string() if src.crs else None
            grid = Grid(crs=crs or "", transform=list(src.transform)[:6], height=src.height,
                        width=src.width)
            count, nodata = src.count, src.nodata
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(path, f"unreadable raster ({exc})",
                           "check the file is a valid GeoTIFF; re-export or re-ingest it") from exc
    if crs is None:
        raise DatasetError(path, "raster has no CRS",
                           "assign a CRS (e.g. with gdal_edit.py -a_srs)")
    return grid, count, nodata


def read_raster(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read all bands of a GeoTIFF as ``(bands, H, W)`` plus its grid (small rasters only).

    Raises:
        DatasetError: the file is missing, unreadable or has no CRS.
    """
    grid, _, _ = read_grid(path)
    with rasterio.open(path) as src:
        return src.read(), grid.__dict__


def read_window(path: Path, window: Window) -> tuple[np.ndarray, float | None]:
    """Every band of ``path`` inside ``window`` ``(bands, h, w)``, and the raster's nodata value."""
    with rasterio.open(path) as src:
        return src.read(window=window), src.nodata


def to_features(data: np.ndarray, kind: str) -> np.ndarray:
    """Physical values the network sees: reflectance for optical, decibels for SAR."""
    if kind == "sar":
        power = np.maximum(data, np.float32(1e-6), dtype=np.float32)
        decibels: np.ndarray = np.multiply(np.log10(power, out=power), np.float32(10.0), out=power)
        return decibels
    reflectance: np.ndarray = np.divide(data, np.float32(10000.0), dtype=np.float32)
    return reflectance
