"""Deterministic batching: the examples of training step s are a pure function of (seed, s).

Each epoch is a fresh permutation drawn from ``np.random.default_rng((seed, epoch))``;
the incomplete last batch of an epoch is dropped. Resuming at step s therefore
reads exactly the batches an uninterrupted run would have read, with no data
iterator state to checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator

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


@dataclasses.dataclass(frozen=True)
class _Reader:
    """This process's slice of a step's batch, decoded; picklable for grain worker processes.

    ``element(j)``: example j % per of step j // per (per = the slice's size), so that
    grain's threads decode single images; ``batch(step)``: the whole slice, for worker
    processes (each decodes whole batches, so the batches do not depend on their number).
    """

    source: object
    batch_size: int
    seed: int
    process_index: int
    process_count: int

    @property
    def per(self) -> int:
        return self.batch_size // self.process_count

    def indices(self, step: int) -> np.ndarray:
        return host_batch_indices(
            len(self.source),
            self.batch_size,
            seed=self.seed,
            step=step,
            process_index=self.process_index,
            process_count=self.process_count,
        )

    def element(self, j: int) -> dict[str, np.ndarray]:
        step, pos = divmod(int(j), self.per)
        idx = self.indices(step)[pos]
        return {"image": self.source.load(idx), "index": np.int32(idx)}

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = self.indices(int(step))
        return {
            "image": np.stack([self.source.load(i) for i in idx]),
            "index": idx.astype(np.int32),
        }


def host_batches(
    source,
    batch_size: int,
    *,
    seed: int,
    start: int,
    stop: int,
    process_index: int = 0,
    process_count: int = 1,
    num_threads: int = 8,
    prefetch: int = 2,
    num_workers: int = 0,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(step, indices, images) of this process's slice of steps ``start .. stop - 1``.

    A source held in memory is read on the calling thread (a copy). A streamed
    source (one with ``load(index)``, e.g. ArrayRecord shards) goes through a
    grain pipeline: ``num_threads`` threads read and decode single images (and
    ``num_workers`` worker processes run that pipeline when > 0), with up to
    ``prefetch`` batches decoded ahead. Either way step s holds exactly
    ``host_batch_indices(..., step=s)``: the order is a function of (seed, step)
    alone, so a resumed run streams the same batches with no iterator state.
    """
    reader = _Reader(source, batch_size, seed, process_index, process_count)
    if getattr(source, "load", None) is None:
        for step in range(start, stop):
            idx = reader.indices(step)
            yield step, idx, source.get(idx)
        return
    import grain

    reader.indices(start)  # the checks (divisible batch, process index) before any thread starts
    if num_workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (a notebook, a test)
            flags.FLAGS.mark_as_parsed()
        read = grain.ReadOptions(
            num_threads=num_threads, prefetch_buffer_size=max(num_threads, prefetch)
        )
        it = (
            grain.MapDataset.range(start, stop)
            .map(reader.batch)
            .to_iter_dataset(read)
            .mp_prefetch(
                grain.MultiprocessingOptions(
                    num_workers=num_workers, per_worker_buffer_size=prefetch
                )
            )
        )
        copy = np.array  # out of grain's shared memory, which it reuses
    else:
        per = reader.per
        read = grain.ReadOptions(
            num_threads=num_threads, prefetch_buffer_size=max(1, prefetch) * per
        )
        it = (
            grain.MapDataset.range(start * per, stop * per)
            .map(reader.element)
            .to_iter_dataset(read)
            .batch(per, drop_remainder=True)
        )
        copy = np.asarray
    for step, batch in zip(range(start, stop), it, strict=True):
        yield step, copy(batch["index"]), copy(batch["image"])
