"""Finding the file of each band in a folder of single-band rasters, by the band's name.

A band matches a file when its name is one of the tokens of the file name (split on ``_``, ``-``
and ``.``, compared case-insensitively): ``B11`` matches ``B11.tif``, ``S2_B11.tif`` and
``T33UUP_20200101T100309_B11_20m.jp2`` but not ``B1.tif`` or ``B110.tif``. Any raster GDAL reads
is a candidate (GeoTIFF/COG, JPEG 2000, VRT, ERDAS Imagine).
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.errors import DatasetError

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".j2k", ".vrt", ".img")


def name_tokens(path: Path) -> set[str]:
    """The case-folded tokens of a file name without its suffix (``T33_B11_20m`` -> 3 tokens)."""
    return {t.casefold() for t in re.split(r"[_\-.\s]+", path.stem) if t}


def raster_files(folder: Path) -> list[Path]:
    """The raster files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)


def match_band_files(folder: Path, bands: list[str], field: str) -> list[Path]:
    """The one file of ``folder`` named after each band of ``bands``, in band order.

    Raises:
        DatasetError: a band matches no file or several (the files are named), or two bands
            match the same file.
    """
    files = raster_files(folder)
    found = ", ".join(p.name for p in files) or "no raster files (.tif, .jp2, .vrt, ...)"
    out = []
    for band in bands:
        matches = [p for p in files if band.casefold() in name_tokens(p)]
        if not matches:
            raise DatasetError(folder, f"band {band} of {field}: no file has {band} in its "
                               f"name (found {found})",
                               f"add a single-band raster named like '{band}.tif' or "
                               f"'*_{band}_*.jp2', or fix {field}.bands in params.yaml")
        if len(matches) > 1:
            raise DatasetError(folder, f"band {band} of {field} matches several files: "
                               + ", ".join(p.name for p in matches),
                               "keep one file per band in the folder (move the others out), "
                               f"or point {field}.path at a folder of one resolution")
        out.append(matches[0])
    return out
