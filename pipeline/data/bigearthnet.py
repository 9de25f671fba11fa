"""BigEarthNet-MM: Sentinel-1 + Sentinel-2 patch folders, multi-label (19-class nomenclature).

Layout (BigEarthNet v1): ``<S2 root>/<S2 name>/<S2 name>_<BAND>.tif`` for 12 bands at 10, 20 and
60 m (120, 60 and 20 pixels a side) plus ``<S2 name>_labels_metadata.json``; ``<S1 root>/<S1
name>/<S1 name>_{VV,VH}.tif`` (backscatter in dB, 120 x 120) plus a metadata JSON whose
``corresponding_s2_patch`` is the dataset's own S1 -> S2 name mapping, used for pairing. Labels are
the CORINE level-3 names of the metadata, mapped onto the official 19 classes (Sumbul et al. 2021);
a patch none of whose labels has a 19-class counterpart is dropped and counted.

Ingest writes an index (``bigearthnet.json``: pairs, 19-class labels, official split) into the raw
folder; prepare reads the pairs in Spark tasks, resamples every S2 band to ``size`` pixels
(bilinear) and S1 in linear power, and writes the usual prepared dataset with ``task:
multi_label`` and multi-hot ``label`` arrays ``(N, 19)`` float32.

The six real example pairs shipped inside the ``bigearthnet-common`` package are read from its
tarballs with ``importlib.resources`` (no download): ``extract_examples``.
"""

from __future__ import annotations

import bz2
import csv
import functools
import io
import json
import tarfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from pipeline.config import BigEarthNetParams, PrepareParams
from pipeline.data.prepared_store import write_prepared
from pipeline.data.rasters import to_features
from pipeline.data.split import SPLITS, split_arrays, split_counts, split_groups
from pipeline.data.task_runner import ProgressLog, run_tasks
from pipeline.errors import DatasetError
from pipeline.io import atomic_path
from pipeline.objective import MULTI_LABEL

INDEX_FILE = "bigearthnet.json"
S1_BANDS = ["VV", "VH"]
S2_ALL_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
                "B12"]
EXAMPLES = {"s1": ("BigEarthNet-S1-Example.tar.bz2", "BigEarthNet-S1-Example"),
            "s2": ("BigEarthNet-S2-Example.tar.bz2", "BigEarthNet-S2-Example")}
PAIRS_PER_TASK = 64

# The official 19-class nomenclature, in its original order (BigEarthNet-S2_19-classes_models
# label_indices.json, as in bigearthnet_common.constants.NEW_LABELS_ORIGINAL_ORDER).
LABELS_19 = [
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops",
    "Pastures", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation", "Transitional woodland, shrub",
    "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands", "Inland waters",
    "Marine waters",
]
# CORINE level-3 label (43 classes) -> 19-class label; None: no counterpart (same source).
CORINE_TO_19: dict[str, str | None] = {
    "Continuous urban fabric": "Urban fabric",
    "Discontinuous urban fabric": "Urban fabric",
    "Industrial or commercial units": "Industrial or commercial units",
    "Road and rail networks and associated land": None, "Port areas": None, "Airports": None,
    "Mineral extraction sites": None, "Dump sites": None, "Construction sites": None,
    "Green urban areas": None, "Sport and leisure facilities": None,
    "Non-irrigated arable land": "Arable land", "Permanently irrigated land": "Arable land",
    "Rice fields": "Arable land", "Vineyards": "Permanent crops",
    "Fruit trees and berry plantations": "Permanent crops", "Olive groves": "Permanent crops",
    "Pastures": "Pastures", "Annual crops associated with permanent crops": "Permanent crops",
    "Complex cultivation patterns": "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation":
        "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas": "Agro-forestry areas", "Broad-leaved forest": "Broad-leaved forest",
    "Coniferous forest": "Coniferous forest", "Mixed forest": "Mixed forest",
    "Natural grassland": "Natural grassland and sparsely vegetated areas",
    "Moors and heathland": "Moors, heathland and sclerophyllous vegetation",
    "Sclerophyllous vegetation": "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland/shrub": "Transitional woodland, shrub",
    "Beaches, dunes, sands": "Beaches, dunes, sands", "Bare rock": None,
    "Sparsely vegetated areas": "Natural grassland and sparsely vegetated areas",
    "Burnt areas": None, "Inland marshes": "Inland wetlands", "Peatbogs": "Inland wetlands",
    "Salt marshes": "Coastal wetlands", "Salines": "Coastal wetlands", "Intertidal flats": None,
    "Water courses": "Inland waters", "Water bodies": "Inland waters",
    "Coastal lagoons": "Marine waters", "Estuaries": "Marine waters",
    "Sea and ocean": "Marine waters",
}


def extract_examples(dest: Path) -> tuple[Path, Path]:
    """Extract the real example patches shipped in ``bigearthnet-common`` into ``dest``.

    Returns:
        The S1 and S2 roots.
    """
    package = resources.files("bigearthnet_common")
    roots = []
    for archive, folder in EXAMPLES.values():
        with resources.as_file(package / archive) as path, tarfile.open(path, "r:bz2") as tar:
            tar.extractall(dest, filter="data")
        roots.append(Path(dest) / folder)
    return roots[0], roots[1]


def official_splits() -> dict[str, str]:
    """S2 patch name -> ``train``/``val``/``test`` from the package's official lists."""
    package = resources.files("bigearthnet_common")
    out = {}
    for split in SPLITS:
        text = bz2.decompress((package / f"{split}.csv.bz2").read_bytes()).decode()
        for row in csv.reader(io.StringIO(text)):
            if row:
                out[row[0].strip()] = split
    return out


def labels_19(corine: list[str], path: Path) -> list[str]:
    """The 19-class labels of a patch's CORINE labels (sorted in nomenclature order).

    Raises:
        DatasetError: a label is not a CORINE level-3 name of BigEarthNet.
    """
    unknown = [label for label in corine if label not in CORINE_TO_19]
    if unknown:
        raise DatasetError(path, f"field 'labels': {unknown} are not BigEarthNet CORINE labels",
                           "use the dataset's original *_labels_metadata.json")
    new = {CORINE_TO_19[label] for label in corine} - {None}
    return [label for label in LABELS_19 if label in new]


def _metadata(folder: Path) -> dict[str, Any]:
    path = folder / f"{folder.name}_labels_metadata.json"
    if not path.is_file():
        raise DatasetError(path, "patch metadata not found",
                           "every BigEarthNet patch folder needs its *_labels_metadata.json")
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(path, f"not valid JSON ({exc})", "restore the file from the dataset"
                           ) from exc
    if not isinstance(meta.get("labels"), list):
        raise DatasetError(path, "field 'labels' missing or not a list",
                           "restore the file from the dataset")
    return meta


def ingest_bigearthnet(params: BigEarthNetParams, base: Path, out_dir: Path) -> dict[str, Any]:
    """Pair S1 and S2 patches, map their labels to 19 classes; write the index atomically.

    With no roots configured, the package's example patches are extracted into ``out_dir``.

    Raises:
        DatasetError: a root or metadata file is missing or malformed, or nothing pairs up.
    """
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if params.s1_root is None or params.s2_root is None:  # both or neither (validated)
            s1_root, s2_root = extract_examples(tmp)
            roots = {"s1_root": s1_root.name, "s2_root": s2_root.name}
        else:
            s1_root, s2_root = (Path(base) / params.s1_root).resolve(), (
                Path(base) / params.s2_root).resolve()
            roots = {"s1_root": str(s1_root), "s2_root": str(s2_root)}
        for root, field in ((s1_root, "s1_root"), (s2_root, "s2_root")):
            if not root.is_dir():
                raise DatasetError(root, "BigEarthNet folder not found",
                                   f"fix ingest.bigearthnet.{field} in params.yaml")
        splits = official_splits()
        pairs, dropped = [], {"unpaired": 0, "no_19_class_label": 0}
        for s1 in sorted(p for p in s1_root.iterdir() if p.is_dir()):
            meta = _metadata(s1)
            s2_name = meta.get("corresponding_s2_patch")
            if not s2_name or not (s2_root / s2_name).is_dir():
                dropped["unpaired"] += 1
                continue
            labels = labels_19(_metadata(s2_root / s2_name)["labels"],
                               s2_root / s2_name / f"{s2_name}_labels_metadata.json")
            if not labels:
                dropped["no_19_class_label"] += 1
                continue
            pairs.append({"s1": s1.name, "s2": s2_name, "labels": labels,
                          "official_split": splits.get(s2_name)})
        if not pairs:
            raise DatasetError(s1_root, f"no S1/S2 pair with a 19-class label ({dropped})",
                               "check that s1_root and s2_root hold the matching "
                               "BigEarthNet-S1 and -S2 patch folders")
        index = {"source": "bigearthnet", "task": MULTI_LABEL, "classes": LABELS_19,
                 "s2_bands": list(params.s2_bands), "size": params.size,
                 "split": params.split, "pairs": pairs, "dropped": dropped} | roots
        (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return index


def is_bigearthnet(raw_dir: Path) -> bool:
    """Whether ``raw_dir`` was ingested from BigEarthNet (holds ``bigearthnet.json``)."""
    return (Path(raw_dir) / INDEX_FILE).is_file()


def _read_band(path: Path, size: int, band: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(path, f"band {band} not found", "restore the patch folder from the "
                           "dataset, or remove the band from ingest.bigearthnet.s2_bands")
    try:
        with rasterio.open(path) as src:
            band_data: np.ndarray = src.read(1, out_shape=(size, size),
                                             resampling=Resampling.bilinear).astype(np.float64)
            return band_data
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(path, f"unreadable raster ({exc})", "restore the file from the "
                           "dataset") from exc


def read_pair(s1_dir: Path, s2_dir: Path, s2_bands: list[str], size: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Features of one pair: S2 reflectance ``(bands, size, size)``, S1 dB ``(2, size, size)``.

    S2 bands at 20 and 60 m are upsampled bilinearly; S1 (stored in dB) is resampled in linear
    power when its size differs.
    """
    s2 = np.stack([_read_band(s2_dir / f"{s2_dir.name}_{b}.tif", size, b) for b in s2_bands])
    s1 = []
    for band in S1_BANDS:
        path = s1_dir / f"{s1_dir.name}_{band}.tif"
        with rasterio.open(path) if path.is_file() else _missing(path, band) as src:
            if (src.height, src.width) == (size, size):
                linear = 10 ** (src.read(1).astype(np.float64) / 10)
            else:
                with rasterio.MemoryFile() as mem, mem.open(
                        driver="GTiff", height=src.height, width=src.width, count=1,
                        dtype="float64", transform=src.transform, crs=src.crs) as tmp:
                    tmp.write(10 ** (src.read(1).astype(np.float64) / 10), 1)
                    linear = tmp.read(1, out_shape=(size, size), resampling=Resampling.bilinear)
        s1.append(linear)
    for name, array in (("S2", s2), ("S1", np.stack(s1))):
        if not np.isfinite(array).all():
            raise DatasetError(s2_dir if name == "S2" else s1_dir, f"{name} patch has NaN/inf "
                               "values", "drop this patch from the folder")
    return to_features(s2, "optical"), to_features(np.stack(s1), "sar")


def _missing(path: Path, band: str) -> Any:
    raise DatasetError(path, f"band {band} not found", "restore the patch folder from the dataset")


def _read_pairs(raw_dir: str, index: dict[str, Any], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """One Spark task: the features of a chunk of pairs."""
    s1_root, s2_root = Path(raw_dir) / index["s1_root"], Path(raw_dir) / index["s2_root"]
    optical, sar = [], []
    try:
        for pair in pairs:
            o, s = read_pair(s1_root / pair["s1"], s2_root / pair["s2"], index["s2_bands"],
                             index["size"])
            optical.append(o)
            sar.append(s)
    except DatasetError as exc:
        return {"error": {"path": str(exc.path), "problem": str(exc).split(": ", 1)[1]
                          .rsplit(". Fix: ", 1)[0], "fix": str(exc).rsplit(". Fix: ", 1)[1]}}
    return {"error": None, "optical": np.stack(optical).astype(np.float32),
            "sar": np.stack(sar).astype(np.float32)}


def prepare_bigearthnet(raw_dir: Path, out_dir: Path, params: PrepareParams,
                        spark: object | None = None) -> dict[str, Any]:
    """Read the indexed pairs (Spark tasks of ``PAIRS_PER_TASK``), split, write ``out_dir``.

    Raises:
        DatasetError: a band is missing or unreadable, or a split ends up empty.
    """
    raw_dir = Path(raw_dir).resolve()  # Spark workers may run in another directory
    index = json.loads((raw_dir / INDEX_FILE).read_text())
    pairs = index["pairs"]
    dropped = dict(index["dropped"])
    if index["split"] == "official":
        dropped["not_in_official_split"] = sum(p["official_split"] is None for p in pairs)
        pairs = [p for p in pairs if p["official_split"] is not None]
    chunks = [pairs[i:i + PAIRS_PER_TASK] for i in range(0, len(pairs), PAIRS_PER_TASK)]
    progress = ProgressLog("prepare", len(chunks), "tasks")
    results = run_tasks(functools.partial(_read_pairs, str(raw_dir), index), chunks, spark,
                        progress)
    for result in results:
        if result["error"] is not None:
            raise DatasetError(**result["error"])
    classes = index["classes"]
    label = np.zeros((len(pairs), len(classes)), dtype=np.float32)
    for i, pair in enumerate(pairs):
        label[i, [classes.index(c) for c in pair["labels"]]] = 1.0
    arrays = {"optical": np.concatenate([r["optical"] for r in results]),
              "sar": np.concatenate([r["sar"] for r in results]), "label": label,
              "name": np.array([p["s2"] for p in pairs])}
    if index["split"] == "official":
        split = np.array([SPLITS.index(p["official_split"]) for p in pairs], dtype=np.int8)
    else:
        split = split_groups(np.arange(len(pairs)), params)
    fix = ("use more patches" + (", or ingest.bigearthnet.split: random (the official lists "
                                 "leave this split empty for these patches)"
                                 if index["split"] == "official" else ""))
    per_split = split_arrays(arrays, split, raw_dir / INDEX_FILE, fix)
    manifest = {
        "task": MULTI_LABEL,
        "source": "bigearthnet",
        "source_files": {"s1_root": index["s1_root"], "s2_root": index["s2_root"]},
        "grid": {"size": index["size"], "note": "S2 bands resampled to size x size (bilinear)"},
        "modalities": {"optical": {"kind": "optical", "bands": index["s2_bands"]},
                       "sar": {"kind": "sar", "bands": S1_BANDS}},
        "classes": classes,
        "patch_size": index["size"],
        "split_rule": index["split"],
        "dropped_patches": dropped,
        "split_sizes": {s: int(len(per_split[s]["label"])) for s in SPLITS},
        "class_counts": {s: split_counts(per_split[s]["label"], len(classes)) for s in SPLITS},
    }
    return write_prepared(out_dir, per_split, manifest,
                          functools.partial(patches_preview, per_split["train"], classes))


def patches_preview(split: dict[str, np.ndarray], classes: list[str], out: Path,
                    count: int = 4) -> None:
    """RGB and SAR composites of a few patches with their labels, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.data.preview import stretch

    n = min(count, len(split["label"]))
    fig, axes = plt.subplots(n, 3, figsize=(11, 3.6 * n), squeeze=False)
    for i in range(n):
        rgb = stretch(split["optical"][i][[2, 1, 0]])
        sar = split["sar"][i]
        axes[i, 0].imshow(rgb)
        axes[i, 0].set_title(f"{split['name'][i]}: S2 RGB", fontsize=8)
        axes[i, 1].imshow(stretch(np.stack([sar[0], sar[1], sar[0] - sar[1]])))
        axes[i, 1].set_title("S1 VV, VH, VV-VH (dB)", fontsize=8)
        names = [classes[k] for k in np.flatnonzero(split["label"][i])]
        axes[i, 2].text(0, 0.5, "\n".join(n[:48] for n in names), fontsize=8, va="center")
        axes[i, 2].set_title("labels (19 classes)", fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(out, dpi=70)
    plt.close(fig)
