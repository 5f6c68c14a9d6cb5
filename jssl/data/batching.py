"""Deterministic batching: the examples of training step s are a pure function of (seed, s).

Each epoch is a fresh permutation drawn from ``np.random.default_rng((seed, epoch))``;
the incomplete last batch of an epoch is dropped. Resuming at step s therefore
reads exactly the batches an uninterrupted run would have read, with no data
iterator state to checkpoint.
"""

from __future__ import annotations

import functools

import numpy as np

from jssl.data.core import DataError


def _check(name: str, value: int, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=4)
def _permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng((seed, epoch)).permutation(num_examples)
    perm.flags.writeable = False
    return perm


def epoch_permutation(num_examples: int, *, seed: int, epoch: int) -> np.ndarray:
    """The order of the examples in epoch ``epoch``: a permutation of range(num_examples)."""
    n = _check("num_examples", num_examples, 0)
    return _permutation(n, _check("seed", seed, 0), _check("epoch", epoch, 0)).copy()


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder is dropped)."""
    n = _check("num_examples", num_examples, 0)
    bs = _check("batch_size", batch_size, 1)
    if bs > n:
        raise DataError(
            f"batch_size {bs} is larger than the dataset ({n} examples); lower the batch size"
        )
    return n // bs


def batch_indices(num_examples: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
    """Example indices [batch_size] of the global batch for training step ``step`` (0-based)."""
    spe = steps_per_epoch(num_examples, batch_size)
    epoch, i = divmod(_check("step", step, 0), spe)
    perm = _permutation(int(num_examples), _check("seed", seed, 0), epoch)
    return perm[i * batch_size : (i + 1) * batch_size].copy()


def host_batch_indices(
    num_examples: int,
    batch_size: int,
    *,
    seed: int,
    step: int,
    process_index: int,
    process_count: int,
) -> np.ndarray:
    """This process's contiguous slice [batch_size // process_count] of the global batch."""
    count = _check("process_count", process_count, 1)
    index = _check("process_index", process_index, 0)
    if index >= count:
        raise DataError(f"process_index {index} must be < process_count {count}")
    if batch_size % count:
        raise DataError(
            f"global batch size {batch_size} is not divisible by the process count {count}; "
            "choose a batch size that is a multiple of it"
        )
    per = batch_size // count
    return batch_indices(num_examples, batch_size, seed=seed, step=step)[
        index * per : (index + 1) * per
    ]
