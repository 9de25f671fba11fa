"""A tiny fake Sentinel-2 SAFE product with the real layout and metadata, for tests.

L1C: ``GRANULE/L1C_<tile>_.../IMG_DATA/<tile>_<date>_<band>.jp2``; L2A: ``GRANULE/L2A_.../
IMG_DATA/R10m|R20m|R60m/<tile>_<date>_<band>_<res>m.jp2`` (a band at every resolution it has,
as ESA delivers it). ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` carry the fields the reader uses:
processing baseline, quantification value, radiometric offsets (baseline >= 04.00), spectral
band ids, image file list. The JP2 files are lossless (``QUALITY=100, REVERSIBLE=YES``).

    python -m tests.data.fake_safe OUT_DIR [--level L2A] [--baseline 04.00] [--size 32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

TILE, DATE = "T33UUP", "20200101T100309"
PHYSICAL = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
RESOLUTION = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20,
              "B8A": 20, "B11": 20, "B12": 20, "B01": 60, "B09": 60, "B10": 60}
L2A_ALSO = {10: [20, 60], 20: [60], 60: []}  # L2A resamples each band to the coarser grids
OFFSET = -1000


def write_fake_safe(out: Path, level: str = "L2A", baseline: str = "04.00",
                    dn: dict[str, np.ndarray] | None = None, size: int = 32,
                    x0: float = 500_000.0, y0: float = 4_500_000.0, epsg: int = 32633) -> Path:
    """Write a product folder ``out`` (its name should end ``.SAFE``); returns it.

    ``dn`` gives the digital numbers of some bands at 10 m (``size`` x ``size``); the others are
    random. A band of coarser resolution is the 10 m array subsampled.
    """
    rng = np.random.default_rng(0)
    dn = dn or {}
    granule = out / "GRANULE" / f"{level}_{TILE}_A023813_{DATE[:8]}T100608" / "IMG_DATA"
    image_files = []
    for band, native in RESOLUTION.items():
        if level == "L2A" and band == "B10":
            continue  # L2A has no cirrus band
        data = dn.get(band, rng.integers(1, 5000, (size, size)).astype(np.uint16))
        for res in [native, *(L2A_ALSO[native] if level == "L2A" else [])]:
            step = res // 10
            if level == "L1C":
                path = granule / f"{TILE}_{DATE}_{band}.jp2"
            else:
                path = granule / f"R{res}m" / f"{TILE}_{DATE}_{band}_{res}m.jp2"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.ascontiguousarray(data[::step, ::step])
            with rasterio.open(path, "w", driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES",
                               height=pixels.shape[0], width=pixels.shape[1], count=1,
                               dtype="uint16", crs=CRS.from_epsg(epsg),
                               transform=from_origin(x0, y0, res, res)) as dst:
                dst.write(pixels, 1)
            image_files.append(path.relative_to(out).with_suffix("").as_posix())
    (out / "DATASTRIP").mkdir()
    (out / "manifest.safe").write_text("<xfdu:XFDU/>\n")
    ns = f"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-{level[1:]}.xsd"
    files = "\n".join(f"          <IMAGE_FILE>{f}</IMAGE_FILE>" for f in image_files)
    spectral = "\n".join(f'      <Spectral_Information bandId="{i}" physicalBand="{b}"/>'
                         for i, b in enumerate(PHYSICAL))
    new = tuple(int(x) for x in baseline.split(".")) >= (4, 0)
    if level == "L1C":
        quant = "<QUANTIFICATION_VALUE unit=\"none\">10000</QUANTIFICATION_VALUE>"
        offsets = ("<Radiometric_Offset_List>" + "".join(
            f'<RADIO_ADD_OFFSET band_id="{i}">{OFFSET}</RADIO_ADD_OFFSET>'
            for i in range(len(PHYSICAL))) + "</Radiometric_Offset_List>") if new else ""
    else:
        quant = ("<QUANTIFICATION_VALUES_LIST><BOA_QUANTIFICATION_VALUE unit=\"none\">10000"
                 "</BOA_QUANTIFICATION_VALUE><AOT_QUANTIFICATION_VALUE unit=\"none\">1000.0"
                 "</AOT_QUANTIFICATION_VALUE></QUANTIFICATION_VALUES_LIST>")
        offsets = ("<BOA_ADD_OFFSET_VALUES_LIST>" + "".join(
            f'<BOA_ADD_OFFSET band_id="{i}">{OFFSET}</BOA_ADD_OFFSET>'
            for i in range(len(PHYSICAL))) + "</BOA_ADD_OFFSET_VALUES_LIST>") if new else ""
    (out / f"MTD_MSI{level}.xml").write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:Level-{level[1:]}_User_Product xmlns:n1="{ns}">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_TYPE>S2MSI{level[1:]}</PRODUCT_TYPE>
      <PROCESSING_LEVEL>Level-{level[1:]}</PROCESSING_LEVEL>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Product_Organisation>
        <Granule_List>
         <Granule granuleIdentifier="fake" imageFormat="JPEG2000">
{files}
         </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      {quant}
      {offsets}
      <Spectral_Information_List>
{spectral}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
</n1:Level-{level[1:]}_User_Product>
""")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--level", choices=["L1C", "L2A"], default="L2A")
    parser.add_argument("--baseline", default="04.00")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    write_fake_safe(args.out, args.level, args.baseline, size=args.size)
    print(args.out)


if __name__ == "__main__":
    main()
