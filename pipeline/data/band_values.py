"""The values of a band as delivered, and what ingestion turns them into before resampling.

SAR is resampled in linear power: a band in decibels (``units: db``) is converted to linear
power first (a mean of decibels is biased). Sentinel-2 digital numbers are rescaled to the scene
contract, reflectance x 10000, with the product's own offset and quantification value
(``BandSource.offset``/``gain``). A converted band is written block by block to a temporary
float32 GeoTIFF next to the output, which is reprojected like any other band and then removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio

from pipeline.errors import DatasetError

Units = Literal["linear", "db"]


@dataclass(frozen=True)
class BandSource:
    """One band of the user's data: a file, the 1-based band index inside it, and its scaling.

    The value the scene stores is ``(stored + offset) * gain`` (identity unless the product's
    metadata says otherwise, as Sentinel-2's does). ``nodata`` applies when neither the file nor
    ``params.yaml`` gives one (Sentinel-2: DN 0).
    """

    path: Path
    index: int
    offset: float = 0.0
    gain: float = 1.0
    nodata: float | None = None


def needs_conversion(source: BandSource, units: Units) -> bool:
    """Whether the band must be converted before it is resampled."""
    return units == "db" or source.offset != 0.0 or source.gain != 1.0


def check_units(src: rasterio.DatasetReader, source: BandSource, band: str, units: Units,
                field: str) -> None:
    """SAR values must match ``units`` (a sample of windows is read).

    Linear power is never negative; backscatter in decibels nearly always is somewhere.

    Raises:
        DatasetError: linear with negative values, or decibels with none.
    """
    lowest = np.inf
    for _, window in list(src.block_windows(source.index))[:16]:
        data = src.read(source.index, window=window, masked=True)
        if np.ma.count(data):
            lowest = min(lowest, float(np.ma.min(data)))
    if units == "linear" and lowest < 0:
        raise DatasetError(source.path, f"band {band} has negative values: SAR must be in "
                           "linear power, this looks like decibels",
                           f"set {field}.units: db in params.yaml (it is converted to linear "
                           "power), or convert to linear power (10 ** (dB / 10))")
    if units == "db" and lowest >= 0:
        raise DatasetError(source.path, f"band {band} has no negative values, but {field}.units "
                           "is db: this looks like linear power",
                           f"set {field}.units: linear in params.yaml")


def convert_band(src: rasterio.DatasetReader, source: BandSource, units: Units,
                 nodata: float | None, dst_path: Path) -> None:
    """Write band ``source`` as float32 linear values (or reflectance x 10000) to ``dst_path``.

    Same grid as ``src``; nodata (``nodata``, or NaN in the source) becomes NaN.
    """
    profile = {"driver": "GTiff", "height": src.height, "width": src.width, "count": 1,
               "dtype": "float32", "crs": src.crs, "transform": src.transform,
               "nodata": float("nan")}
    with rasterio.open(dst_path, "w", **profile) as dst:
        for _, window in src.block_windows(source.index):
            data = src.read(source.index, window=window).astype(np.float32)
            invalid = ~np.isfinite(data)
            if nodata is not None:
                invalid |= data == np.float32(nodata)
            if units == "db":
                data = np.power(np.float32(10.0), data / np.float32(10.0), dtype=np.float32)
            data = (data + np.float32(source.offset)) * np.float32(source.gain)
            data[invalid] = np.nan
            dst.write(data, 1, window=window)
