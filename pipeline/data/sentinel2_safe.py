"""A Sentinel-2 ``.SAFE`` product (L1C or L2A) as a modality: its bands, found through its metadata.

The product metadata (``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``) lists every image file
(``IMAGE_FILE``, relative, without ``.jp2``), the quantification value (``QUANTIFICATION_VALUE``
for L1C, ``BOA_QUANTIFICATION_VALUE`` for L2A) and, from processing baseline 04.00 on, a
radiometric offset per band (``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET``, usually -1000):

    reflectance = (DN + offset) / quantification

A band is read at the finest resolution the product has it (L2A: ``R10m`` before ``R20m`` before
``R60m``). The scene stores reflectance x 10000 (the contract of an optical modality), so each
band comes with ``offset`` and ``gain = 10000 / quantification``; DN 0 is nodata.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.band_files import name_tokens
from pipeline.data.band_values import BandSource
from pipeline.errors import DatasetError

METADATA_FILES = {"MTD_MSIL1C.xml": "L1C", "MTD_MSIL2A.xml": "L2A"}
OFFSET_BASELINE = (4, 0)  # baselines from 04.00 on shift the DNs by an offset
NODATA_DN = 0.0


@dataclass(frozen=True)
class SafeProduct:
    """What a product's metadata says about its bands."""

    metadata: Path
    level: str
    baseline: tuple[int, int]
    quantification: float
    offsets: dict[str, float]  # band name (B01 ... B12, B8A) -> offset in DN
    images: dict[str, list[Path]]  # band name -> its image files, finest resolution first


def is_safe(path: Path) -> bool:
    """Whether ``path`` is a SAFE product folder (it holds a product metadata file)."""
    return path.is_dir() and any((path / name).is_file() for name in METADATA_FILES)


def band_name(physical: str) -> str:
    """The file-name form of a band: ``B1`` -> ``B01``, ``B8A`` -> ``B8A``."""
    match = re.fullmatch(r"B(\d+)(A?)", physical.strip().upper())
    if match is None:
        return physical
    number, narrow = int(match.group(1)), match.group(2)
    return f"B{number}A" if narrow else f"B{number:02d}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _resolution(path: Path) -> int:
    """The resolution in metres an L2A file name or folder says (``_20m``, ``R20m``); 0 if none."""
    found = re.findall(r"(\d+)m", f"{path.parent.name}_{path.name}")
    return int(found[-1]) if found else 0


def read_product(folder: Path) -> SafeProduct:
    """Parse the product metadata of the SAFE folder ``folder``.

    Raises:
        DatasetError: no or malformed metadata, or a baseline >= 04.00 without offsets.
    """
    metadata = next((folder / n for n in METADATA_FILES if (folder / n).is_file()), None)
    if metadata is None:
        raise DatasetError(folder, "not a Sentinel-2 SAFE product: no MTD_MSIL1C.xml or "
                           "MTD_MSIL2A.xml", "point the modality's path at the .SAFE folder "
                           "as downloaded (unzipped)")
    level = METADATA_FILES[metadata.name]
    try:
        root = ET.parse(metadata).getroot()
    except ET.ParseError as exc:
        raise DatasetError(metadata, f"malformed product metadata ({exc})",
                           "re-download the product") from exc
    texts: dict[str, list[ET.Element]] = {}
    for element in root.iter():
        texts.setdefault(_local(element.tag), []).append(element)
    try:
        raw_baseline = (texts["PROCESSING_BASELINE"][0].text or "").strip()
        major, minor = (int(x) for x in raw_baseline.split("."))
        quant_tag = "QUANTIFICATION_VALUE" if level == "L1C" else "BOA_QUANTIFICATION_VALUE"
        quantification = float(texts[quant_tag][0].text or "")
        band_ids = {s.attrib["bandId"]: band_name(s.attrib["physicalBand"])
                    for s in texts["Spectral_Information"]}
    except (KeyError, IndexError, ValueError) as exc:
        raise DatasetError(metadata, f"product metadata lacks a field the bands need ({exc!r})",
                           "re-download the product; only L1C/L2A products are supported"
                           ) from exc
    offset_tag = "RADIO_ADD_OFFSET" if level == "L1C" else "BOA_ADD_OFFSET"
    offsets = {band_ids[e.attrib["band_id"]]: float(e.text or 0)
               for e in texts.get(offset_tag, []) if e.attrib.get("band_id") in band_ids}
    if (major, minor) >= OFFSET_BASELINE and not offsets:
        raise DatasetError(metadata, f"processing baseline {raw_baseline} but no {offset_tag} "
                           "values: reflectance would be shifted by 0.1",
                           "re-download the product (its metadata is incomplete)")
    if (major, minor) < OFFSET_BASELINE:
        offsets = {}
    images: dict[str, list[Path]] = {}
    for element in texts.get("IMAGE_FILE", []):
        relative = Path((element.text or "").strip())
        for band in band_ids.values():
            if band.casefold() in name_tokens(relative):
                images.setdefault(band, []).append(folder / relative.with_suffix(".jp2"))
    for files in images.values():
        files.sort(key=_resolution)
    return SafeProduct(metadata=metadata, level=level, baseline=(major, minor),
                       quantification=quantification, offsets=offsets, images=images)


def safe_band_sources(folder: Path, bands: list[str], field: str) -> list[BandSource]:
    """The image file and scaling to reflectance x 10000 of each band of ``bands``.

    Raises:
        DatasetError: the product lacks a band (the bands it has are named) or its file.
    """
    product = read_product(folder)
    out = []
    for band in bands:
        files = product.images.get(band_name(band))
        if not files:
            have = ", ".join(sorted(product.images))
            raise DatasetError(product.metadata, f"band {band} of {field} is not in this "
                               f"{product.level} product (it has {have})",
                               f"fix {field}.bands in params.yaml")
        if not files[0].is_file():
            raise DatasetError(files[0], f"image of band {band} listed in {product.metadata.name} "
                               "is missing", "re-download or re-extract the product")
        out.append(BandSource(files[0], 1, offset=product.offsets.get(band_name(band), 0.0),
                              gain=10000.0 / product.quantification, nodata=NODATA_DN))
    return out
