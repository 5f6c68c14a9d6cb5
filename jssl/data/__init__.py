"""Data: sources loaded into memory as uint8 arrays, and deterministic batching.

Usage::

    ds = load_dataset("digits")                       # sklearn digits, 8x8x1
    ds = load_dataset("image_folder", path="...")     # root/{train,test}/<class>/*
    ds = load_dataset("tfds", tfds_name="cifar10")    # prepared ArrayRecord data
    idx = batch_indices(len(ds.train), 256, seed=0, step=step)
"""

from jssl.data.batching import (
    batch_indices,
    epoch_permutation,
    host_batch_indices,
    host_batches,
    steps_per_epoch,
)
from jssl.data.cache import default_cache_dir
from jssl.data.core import DataError, Dataset, ImageSource, Split, Subset, take_subset
from jssl.data.image_folder import load_image_folder
from jssl.data.sources import SOURCES, load_dataset, load_digits
from jssl.data.tfds_source import load_tfds
from jssl.data.validation_split import carve_validation, stratified_split

__all__ = [
    "SOURCES",
    "DataError",
    "Dataset",
    "ImageSource",
    "Split",
    "Subset",
    "batch_indices",
    "carve_validation",
    "default_cache_dir",
    "epoch_permutation",
    "host_batch_indices",
    "host_batches",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_tfds",
    "steps_per_epoch",
    "stratified_split",
    "take_subset",
]
