"""The SOURCES registry and ``load_dataset``, the one entry point for in-memory data."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from jssl import progress
from jssl.data.arrayrecord import load_arrayrecord
from jssl.data.cache import cache_root, read_cache, write_cache
from jssl.data.core import DataError, Dataset, Split, as_hw, resize_array
from jssl.data.image_folder import load_image_folder
from jssl.data.tfds_source import load_tfds


def load_digits(
    *, image_size: tuple[int, int] | None = None, seed: int = 0, cache_dir: Any = None, **_: Any
) -> Dataset:
    """scikit-learn's 1,797 8x8 handwritten digits as uint8 [N, 8, 8, 1].

    Pixel values 0..16 become round(v * 255 / 16). The split is stratified 80/20
    (``train_test_split(stratify=labels, random_state=seed, test_size=0.2)``);
    seed 0 gives the reference split: 1,437 train and 360 test images. The split
    arrays are cached in ``cache_dir`` (default ``jssl.data.cache.default_cache_dir()``),
    keyed by the seed, the size and scikit-learn's version, so that later runs skip
    importing scikit-learn (1.2 s).
    """
    size = "x".join(map(str, image_size)) if image_size is not None else "native"
    version = importlib.metadata.version("scikit-learn")
    path = cache_root(cache_dir) / f"digits-seed{seed}-{size}-sklearn{version}.npz"
    arrays = read_cache(path)
    if arrays is None:
        arrays = _split_digits(image_size, seed)
        write_cache(path, arrays)
    return Dataset(
        train=Split(arrays["train_images"], arrays["train_labels"]),
        test=Split(arrays["test_images"], arrays["test_labels"]),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        name="digits",
    )


def _split_digits(image_size: tuple[int, int] | None, seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    digits = sk_load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int32)
    if image_size is not None:
        images = np.stack([resize_array(im, image_size) for im in images])
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    return {
        "train_images": x_train,
        "train_labels": y_train,
        "test_images": x_test,
        "test_labels": y_test,
    }


def _image_folder(
    *, path: Any, image_size: Any, cache_dir: Any, on_bad_image: str, phase: Any, **_: Any
) -> Dataset:
    return load_image_folder(
        path, image_size=image_size, cache_dir=cache_dir, on_bad_image=on_bad_image, phase=phase
    )


def _tfds(
    *,
    tfds_name: str | None,
    train_split: str,
    test_split: str,
    data_dir: Any,
    image_size: Any,
    stream: bool,
    num_threads: int,
    **_: Any,
) -> Dataset:
    return load_tfds(
        tfds_name,
        train_split=train_split,
        test_split=test_split,
        data_dir=data_dir,
        image_size=image_size,
        stream=stream,
        num_threads=num_threads,
    )


def _arrayrecord(
    *, path: Any, image_size: Any, train_split: str, test_split: str, num_threads: int, **_: Any
) -> Dataset:
    return load_arrayrecord(
        path,
        image_size=image_size,
        train_split=train_split,
        test_split=test_split,
        num_threads=num_threads,
    )


# name -> loader(**options) -> Dataset. Loaders take every load_dataset option by
# keyword and ignore the ones that do not apply to them.
SOURCES: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "image_folder": _image_folder,
    "tfds": _tfds,
    "arrayrecord": _arrayrecord,
}


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    image_size: int | tuple[int, int] | None = None,
    tfds_name: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    on_bad_image: str = "fail",
    seed: int = 0,
    num_threads: int = 8,
    stream: bool = False,
    phase: progress.Phase = progress.silent,
) -> Dataset:
    """Loads a labelled train/test dataset: into memory as uint8 arrays, or streamed.

    Args:
      name: a key of SOURCES: "digits", "image_folder", "tfds" (all in memory) or
        "arrayrecord" (streamed from the shards of ``python -m jssl.data.prepare``).
      path: image_folder root holding train/<class>/* and test/<class>/*; for
        "arrayrecord" the prepared folder.
      image_size: int or (height, width); images are resized (bilinear) to it.
      tfds_name: tfds dataset name, e.g. "cifar10" (source "tfds").
      train_split, test_split: tfds split names (source "tfds").
      data_dir: tfds data directory (default: tfds's own).
      cache_dir: where decoded image folders and the digits split are cached (default
        ``jssl.data.cache.default_cache_dir()``).
      on_bad_image: "fail" (raise DataError naming the file) or "skip" (skip and log
        the count).
      seed: digits train/test split seed (0 is the reference split).
      num_threads: decoding threads of a streamed source's ``get``.
      stream: source "tfds": stream the prepared files instead of loading them.
      phase: shows long loading phases (an image folder's first decoding; jssl.progress).

    Raises:
      DataError: for any problem with the data or these options.
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset source '{name}'; known sources: {sorted(SOURCES)}")
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    return SOURCES[name](
        path=path,
        image_size=as_hw(image_size),
        tfds_name=tfds_name,
        train_split=train_split,
        test_split=test_split,
        data_dir=data_dir,
        cache_dir=cache_dir,
        on_bad_image=on_bad_image,
        seed=seed,
        num_threads=num_threads,
        stream=stream,
        phase=phase,
    )
