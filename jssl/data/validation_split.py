"""A validation split carved from the training set, for choosing hyperparameters honestly.

``config.data.val_fraction`` > 0 holds out that share of every class of the
training split (stratified, drawn from ``config.data.val_seed``): training and
the evaluators' fit read the rest, and with ``config.eval.split="val"`` the
evaluation scores the held-out part instead of the test split. A setting chosen
by looking at results (SCAN's neighbour count, a temperature) is chosen there;
the test split is scored once, with the chosen setting.

The carve depends on the labels, the fraction and ``val_seed`` only, not on
``config.seed``: runs of several seeds are compared on the same held-out images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jssl.data.core import DataError, Dataset, Subset

SPLITS = ("test", "val")


def stratified_split(
    labels: np.ndarray, fraction: float, *, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), both sorted, of a stratified split of ``labels``.

    Each class c with n_c examples gives round(fraction * n_c) of them to the
    validation part (at least one when fraction > 0, and never all of them: one
    stays for training), drawn without replacement from ``seed``.

    Args:
      labels: int [N] class labels.
      fraction: share of each class held out, in (0, 1).
      seed: seed of the draw.
    """
    labels = np.asarray(labels)
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.val_fraction={fraction}: use a share in (0, 1), e.g. 0.1.")
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        held.append(rng.permutation(members)[:n_val])
    val = np.sort(np.concatenate(held)) if held else np.zeros((0,), np.int64)
    if len(val) == 0:
        raise DataError(
            f"data.val_fraction={fraction}: no class has two training examples to split; "
            "use a larger training set or --config.data.val_fraction=0."
        )
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def carve_validation(
    dataset: Dataset, fraction: float, *, seed: int, split: str = "test"
) -> Dataset:
    """``dataset`` with ``fraction`` of its training set held out (unchanged for 0).

    Returns a Dataset whose ``train`` is the rest of the training set and whose
    ``test`` is the held-out part when ``split`` is "val", else the test split.
    """
    if split not in SPLITS:
        raise DataError(f"eval.split={split!r}: use 'test' or 'val'.")
    if not fraction:
        if split == "val":
            raise DataError(
                "eval.split='val' needs a validation split: set --config.data.val_fraction "
                "(e.g. 0.1)."
            )
        return dataset
    train_idx, val_idx = stratified_split(dataset.train.labels, fraction, seed=seed)
    train = Subset(dataset.train, train_idx)
    test = Subset(dataset.train, val_idx) if split == "val" else dataset.test
    return dataclasses.replace(dataset, train=train, test=test)
