"""The validation split (config.data.val_fraction): carved from the training set, disjoint,
stratified, deterministic from data.val_seed, scored instead of the test split with
eval.split="val"."""

import re

import numpy as np
import pytest

from jssl import data
from jssl.data import DataError
from jssl.experiment import load_data
from jssl.validation import ConfigError, validate_config
from tests.helpers import tiny_config


def test_carve_is_disjoint_stratified_and_deterministic():
    labels = data.load_digits().train.labels
    train, val = data.stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.union1d(train, val), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    for c in np.unique(labels):
        n_c = int(np.sum(labels == c))
        assert int(np.sum(labels[val] == c)) == round(0.2 * n_c), c
    again = data.stratified_split(labels, 0.2, seed=0)
    np.testing.assert_array_equal(again[1], val)
    other = data.stratified_split(labels, 0.2, seed=1)
    assert not np.array_equal(other[1], val)
    assert len(other[1]) == len(val)  # the same share of every class, other examples


def test_tiny_classes_keep_a_training_example():
    labels = np.array([0, 0, 1, 1, 1, 2], np.int32)  # class 2 has one example: it trains
    train, val = data.stratified_split(labels, 0.5, seed=3)
    assert labels[val].tolist() == [0, 1, 1]  # round(0.5 * 2) = 1, round(0.5 * 3) = 2, 0
    assert 2 in labels[train] and set(labels[train]) == {0, 1, 2}
    with pytest.raises(DataError, match="no class has two training examples"):
        data.stratified_split(np.array([0, 1, 2], np.int32), 0.5, seed=0)


def test_load_data_scores_the_validation_split():
    full = load_data(tiny_config("simclr"))
    kept = load_data(tiny_config("simclr", **{"data.val_fraction": 0.1}))
    scored = load_data(tiny_config("simclr", **{"data.val_fraction": 0.1, "eval.split": "val"}))
    n = len(full.train)
    assert len(kept.train) == len(scored.train) < n
    assert len(kept.test) == len(full.test)  # eval.split="test": the test split, untouched
    assert len(scored.train) + len(scored.test) == n
    # The held-out images are training images that the carved training set lacks.
    images = full.train.get(np.arange(n)).reshape(n, -1)
    rows = {r.tobytes(): i for i, r in enumerate(images)}
    val_images = scored.test.get(np.arange(len(scored.test))).reshape(len(scored.test), -1)
    train_images = scored.train.get(np.arange(len(scored.train))).reshape(len(scored.train), -1)
    val_rows = {r.tobytes() for r in val_images}
    assert all(r.tobytes() in rows for r in val_images)
    assert not val_rows & {r.tobytes() for r in train_images}
    # Labels follow the images.
    idx = np.array([rows[r.tobytes()] for r in val_images])
    np.testing.assert_array_equal(scored.test.labels, full.train.labels[idx])


def test_val_without_a_fraction_is_a_config_error():
    msg = "eval.split='val': there is no validation split; set --config.data.val_fraction"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        validate_config(tiny_config("simclr", **{"eval.split": "val"}))
    with pytest.raises(ConfigError, match=re.escape("data.val_fraction=1.0: must be a finite")):
        validate_config(tiny_config("simclr", **{"data.val_fraction": 1.0}))
    with pytest.raises(ConfigError, match=re.escape("eval.split='dev': unknown eval.split")):
        validate_config(tiny_config("simclr", **{"eval.split": "dev"}))
