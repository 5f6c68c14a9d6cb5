"""The ImageSource interface, its in-memory implementation, and the user-facing data error."""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from jssl.errors import UserError


class DataError(UserError):
    """A problem with the user's data or data options.

    Messages are one line: what is wrong and how to fix it.
    """


@runtime_checkable
class ImageSource(Protocol):
    """Random access to one labelled split: the one way data reaches jssl.

    Everything that reads images (training batches, SeLa's relabelling pass,
    SCAN's mining and neighbour fetch, evaluation, pictures) calls ``get``;
    nothing outside jssl/data reads an implementation's storage. ``Split``
    holds the split in memory; a streamed source (ArrayRecord shards decoded
    on the host) implements the same four members.
    """

    @property
    def labels(self) -> np.ndarray:
        """int32 [N] labels (a diagnostic for unsupervised methods; evaluation uses them)."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image ``get`` returns."""

    def __len__(self) -> int: ...

    def get(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [b, H, W, C] images of ``indices`` [b] (any order, repeats allowed)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split held in memory, an ``ImageSource``: uint8 images [N, H, W, C], int32 labels [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"Split.images must be uint8 [N, H, W, C], got {self.images.dtype} "
                f"{self.images.shape}"
            )
        if self.labels.dtype != np.int32 or self.labels.shape != self.images.shape[:1]:
            raise DataError(
                f"Split.labels must be int32 [N] with N={self.images.shape[0]}, got "
                f"{self.labels.dtype} {self.labels.shape}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def get(self, indices) -> np.ndarray:
        return self.images[np.asarray(indices)]


@dataclasses.dataclass(frozen=True)
class Subset:
    """The examples ``indices`` [M] of ``source``, in that order, as an ``ImageSource``."""

    source: ImageSource
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.source.image_shape

    def get(self, indices) -> np.ndarray:
        return self.source.get(self.indices[np.asarray(indices)])

    @property
    def load(self):
        """``load(i)`` when ``source`` is streamed (has ``load``); AttributeError otherwise,
        so that a subset streams exactly when its source does."""
        return functools.partial(_load_of, self.source.load, self.indices)


def _load_of(load, indices: np.ndarray, index: int) -> np.ndarray:
    return load(indices[int(index)])


def take_subset(source: ImageSource, max_examples: int, *, seed: int) -> ImageSource:
    """At most ``max_examples`` examples of ``source``, drawn without replacement from ``seed``.

    The one way to cap a split (evaluation's training subset): the kept indices
    are sorted, and a cap of 0 or at least ``len(source)`` keeps everything.
    """
    n = len(source)
    if not max_examples or max_examples >= n:
        return source
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:max_examples])
    return Subset(source, keep)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled train/test pair of image sources."""

    train: ImageSource
    test: ImageSource
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return self.train.image_shape


def as_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Normalises an image size (int = square, or (height, width)) to (h, w)."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        try:
            h, w = (int(s) for s in image_size)
        except (TypeError, ValueError):
            raise DataError(
                f"image_size must be an int or (height, width), got {image_size!r}"
            ) from None
    if h <= 0 or w <= 0:
        raise DataError(f"image_size must be positive, got {image_size!r}")
    return h, w


def resize_array(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes one uint8 [H, W, C] image to size=(h, w) with Pillow bilinear filtering."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    channels = image.shape[2]
    if channels in (3, 4):
        out = Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.uint8)
    planes = [
        np.asarray(
            Image.fromarray(image[..., c]).resize((w, h), Image.Resampling.BILINEAR),
            dtype=np.uint8,
        )
        for c in range(channels)
    ]
    return np.stack(planes, axis=-1)
