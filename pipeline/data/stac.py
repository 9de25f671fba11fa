"""A local STAC Item or Catalog as a modality: its assets are the band files.

A band is an asset whose ``eo:bands`` name it (a multi-band asset gives one band per entry, in
order) or, without ``eo:bands``, whose key is the band's name (``B02``, ``vv``; compared
case-insensitively). A Catalog (or Collection) is walked for its Items; a band must be found in
exactly one of them (a mosaic of several Items is a VRT's job). Nothing is fetched: an Item, a
child or an asset whose ``href`` is remote (``http(s)://``, ``s3://``, ...) is an error.
"""

from __future__ import annotations

from pathlib import Path

import pystac

from pipeline.data.band_values import BandSource
from pipeline.errors import DatasetError

FIX_REMOTE = ("download it and point the href at the local file (nothing is fetched from the "
              "network)")


def _is_remote(href: str) -> bool:
    return "://" in href and not href.startswith("file://")


def _local_path(href: str) -> Path:
    return Path(href.removeprefix("file://"))


def _items(path: Path) -> list[pystac.Item]:
    """Every Item of the STAC file ``path`` (itself, or those of a Catalog, recursively)."""
    try:
        root = pystac.read_file(str(path))
    except Exception as exc:  # pystac raises many types for a bad file (JSON, STAC, I/O)
        raise DatasetError(path, f"not a readable STAC Item or Catalog ({exc})",
                           "check the JSON file is a STAC Item or Catalog") from exc
    if isinstance(root, pystac.Item):
        return [root]
    if not isinstance(root, pystac.Catalog):
        raise DatasetError(path, f"a STAC {type(root).__name__}, not an Item or Catalog",
                           "point the modality's path at an Item or a Catalog")
    items: list[pystac.Item] = []
    pending = [root]
    while pending:
        catalog = pending.pop()
        for link in catalog.links:
            if link.rel not in ("child", "item"):
                continue
            href = link.get_absolute_href() or ""
            if _is_remote(href):
                raise DatasetError(path, f"{link.rel} link {href} of catalog {catalog.id} is "
                                   "remote", FIX_REMOTE)
            target = link.resolve_stac_object(root=root).target
            if isinstance(target, pystac.Item):
                items.append(target)
            elif isinstance(target, pystac.Catalog):
                pending.append(target)
    return items


def _asset_bands(key: str, asset: pystac.Asset) -> list[str]:
    """The band names of an asset: its ``eo:bands`` names, or its key."""
    bands = asset.extra_fields.get("eo:bands") or []
    names = [str(b.get("name", "")) for b in bands if isinstance(b, dict)]
    return names if names and all(names) else [key]


def stac_band_sources(path: Path, bands: list[str], field: str) -> list[BandSource]:
    """The file and band index of each band of ``bands`` in the STAC Item/Catalog ``path``.

    Raises:
        DatasetError: a band is in no asset or in several, or its asset's href is remote.
    """
    candidates: dict[str, list[tuple[str, pystac.Asset, int]]] = {}
    for item in _items(path):
        for key, asset in item.assets.items():
            for index, name in enumerate(_asset_bands(key, asset), 1):
                candidates.setdefault(name.casefold(), []).append((item.id, asset, index))
    out = []
    for band in bands:
        found = candidates.get(band.casefold(), [])
        if not found:
            known = ", ".join(sorted(candidates)) or "no assets"
            raise DatasetError(path, f"band {band} of {field}: no asset has it as key or "
                               f"eo:bands name (found {known})",
                               f"fix {field}.bands in params.yaml, or name the asset's band")
        if len(found) > 1:
            raise DatasetError(path, f"band {band} of {field} is in several assets: "
                               + ", ".join(f"{i}:{a.href}" for i, a, _ in found),
                               "point the modality at one Item, or mosaic the Items into a VRT")
        item_id, asset, index = found[0]
        href = asset.get_absolute_href() or asset.href
        if _is_remote(href):
            raise DatasetError(path, f"band {band} of {field}: asset href {href} of item "
                               f"{item_id} is remote", FIX_REMOTE)
        out.append(BandSource(_local_path(href), index))
    return out
