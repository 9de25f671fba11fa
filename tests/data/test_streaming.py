"""Training reads its split batch by batch from the memory-mapped store: same samples, less held."""

from pathlib import Path

import numpy as np
import torch

from pipeline.data.dataset import PreparedDataset, StreamingSplit
from pipeline.data.nodata import cut_patches
from pipeline.data.split_reader import cut_batch


def test_a_streamed_batch_equals_the_loaded_split(prepared_dir: Path) -> None:
    dataset = PreparedDataset.open(prepared_dir)
    whole, streamed = dataset.split("train"), dataset.stream("train")
    assert isinstance(streamed, StreamingSplit) and len(streamed) == len(whole)
    index = np.random.default_rng(0).permutation(len(whole))  # every sample, shuffled
    inputs, labels = streamed.batch(index)
    expected_inputs, expected_labels = whole.batch(index)
    assert torch.equal(labels, expected_labels)
    assert inputs.keys() == expected_inputs.keys()
    for name, x in inputs.items():
        torch.testing.assert_close(x, expected_inputs[name])


def test_a_worker_streams_only_the_modalities_it_owns(prepared_dir: Path) -> None:
    dataset = PreparedDataset.open(prepared_dir)
    first = list(dataset.channels)[0]
    inputs, labels = dataset.stream("train", [first]).batch(np.arange(8))
    assert list(inputs) == [first] and len(labels) == 8
    inputs, _ = dataset.stream("train", []).batch(np.arange(8))
    assert inputs == {}


def test_a_stream_holds_no_patch(prepared_dir: Path) -> None:
    streamed = PreparedDataset.open(prepared_dir).stream("train")
    assert isinstance(streamed, StreamingSplit)
    for array in streamed.scene.values():
        assert isinstance(array, np.memmap)  # the scene arrays stay on disk
    held = streamed.rows.nbytes + streamed.cols.nbytes + streamed.labels.nbytes
    assert held <= 24 * len(streamed)


def test_nodata_in_a_streamed_batch_is_filled_as_in_the_loaded_split() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(3, 40, 40)).astype(np.float32)
    invalid = rng.random((40, 40)) < 0.1
    rows, cols = rng.integers(2, 38, 30), rng.integers(2, 38, 30)
    np.testing.assert_array_equal(cut_batch(image, invalid, rows, cols, 5),
                                  cut_patches(image, invalid, rows, cols, 5))
