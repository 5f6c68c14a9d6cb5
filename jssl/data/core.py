"""In-memory dataset types and the user-facing data error."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from jssl.errors import UserError


class DataError(UserError):
    """A problem with the user's data or data options.

    Messages are one line: what is wrong and how to fix it.
    """


@dataclasses.dataclass(frozen=True)
class Split:
    """One split held in memory: uint8 images [N, H, W, C] and int32 labels [N]."""

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


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A labelled train/test pair of in-memory splits."""

    train: Split
    test: Split
    num_classes: int
    class_names: tuple[str, ...]
    name: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


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
