import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import BigEarthNetParams, PrepareParams
from pipeline.data.bigearthnet import (
    LABELS_19,
    extract_examples,
    ingest_bigearthnet,
    prepare_bigearthnet,
    read_pair,
)
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepared_store import dataset_fingerprint
from pipeline.errors import DatasetError

from .bigearthnet.data import write_fake_bigearthnet

PREPARE = PrepareParams(seed=0)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six real pairs shipped in bigearthnet-common, ingested and prepared."""
    root = tmp_path_factory.mktemp("ben")
    ingest_bigearthnet(BigEarthNetParams(split="random"), root, root / "raw")
    prepare_bigearthnet(root / "raw", root / "prepared", PREPARE)
    return root


def test_package_examples_are_six_real_pairs(tmp_path: Path) -> None:
    s1_root, s2_root = extract_examples(tmp_path)
    assert len(list(s1_root.iterdir())) == 6 and len(list(s2_root.iterdir())) == 6


def test_pairs_follow_the_datasets_own_name_mapping(examples: Path) -> None:
    index = json.loads((examples / "raw/bigearthnet.json").read_text())
    assert len(index["pairs"]) == 6
    for pair in index["pairs"]:
        meta = json.loads((examples / "raw/BigEarthNet-S1-Example" / pair["s1"] /
                           f"{pair['s1']}_labels_metadata.json").read_text())
        assert meta["corresponding_s2_patch"] == pair["s2"]
        assert pair["s1"].endswith(pair["s2"].split("_", 3)[-1].split("_", 1)[-1])


def test_prepared_examples_keep_the_patches_layout(examples: Path) -> None:
    manifest = json.loads((examples / "prepared/manifest.json").read_text())
    assert manifest["layout"] == "patches"
    assert not (examples / "prepared/scene").exists()
    with np.load(examples / "prepared/train.npz") as data:
        assert data["optical"].shape[1:] == (10, 120, 120)
    assert dataset_fingerprint(examples / "prepared") == manifest["fingerprint"]


def test_prepared_examples_are_multi_label_19_classes(examples: Path) -> None:
    dataset = PreparedDataset.open(examples / "prepared")
    assert dataset.task == "multi_label"
    assert dataset.class_names == LABELS_19
    assert dataset.channels == {"optical": 10, "sar": 2}
    total = 0
    for split in ("train", "val", "test"):
        data = dataset.split(split)
        assert data.labels.dtype == torch.float32 and data.labels.shape[1] == 19
        assert set(data.labels.unique().tolist()) <= {0.0, 1.0}
        assert (data.labels.sum(1) >= 1).all()
        assert data.inputs["optical"].shape[1:] == (10, 120, 120)
        total += len(data)
    assert total == 6


def test_real_example_labels_are_mapped_from_corine(examples: Path) -> None:
    index = json.loads((examples / "raw/bigearthnet.json").read_text())
    first = next(p for p in index["pairs"] if p["s2"] == "S2A_MSIL2A_20170613T101031_87_48")
    # CORINE: "Non-irrigated arable land", "Land principally occupied by agriculture, ..."
    assert first["labels"][0] == "Arable land"
    assert first["labels"][1].startswith("Land principally occupied by agriculture")


def test_s2_bands_of_20_and_60_m_are_resampled_to_one_size(examples: Path) -> None:
    raw = examples / "raw"
    index = json.loads((raw / "bigearthnet.json").read_text())
    pair = index["pairs"][0]
    optical, sar = read_pair(raw / index["s1_root"] / pair["s1"], raw / index["s2_root"] /
                             pair["s2"], ["B02", "B05", "B09"], 120)
    assert optical.shape == (3, 120, 120) and sar.shape == (2, 120, 120)
    assert np.isfinite(optical).all() and sar.max() < 20  # S1 stays in dB as features


def test_official_split_of_the_examples_leaves_val_empty(tmp_path: Path) -> None:
    ingest_bigearthnet(BigEarthNetParams(), tmp_path, tmp_path / "raw")
    with pytest.raises(DatasetError, match="val split has no patches.*split: random"):
        prepare_bigearthnet(tmp_path / "raw", tmp_path / "out", PREPARE)
    assert not (tmp_path / "out").exists()


def test_fake_patches_in_the_same_layout(tmp_path: Path) -> None:
    s1_root, s2_root = write_fake_bigearthnet(tmp_path / "ben", n=10)
    params = BigEarthNetParams(s1_root=str(s1_root), s2_root=str(s2_root), split="random",
                               size=60, s2_bands=["B02", "B03", "B04", "B8A"])
    ingest_bigearthnet(params, tmp_path, tmp_path / "raw")
    manifest = prepare_bigearthnet(tmp_path / "raw", tmp_path / "prepared", PREPARE)
    assert sum(manifest["split_sizes"].values()) == 10
    assert manifest["fingerprint"].startswith("sha256:")
    assert (tmp_path / "prepared/preview.png").stat().st_size > 1000
    data = PreparedDataset.open(tmp_path / "prepared").split("train")
    assert data.inputs["optical"].shape[1:] == (4, 60, 60)


def test_patch_without_a_19_class_label_is_dropped_and_counted(tmp_path: Path) -> None:
    labels = [["Bare rock"]] + [["Pastures"]] * 7
    s1_root, s2_root = write_fake_bigearthnet(tmp_path / "ben", n=8, labels=labels)
    index = ingest_bigearthnet(BigEarthNetParams(s1_root=str(s1_root), s2_root=str(s2_root)),
                               tmp_path, tmp_path / "raw")
    assert index["dropped"]["no_19_class_label"] == 1 and len(index["pairs"]) == 7
