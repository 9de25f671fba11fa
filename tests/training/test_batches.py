import numpy as np
import pytest

from pipeline.training.batches import epoch_batches, shard


def test_batches_are_full_disjoint_and_reproducible() -> None:
    batches = epoch_batches(100, 16, seed=3, epoch=0)
    assert len(batches) == 6 and all(len(b) == 16 for b in batches)
    flat = np.concatenate(batches)
    assert len(set(flat.tolist())) == len(flat)
    again = epoch_batches(100, 16, seed=3, epoch=0)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))


def test_each_epoch_has_its_own_order() -> None:
    assert not (epoch_batches(100, 16, 3, 0)[0] == epoch_batches(100, 16, 3, 1)[0]).all()


def test_shards_partition_the_global_batch() -> None:
    batch = np.arange(12)
    shards = [shard(batch, rank, 3) for rank in range(3)]
    assert sorted(np.concatenate(shards).tolist()) == batch.tolist()
    assert all(len(s) == 4 for s in shards)


def test_batch_larger_than_dataset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="train.batch_size"):
        epoch_batches(10, 16, 0, 0)
