"""Fake BigEarthNet-MM patches in the dataset's own layout (seeded, real UTM CRS).

    python -m tests.data.bigearthnet.data OUT_DIR [N]

writes ``OUT_DIR/BigEarthNet-S1`` and ``OUT_DIR/BigEarthNet-S2``: per pair, S2 bands at 10/20/60 m
(120/60/20 pixels, uint16), S1 VV/VH in dB (float32, 120 x 120) and the two metadata JSONs, the S1
one naming its ``corresponding_s2_patch``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

S2_SIZES = {"B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60, "B07": 60,
            "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60}
CORINE = ["Non-irrigated arable land", "Pastures", "Coniferous forest", "Water bodies",
          "Discontinuous urban fabric", "Sea and ocean", "Bare rock"]


def _tif(path: Path, data: np.ndarray, x0: float, y0: float) -> None:
    size = data.shape[0]
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=1,
                       dtype=data.dtype, crs=CRS.from_epsg(32633),
                       transform=from_origin(x0, y0, 1200 / size, 1200 / size)) as dst:
        dst.write(data, 1)


def write_fake_bigearthnet(out: Path, n: int = 8, seed: int = 0,
                           labels: list[list[str]] | None = None) -> tuple[Path, Path]:
    """Write ``n`` fake S1/S2 pairs; returns the S1 and S2 roots."""
    rng = np.random.default_rng(seed)
    s1_root, s2_root = Path(out) / "BigEarthNet-S1", Path(out) / "BigEarthNet-S2"
    for i in range(n):
        s2 = f"S2A_MSIL2A_20170613T101031_{i}_{i + 1}"
        s1 = f"S1A_IW_GRDH_1SDV_20170613T165043_33UUP_{i}_{i + 1}"
        x0, y0 = 400_000.0 + 1200 * i, 5_300_000.0
        patch_labels = labels[i] if labels else list(rng.choice(CORINE[:6], 2, replace=False))
        (s2_root / s2).mkdir(parents=True)
        (s1_root / s1).mkdir(parents=True)
        for band, size in S2_SIZES.items():
            _tif(s2_root / s2 / f"{s2}_{band}.tif",
                 rng.integers(100, 3000, (size, size)).astype(np.uint16), x0, y0)
        for band in ("VV", "VH"):
            _tif(s1_root / s1 / f"{s1}_{band}.tif",
                 rng.uniform(-25, 0, (120, 120)).astype(np.float32), x0, y0)
        meta = {"labels": patch_labels, "coordinates": {"ulx": x0, "uly": y0}}
        (s2_root / s2 / f"{s2}_labels_metadata.json").write_text(json.dumps(meta))
        (s1_root / s1 / f"{s1}_labels_metadata.json").write_text(
            json.dumps(meta | {"corresponding_s2_patch": s2}))
    return s1_root, s2_root


if __name__ == "__main__":
    write_fake_bigearthnet(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 8)
