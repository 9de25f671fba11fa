"""The order in which samples are seen: one global batch plan shared by every worker.

Every scheme draws the same global batches from the same seed; data parallelism hands each worker
an equal, disjoint share of each global batch. That is what makes N workers compute the same
update as one process with the same global batch.
"""

from __future__ import annotations

import numpy as np


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled global batches of exactly ``batch_size`` indices (the remainder is dropped)."""
    if batch_size > num_samples:
        raise ValueError(
            f"train.batch_size ({batch_size}) is larger than the training split "
            f"({num_samples} samples); lower train.batch_size"
        )
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    full = num_samples // batch_size
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(full)]


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Worker ``rank``'s share of a global batch (strided, so shares differ by at most one)."""
    return batch[rank::world_size]
