"""Sharding for data-parallel training: N processes see disjoint parts that cover the dataset."""
from __future__ import annotations

import numpy as np


def check_shard(shard_id: int, num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be in [0, num_shards) with num_shards >= 1; got "
                         f"shard_id={shard_id}, num_shards={num_shards}")


def shard_indices(n: int, shard_id: int, num_shards: int) -> np.ndarray:
    """The contiguous block of [0, n) that shard `shard_id` of `num_shards` reads (as DALI's
    readers split a dataset: sizes differ by at most one)."""
    check_shard(shard_id, num_shards)
    return np.arange(n * shard_id // num_shards, n * (shard_id + 1) // num_shards)
