import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from pipeline.data.dataset import PreparedDataset
from pipeline.data.prepare import prepare_dataset
from pipeline.data.prepared_store import create_scene_arrays, dataset_fingerprint, open_scene_arrays
from pipeline.data.rasters import to_features
from pipeline.data.scene import SceneDescription
from pipeline.data.split import SPLITS, block_ids, block_split
from pipeline.data.split_reader import read_split
from pipeline.data.window_task import extract_window
from pipeline.data.windows import extract_patches
from pipeline.errors import DatasetError

from ..conftest import SMALL_PREPARE


def load_split(prepared_dir: Path, split: str) -> dict[str, np.ndarray]:
    """A split's arrays, patches cut at load time."""
    return read_split(prepared_dir, split)


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


def footprints(prepared_dir: Path, split: str, shape: tuple[int, int]) -> np.ndarray:
    """The pixels that the patches of ``split`` cover (inputs, nodata filling, label rule)."""
    data = load_split(prepared_dir, split)
    half = SMALL_PREPARE.patch_size // 2
    covered = np.zeros(shape, dtype=bool)
    for r, c in zip(data["row"], data["col"], strict=True):
        covered[r - half:r + half + 1, c - half:c + half + 1] = True
    return covered


@pytest.mark.parametrize("which", ["plain", "nodata"])
def test_no_pixel_is_shared_by_patches_of_two_splits(which: str, prepared_dir: Path,
                                                     nodata_prepared: Path) -> None:
    where = prepared_dir if which == "plain" else nodata_prepared
    covered = {split: footprints(where, split, (96, 96)) for split in SPLITS}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not (covered[a] & covered[b]).any(), (a, b)
    # nor does a patch reach into a block holding another split's centres
    block = SMALL_PREPARE.block_size
    for split in SPLITS:
        reached = set(zip(*(np.nonzero(covered[split])[i] // block for i in (0, 1)), strict=True))
        for other in set(SPLITS) - {split}:
            data = load_split(where, other)
            assert not reached & set(zip(data["row"] // block, data["col"] // block,
                                         strict=True)), (split, other)
    manifest = json.loads((where / "manifest.json").read_text())
    assert manifest["dropped_patches"]["guard_band"] > 0


def test_every_class_is_in_every_split(prepared_dir: Path) -> None:
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    for split in SPLITS:
        assert all(n > 0 for n in manifest["class_counts"][split]), split


def blocks_scene(rare_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres on a 10 x 10 grid of 16-pixel blocks, class 0 except ``rare_blocks`` of class 1."""
    rows, cols = np.meshgrid(np.arange(3, 157, 3), np.arange(3, 157, 3), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    labels = np.zeros(len(rows), dtype=np.int64)
    inside = (rows % 16 >= 3) & (rows % 16 <= 12) & (cols % 16 >= 3) & (cols % 16 <= 12)
    for b in range(rare_blocks):  # patches wholly inside blocks along the diagonal
        labels[(rows // 16 == b) & (cols // 16 == b) & inside] = 1
    return rows, cols, labels


@pytest.mark.parametrize("seed", range(5))
def test_block_split_puts_a_rare_class_in_every_split(seed: int, tmp_path: Path) -> None:
    rows, cols, labels = blocks_scene(rare_blocks=3)
    params = SMALL_PREPARE.model_copy(update={"seed": seed})
    split, keep = block_split(rows, cols, labels, ["common", "rare"], (160, 160), params,
                              tmp_path)
    assert sorted(set(split[keep & (labels == 1)].tolist())) == [0, 1, 2]
    # the blocks are dealt in the fractions of prepare.split
    per_block = {(r // 16, c // 16): s for r, c, s in zip(rows, cols, split, strict=True)}
    assert np.bincount(list(per_block.values())).tolist() == [60, 20, 20]


def test_block_split_names_a_class_too_rare_to_stratify(tmp_path: Path) -> None:
    rows, cols, labels = blocks_scene(rare_blocks=2)
    with pytest.raises(DatasetError, match=r"class 1 \(rare\) cannot be put in the train split: "
                                           r"\d+ patches, 2 of 100 blocks hold one"):
        block_split(rows, cols, labels, ["common", "rare"], (160, 160), SMALL_PREPARE, tmp_path)


def test_normalisation_standardises_the_training_inputs(prepared_dir: Path) -> None:
    # statistics of the training blocks' pixels, so close to, not exactly, the patches' own (the
    # guard band keeps patches off block edges: on this small scene of 16-pixel blocks a patch
    # sees the blocks' middles more than their edges)
    for name, inputs in PreparedDataset.open(prepared_dir).split("train").inputs.items():
        np.testing.assert_allclose(inputs.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=0.15,
                                   err_msg=name)
        np.testing.assert_allclose(inputs.std(dim=(0, 2, 3)).numpy(), 1.0, atol=0.15,
                                   err_msg=name)


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


def test_failed_run_leaves_previous_output_untouched(scene_dir: Path, prepared_dir: Path,
                                                     tmp_path: Path) -> None:
    out = Path(shutil.copytree(prepared_dir, tmp_path / "prepared"))
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    raw = copy_scene(scene_dir, tmp_path)
    scene = json.loads((raw / "scene.json").read_text())
    del scene["classes"]["6"]  # found by the window tasks, after they wrote the scene arrays
    (raw / "scene.json").write_text(json.dumps(scene))
    with pytest.raises(DatasetError, match=r"label codes \[6\] are not in the class map"):
        prepare_dataset(raw, out, SMALL_PREPARE.model_copy(update={"window_size": 32}))
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- windows, nodata, bad values, lineage --------------------------------------------------


def test_any_window_size_gives_the_whole_scene_extraction(scene_dir: Path, tmp_path: Path) -> None:
    whole = prepare_dataset(scene_dir, tmp_path / "whole", SMALL_PREPARE.model_copy(
        update={"window_size": 4096}))
    tiled = prepare_dataset(scene_dir, tmp_path / "tiled", SMALL_PREPARE.model_copy(
        update={"window_size": 20}))
    assert tiled["windows"] == 25 and whole["windows"] == 1
    for modality, stats in whole["normalisation"].items():  # blocks cut by windows add up
        for key in ("mean", "std"):
            np.testing.assert_allclose(tiled["normalisation"][modality][key], stats[key],
                                       rtol=1e-12)
    for split in SPLITS:
        a, b = load_split(tmp_path / "whole", split), load_split(tmp_path / "tiled", split)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert whole["fingerprint"] != tiled["fingerprint"]  # the manifest records the windows


@pytest.mark.slow
def test_spark_tasks_give_the_in_memory_extraction(scene_dir: Path, tmp_path: Path,
                                                   spark: object) -> None:
    params = SMALL_PREPARE.model_copy(update={"window_size": 32})
    local = prepare_dataset(scene_dir, tmp_path / "local", params)
    on_spark = prepare_dataset(scene_dir, tmp_path / "spark", params, spark)
    assert on_spark["fingerprint"] == local["fingerprint"]
    whole = SMALL_PREPARE.model_copy(update={"window_size": 4096})
    prepare_dataset(scene_dir, tmp_path / "whole", whole)
    for split in SPLITS:
        a, b = load_split(tmp_path / "whole", split), load_split(tmp_path / "spark", split)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_fingerprint_is_stable_and_recomputable(prepared_dir: Path, tmp_path: Path,
                                                scene_dir: Path) -> None:
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    assert dataset_fingerprint(prepared_dir) == manifest["fingerprint"]
    again = prepare_dataset(scene_dir, tmp_path / "again", SMALL_PREPARE)
    assert again["fingerprint"] == manifest["fingerprint"]
    assert PreparedDataset.open(prepared_dir).fingerprint == manifest["fingerprint"]


@pytest.mark.parametrize("tampered", ["split", "scene"])
def test_tampered_data_fails_the_fingerprint(tampered: str, prepared_dir: Path,
                                             tmp_path: Path) -> None:
    out = Path(shutil.copytree(prepared_dir, tmp_path / "prepared"))
    if tampered == "split":
        with np.load(out / "test.npz") as stored:
            data = dict(stored)
        data["label"][:5] = 0
        np.savez(out / "test.npz", **data)
    else:
        sar = np.load(out / "scene/sar.npy", mmap_mode="r+")
        sar[1, 50, 60] += 0.5  # one pixel of one band
        sar.flush()
    with pytest.raises(DatasetError, match="do not match the manifest's fingerprint"):
        dataset_fingerprint(out)


def test_preview_png_is_written(prepared_dir: Path) -> None:
    png = (prepared_dir / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_single_label_task_is_recorded(prepared_dir: Path) -> None:
    dataset = PreparedDataset.open(prepared_dir)
    assert dataset.task == "single_label"
    assert dataset.split("val").labels.dtype == torch.int64


def set_nodata(path: Path, rows: slice, cols: slice, value: float | None = None) -> None:
    with rasterio.open(path, "r+") as dst:
        data = dst.read()
        fill = dst.nodata if value is None else value
        data[:, rows, cols] = fill
        dst.write(data)


def test_patches_with_too_much_nodata_are_dropped_and_counted(scene_dir: Path,
                                                              tmp_path: Path) -> None:
    raw = copy_scene(scene_dir, tmp_path)
    set_nodata(raw / "optical.tif", slice(0, 30), slice(0, 30))  # optical nodata = 0
    manifest = prepare_dataset(raw, tmp_path / "out", SMALL_PREPARE)
    assert manifest["dropped_patches"]["nodata"] > 50
    for split in SPLITS:
        data = load_split(tmp_path / "out", split)
        inside = (data["row"] < 30 - 3 - 1) & (data["col"] < 30 - 3 - 1)
        assert not inside.any()  # patches fully under nodata are gone
        assert np.isfinite(data["optical"]).all()


def test_majority_label_rule(scene_dir: Path, tmp_path: Path) -> None:
    params = SMALL_PREPARE.model_copy(update={"label": "majority"})
    manifest = prepare_dataset(scene_dir, tmp_path / "out", params)
    with rasterio.open(scene_dir / "labels.tif") as src:
        labels = src.read(1)
    half = params.patch_size // 2
    data = load_split(tmp_path / "out", "train")
    for i in range(0, len(data["label"]), 53):
        r, c = data["row"][i], data["col"][i]
        window = labels[r - half:r + half + 1, c - half:c + half + 1]
        counts = np.bincount(window.ravel(), minlength=7)
        counts[0] = 0
        assert manifest["class_codes"][data["label"][i]] == int(np.argmax(counts))


# --- the scene layout: feature rasters stored once, patches cut at load time ----------------


@pytest.fixture(scope="module")
def nodata_prepared(scene_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small scene with an optical nodata square and a small SAR nodata block, prepared."""
    raw = copy_scene(scene_dir, tmp_path_factory.mktemp("nodata"))
    set_nodata(raw / "optical.tif", slice(10, 22), slice(10, 22))  # optical nodata = 0
    with rasterio.open(raw / "sar.tif", "r+") as dst:
        dst.nodata = -1.0
    set_nodata(raw / "sar.tif", slice(50, 52), slice(60, 62))
    prepare_dataset(raw, raw.parent / "prepared", SMALL_PREPARE)
    return raw.parent / "prepared"


def whole_scene_patches(raw: Path, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """Reference: patches cut from the whole scene, nodata pixels filled with the patch's mean."""
    features, invalid = {}, np.zeros((96, 96), dtype=bool)
    for name, kind in (("optical", "optical"), ("sar", "sar")):
        with rasterio.open(raw / f"{name}.tif") as src:
            data, nodata = src.read(), src.nodata
        valid = data != nodata if nodata is not None else np.ones(data.shape, dtype=bool)
        features[name] = to_features(np.where(valid, data, 1), kind)
        invalid |= ~valid.all(axis=0)
    mask = extract_patches(invalid, rows, cols, SMALL_PREPARE.patch_size)[:, None]
    out = {"dirty": mask.any(axis=(1, 2, 3))}
    for name, image in features.items():
        patches = extract_patches(image, rows, cols, SMALL_PREPARE.patch_size)
        mean = np.where(mask, 0, patches).sum(axis=(2, 3)) / np.maximum((~mask).sum(axis=(2, 3)), 1)
        out[name] = np.where(mask, mean[:, :, None, None], patches).astype(np.float32)
    return out


def test_split_files_hold_centres_not_patches(prepared_dir: Path) -> None:
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    assert manifest["layout"] == "scene"
    for split in SPLITS:
        with np.load(prepared_dir / f"{split}.npz") as data:
            assert sorted(data) == ["col", "label", "row"]
    optical = np.load(prepared_dir / "scene/optical.npy", mmap_mode="r")
    assert optical.shape == (4, 96, 96) and optical.dtype == np.float32
    assert np.load(prepared_dir / "scene/invalid.npy").shape == (96, 96)


def test_prepared_folder_is_smaller_than_twice_the_scene(scene_dir: Path,
                                                         prepared_dir: Path) -> None:
    scene_bytes = 0  # the scene's pixels, uncompressed, in their stored data types
    for path in scene_dir.glob("*.tif"):
        with rasterio.open(path) as src:
            scene_bytes += src.count * src.height * src.width * np.dtype(src.dtypes[0]).itemsize
    prepared_bytes = sum(p.stat().st_size for p in prepared_dir.rglob("*.np[yz]"))
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    # the patches found, those the guard band drops included: storing them would cost this
    patches = sum(manifest["split_sizes"].values()) + manifest["dropped_patches"]["guard_band"]
    patch_bytes = patches * (4 + 2) * SMALL_PREPARE.patch_size ** 2 * 4  # the patches, float32
    assert prepared_bytes < 2 * scene_bytes
    assert prepared_bytes < patch_bytes / 3


def test_patches_cut_at_load_time_equal_whole_scene_patches_with_nodata(
        nodata_prepared: Path) -> None:
    raw = nodata_prepared.parent / "raw"
    dirty = 0
    for split in SPLITS:
        data = load_split(nodata_prepared, split)
        expected = whole_scene_patches(raw, data["row"], data["col"])
        for name in ("optical", "sar"):
            np.testing.assert_array_equal(data[name], expected[name])
        dirty += int(expected["dirty"].sum())
    assert dirty > 10  # kept patches with nodata pixels to fill


@pytest.mark.parametrize("which", ["clean", "nodata"])
def test_normalisation_is_over_the_training_blocks_valid_pixels(which: str, prepared_dir: Path,
                                                               nodata_prepared: Path) -> None:
    root = prepared_dir if which == "clean" else nodata_prepared
    manifest = json.loads((root / "manifest.json").read_text())
    scene = open_scene_arrays(root, manifest)
    train = load_split(root, "train")
    block = SMALL_PREPARE.block_size
    rows, cols = np.indices(scene["invalid"].shape) // block
    in_train = np.zeros(rows.shape, dtype=bool)
    for r, c in set(zip(train["row"] // block, train["col"] // block, strict=True)):
        in_train |= (rows == r) & (cols == c)
    pixels = in_train & ~scene["invalid"]
    assert (which == "nodata") == (pixels.sum() < in_train.sum())
    assert in_train.sum() < 0.8 * in_train.size  # the validation and test blocks stay out
    for modality in ("optical", "sar"):
        values = scene[modality][:, pixels].astype(np.float64)
        np.testing.assert_allclose(manifest["normalisation"][modality]["mean"],
                                   values.mean(axis=1), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(manifest["normalisation"][modality]["std"],
                                   values.std(axis=1), rtol=1e-9)


def test_prepared_dataset_loads_both_layouts(prepared_dir: Path, tmp_path: Path) -> None:
    scene_layout = PreparedDataset.open(prepared_dir).split("val")
    patches = Path(shutil.copytree(prepared_dir, tmp_path / "patches"))
    manifest = json.loads((patches / "manifest.json").read_text())
    for split in SPLITS:
        np.savez(patches / f"{split}.npz", **load_split(prepared_dir, split))
    shutil.rmtree(patches / "scene")
    manifest["layout"] = "patches"
    (patches / "manifest.json").write_text(json.dumps(manifest))
    patch_layout = PreparedDataset.open(patches).split("val")
    for name in ("optical", "sar"):
        torch.testing.assert_close(scene_layout.inputs[name], patch_layout.inputs[name],
                                   rtol=0, atol=0)
    torch.testing.assert_close(scene_layout.labels, patch_layout.labels)


def test_missing_scene_file_names_the_stage_to_run(prepared_dir: Path, tmp_path: Path) -> None:
    out = Path(shutil.copytree(prepared_dir, tmp_path / "prepared"))
    (out / "scene/optical.npy").unlink()
    with pytest.raises(DatasetError,
                       match=r"scene/optical\.npy: prepared dataset file missing.*dvc repro"):
        PreparedDataset.open(out)


def test_window_tasks_write_the_scene_and_return_only_small_summaries(scene_dir: Path,
                                                                      tmp_path: Path) -> None:
    scene = SceneDescription.load(scene_dir)
    create_scene_arrays(tmp_path, {n: len(m.bands) for n, m in scene.modalities.items()},
                        (96, 96))
    result = extract_window(str(scene_dir), scene, SMALL_PREPARE, str(tmp_path), (0, 48, 48, 48))
    returned = sum(a.nbytes for a in [*(result[k] for k in ("code", "kept", "block", "pixels")),
                                      *result["sums"].values()])
    written = 48 * 48 * (4 + 2) * 4  # the window's features, float32
    assert len(result["code"]) > 100 and returned < written / 4
    with rasterio.open(scene_dir / "optical.tif") as src:
        optical = src.read(window=rasterio.windows.Window(48, 0, 48, 48))
    stored = np.load(tmp_path / "scene/optical.npy", mmap_mode="r")
    np.testing.assert_array_equal(stored[:, :48, 48:], to_features(optical, "optical"))
    assert not stored[:, 48:, :].any()  # only the task's own window


def test_a_split_names_each_patchs_block_for_the_intervals(prepared_dir: Path) -> None:
    test = PreparedDataset.open(prepared_dir).split("test")
    data = load_split(prepared_dir, "test")
    np.testing.assert_array_equal(test.groups, block_ids(data["row"], data["col"],
                                                         SMALL_PREPARE.block_size))
    assert 1 < len(np.unique(test.groups)) < len(test)
