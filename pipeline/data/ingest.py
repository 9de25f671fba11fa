"""Scene mode: the user's own rasters, aligned onto one reference grid with ``rasterio.warp``.

Each modality is a multi-band raster (GeoTIFF/COG, JPEG 2000, a VRT mosaic: anything GDAL reads)
or a folder of single-band rasters, one per band, found by the band's name in the file name
(``band_files``). The label raster's grid is the reference: every modality is reprojected onto it
with its own resampling method (SAR in linear power; a band delivered in decibels, ``units: db``,
is converted first: a mean of decibels would be biased), labels are never resampled. The
result is a scene folder in the ``scene.json`` contract that the prepare stage reads.

Reprojection goes band by band through GDAL's chunked warper (``rasterio.band`` in,
``rasterio.band`` out), so a modality never has to fit in memory here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject, transform_bounds

from pipeline.config import ModalityParams, SceneParams
from pipeline.data.band_files import match_band_files
from pipeline.data.band_values import BandSource, check_units, convert_band, needs_conversion
from pipeline.data.scene import Modality, SceneDescription
from pipeline.data.sentinel2_safe import is_safe, safe_band_sources
from pipeline.data.stac import stac_band_sources
from pipeline.errors import DatasetError
from pipeline.io import atomic_path

LABELS_FILE = "labels.tif"


def resolve_bands(name: str, modality: ModalityParams, base: Path) -> list[BandSource]:
    """The file and band index of every band of ``modality``, checked against ``params.yaml``.

    Raises:
        DatasetError: the path is missing, the folder lacks a band, or the band count differs.
    """
    path = (base / modality.path).resolve()
    field = f"ingest.scene.modalities.{name}"
    if is_safe(path) or (path.suffix.lower() == ".json" and path.is_file()):
        read = safe_band_sources if is_safe(path) else stac_band_sources
        sources = read(path, modality.bands, field)
        for source in sources:
            _band_count(source.path)  # exists, readable, georeferenced
        return sources
    if path.is_dir():
        out = [BandSource(p, 1) for p in match_band_files(path, modality.bands, field)]
        for source in out:
            count = _band_count(source.path)
            if count != 1:
                raise DatasetError(source.path, f"{count} bands in a per-band file of {field}",
                                   "use single-band rasters in a band folder, or point "
                                   f"{field}.path at the multi-band file")
        return out
    count = _band_count(path)
    if count != len(modality.bands):
        raise DatasetError(path, f"{count} bands, but params.yaml {field}.bands lists "
                           f"{len(modality.bands)} ({modality.bands})",
                           f"list exactly the file's {count} bands in {field}.bands")
    return [BandSource(path, i) for i in range(1, count + 1)]


def _band_count(path: Path) -> int:
    """Open ``path`` to check that it is a georeferenced raster; its number of bands."""
    if not path.exists():
        raise DatasetError(path, "raster not found", "fix the path in params.yaml (ingest.scene), "
                           "relative to the project root")
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DatasetError(path, "raster has no CRS", "assign one, e.g. "
                                   "`gdal_edit.py -a_srs EPSG:32633 FILE`, or re-export it "
                                   "georeferenced")
            return int(src.count)
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(path, f"unreadable raster ({exc})", "check that the file is a raster "
                           "GDAL reads (GeoTIFF, JPEG 2000, VRT); re-download or "
                           "re-export it") from exc


def _check_overlap(path: Path, src: rasterio.DatasetReader, ref: rasterio.DatasetReader,
                   labels_path: Path) -> None:
    left, bottom, right, top = transform_bounds(src.crs, ref.crs, *src.bounds, densify_pts=21)
    r_left, r_bottom, r_right, r_top = ref.bounds
    if left >= r_right or right <= r_left or bottom >= r_top or top <= r_bottom:
        raise DatasetError(path, f"does not overlap the label raster {labels_path.name} "
                           f"(bounds {tuple(round(v) for v in (left, bottom, right, top))} vs "
                           f"{tuple(round(v) for v in ref.bounds)} in {ref.crs})",
                           "use rasters of the same area, or check their CRS")


def ingest_scene(params: SceneParams, base: Path, out_dir: Path) -> SceneDescription:
    """Align the user's modalities onto the label raster's grid; write a scene folder atomically.

    Args:
        params: ``ingest.scene`` of ``params.yaml``.
        base: folder that relative paths in ``params`` are relative to (the project root).
        out_dir: receives ``<modality>.tif`` per modality, ``labels.tif`` and ``scene.json``.

    Raises:
        DatasetError: a file is missing, unreadable or has no CRS, a band count differs from
            ``params.yaml``, or a modality does not overlap the label raster. Nothing is written.
    """
    base = Path(base)
    labels_path = (base / params.labels).resolve()
    _band_count(labels_path)
    bands = {name: resolve_bands(name, m, base) for name, m in params.modalities.items()}
    with rasterio.open(labels_path) as ref:
        if ref.count != 1:
            raise DatasetError(labels_path, f"label raster has {ref.count} bands",
                               "use a single-band raster of class codes")
        if np.dtype(ref.dtypes[0]).kind not in "iu":
            raise DatasetError(labels_path, f"label raster has data type {ref.dtypes[0]}",
                               "use integer class codes (e.g. uint8/uint16)")
        for sources in bands.values():
            for source in sources:
                with rasterio.open(source.path) as src:
                    _check_overlap(source.path, src, ref, labels_path)
        profile = {"driver": "GTiff", "height": ref.height, "width": ref.width, "crs": ref.crs,
                   "transform": ref.transform, "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "deflate"}
        if ref.width < 256 or ref.height < 256:
            profile |= {"tiled": False}
            profile.pop("blockxsize"), profile.pop("blockysize")
        modalities = {}
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            _copy_labels(ref, tmp / LABELS_FILE, profile)
            for name, modality in params.modalities.items():
                _warp_modality(bands[name], modality, tmp / f"{name}.tif", profile,
                               f"ingest.scene.modalities.{name}")
                modalities[name] = Modality(path=f"{name}.tif", kind=modality.kind,
                                            bands=list(modality.bands),
                                            source=str((base / modality.path).resolve()))
            description = SceneDescription(
                modalities=modalities, labels=LABELS_FILE, classes=dict(params.classes),
                ignore_codes=list(params.ignore_codes), source="scene")
            description.save(tmp)
    return description


def _copy_labels(ref: rasterio.DatasetReader, dst_path: Path, profile: dict[str, Any]) -> None:
    with rasterio.open(dst_path, "w", count=1, dtype=ref.dtypes[0], nodata=ref.nodata,
                       **profile) as dst:
        for _, window in ref.block_windows(1):
            dst.write(ref.read(1, window=window), 1, window=window)


def _warp_modality(sources: list[BandSource], modality: ModalityParams, dst_path: Path,
                   profile: dict[str, Any], field: str) -> None:
    """Reproject every band onto the reference grid; outside the source it is nodata.

    A band in dB or with a product scaling is converted first (``band_values``), into a
    temporary file next to ``dst_path`` that is removed once reprojected.
    """
    with rasterio.open(sources[0].path) as first:
        dtype = first.dtypes[sources[0].index - 1]
        src_nodata = next((v for v in (modality.nodata, first.nodata, sources[0].nodata)
                           if v is not None), None)
    converted = any(needs_conversion(s, modality.units) for s in sources)
    dst_nodata = float("nan") if converted else src_nodata
    dtype = "float32" if converted else dtype
    if dst_nodata is None:  # pixels outside the source need a value that says so
        dst_nodata = float("nan") if np.dtype(dtype).kind == "f" else 0
    scratch = dst_path.with_name(f".{dst_path.stem}.band.tif")
    with rasterio.open(dst_path, "w", count=len(sources), dtype=dtype, nodata=dst_nodata,
                       **profile) as dst:
        for index, (source, band) in enumerate(zip(sources, modality.bands, strict=True), 1):
            with rasterio.open(source.path) as src:
                nodata = next((v for v in (modality.nodata, src.nodata, source.nodata)
                               if v is not None), None)
                if modality.kind == "sar":
                    check_units(src, source, band, modality.units, field)
                try:
                    if needs_conversion(source, modality.units):
                        convert_band(src, source, modality.units, nodata, scratch)
                        with rasterio.open(scratch) as linear:
                            _reproject(rasterio.band(linear, 1), rasterio.band(dst, index),
                                       float("nan"), dst_nodata, modality)
                        scratch.unlink()
                    else:
                        _reproject(rasterio.band(src, source.index), rasterio.band(dst, index),
                                   nodata, dst_nodata, modality)
                except rasterio.errors.RasterioError as exc:  # e.g. a truncated file
                    raise DatasetError(source.path, f"unreadable raster: band {band} could not "
                                       f"be read ({exc})", "check that the file is complete "
                                       "and a raster GDAL reads; re-download or re-export it"
                                       ) from exc
            dst.set_band_description(index, band)


def _reproject(source: rasterio.Band, destination: rasterio.Band, src_nodata: float | None,
               dst_nodata: float, modality: ModalityParams) -> None:
    reproject(source=source, destination=destination, src_nodata=src_nodata,
              dst_nodata=dst_nodata, resampling=Resampling[modality.resampling])
