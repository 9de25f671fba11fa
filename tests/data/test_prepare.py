import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipeline.config import PrepareParams
from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import SPLITS, prepare_dataset, to_features
from pipeline.errors import DatasetError

from ..conftest import SMALL_PREPARE


def load_split(prepared_dir: Path, split: str) -> dict[str, np.ndarray]:
    with np.load(prepared_dir / f"{split}.npz") as data:
        return dict(data)


def test_patches_are_centred_on_their_labelled_pixel(scene_dir: Path, prepared_dir: Path) -> None:
    with rasterio.open(scene_dir / "optical.tif") as src:
        optical = to_features(src.read(), "optical")
    with rasterio.open(scene_dir / "labels.tif") as src:
        labels = src.read(1)
    half = SMALL_PREPARE.patch_size // 2
    codes = json.loads((prepared_dir / "manifest.json").read_text())["class_codes"]
    split = load_split(prepared_dir, "train")
    for i in range(0, len(split["label"]), 97):
        r, c = split["row"][i], split["col"][i]
        np.testing.assert_array_equal(split["optical"][i], optical[:, r - half:r + half + 1,
                                                                   c - half:c + half + 1])
        assert codes[split["label"][i]] == labels[r, c]


def test_split_is_spatially_blocked(prepared_dir: Path) -> None:
    block = SMALL_PREPARE.block_size
    blocks = {}
    for split in SPLITS:
        data = load_split(prepared_dir, split)
        blocks[split] = set(zip(data["row"] // block, data["col"] // block, strict=True))
    assert not blocks["train"] & blocks["val"]
    assert not blocks["train"] & blocks["test"]
    assert not blocks["val"] & blocks["test"]


def test_normalisation_uses_the_training_split_only(prepared_dir: Path) -> None:
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    train = load_split(prepared_dir, "train")
    for modality in ("optical", "sar"):
        np.testing.assert_allclose(manifest["normalisation"][modality]["mean"],
                                   train[modality].mean(axis=(0, 2, 3)), rtol=1e-5)
    normalised = PreparedDataset.open(prepared_dir).split("train").inputs["sar"]
    np.testing.assert_allclose(normalised.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(dim=(0, 2, 3)).numpy(), 1.0, atol=1e-3)


def test_manifest_describes_the_dataset(prepared_dir: Path) -> None:
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    for split in SPLITS:
        data = load_split(prepared_dir, split)
        assert manifest["split_sizes"][split] == len(data["label"])
        assert manifest["class_counts"][split] == np.bincount(
            data["label"], minlength=len(manifest["classes"])).tolist()
    assert manifest["grid"]["crs"] == "EPSG:32633"
    assert manifest["modalities"]["sar"]["bands"] == ["VV", "VH"]


def test_sar_features_are_decibels() -> None:
    np.testing.assert_allclose(to_features(np.array([[[1.0, 0.1, 0.01]]]), "sar"),
                               [[[0.0, -10.0, -20.0]]], atol=1e-5)


def copy_scene(scene_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scene_dir, tmp_path / "raw"))


def test_missing_scene_description_names_the_stage_to_run(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"scene\.json.*dvc repro ingest"):
        prepare_dataset(tmp_path, tmp_path / "out", SMALL_PREPARE)


def test_band_count_mismatch_names_the_file(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    scene = json.loads((raw / "scene.json").read_text())
    scene["modalities"]["sar"]["bands"] = ["VV"]
    (raw / "scene.json").write_text(json.dumps(scene))
    with pytest.raises(DatasetError, match=r"sar\.tif: 2 bands, scene\.json lists 1"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_unknown_label_codes_are_reported(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    scene = json.loads((raw / "scene.json").read_text())
    del scene["classes"]["6"]
    (raw / "scene.json").write_text(json.dumps(scene))
    with pytest.raises(DatasetError, match=r"labels\.tif: label codes \[6\] are not in the class map"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_corrupt_raster_is_reported_by_name(scene_dir: Path, tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    (raw / "optical.tif").write_bytes(b"II*\x00 this is not a GeoTIFF")
    with pytest.raises(DatasetError, match=r"optical\.tif: unreadable raster"):
        prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)


def test_an_empty_split_is_an_error(scene_dir: Path, tmp_path: Path) -> None:
    huge_blocks = PrepareParams(patch_size=7, stride=3, block_size=96)
    with pytest.raises(DatasetError, match="split has no patches.*block_size"):
        prepare_dataset(scene_dir, tmp_path / "out", huge_blocks)


def test_failed_run_leaves_previous_output_untouched(scene_dir: Path, prepared_dir: Path,
                                                     tmp_path: Path) -> None:
    out = Path(shutil.copytree(prepared_dir, tmp_path / "prepared"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    raw = copy_scene(scene_dir, tmp_path)
    (raw / "sar.tif").unlink()
    with pytest.raises(DatasetError, match=r"sar\.tif: raster not found"):
        prepare_dataset(raw, out, SMALL_PREPARE)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
