"""Image-folder source: ``root/{train,test}/<class>/<image>``, decoded once and cached.

Every image is decoded with Pillow and converted to 8-bit RGB whatever its mode
(L, LA, P, RGBA, CMYK, 1, 16-bit I;16 and 32-bit I are scaled from the 16-bit
range to 8 bits). EXIF orientation is applied. If ``image_size`` is not given,
the size of the first training image (in sorted order) is used and every other
image is resized to it (bilinear), so mixed-size folders load without an error;
the number of resized images is logged.

Decoding runs in a thread pool (Pillow releases the GIL while decoding). The
decoded arrays are stored as one uncompressed ``.npz`` in the cache directory,
named by a hash of the file list (relative paths, sizes, mtimes) and the options,
so an unchanged folder loads from the cache without decoding, and any change
(file added, removed, rewritten) decodes again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import logging
from PIL import Image, ImageOps

from jssl import progress
from jssl.data.cache import cache_root, read_cache, write_cache
from jssl.data.core import DataError, Dataset, Split, resize_array

_CACHE_VERSION = 1
_CHUNK = 256  # files per thread-pool task
_LAYOUT = "expected layout: <path>/train/<class>/<image> and <path>/test/<class>/<image>"


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Converts a Pillow image of any mode to a uint8 [H, W, 3] RGB array."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer (e.g. 16-bit PNG) or float greyscale: Pillow's convert("L")
        # clips instead of scaling, so scale the 16-bit range to 8 bits here.
        gray = np.asarray(image, dtype=np.float64)
        if mode != "F":
            gray = np.clip(gray, 0, 65535) / 257.0
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if mode == "P":
        image = image.convert("RGBA")  # palette transparency, without Pillow's warning
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def decode_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decodes one file to uint8 [H, W, 3]; resized (bilinear) to size=(h, w) if given."""
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        array = to_rgb_array(image)
    return array if size is None else resize_array(array, size)


def _bad_image(path: str, err: Exception) -> DataError:
    reason = " ".join(str(err).split()) or type(err).__name__
    return DataError(
        f"cannot decode image file {path} ({reason}); fix: delete or replace that file, "
        "or pass on_bad_image='skip' to skip unreadable files"
    )


def list_split(root: Path, split: str) -> tuple[list[str], list[str], list[int], list[str]]:
    """Class names, file paths, labels and cache-key lines of one split.

    Sorted; hidden entries (names starting with '.') are ignored. A key line holds a
    file's relative path, size and mtime.
    """
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"image folder split directory {split_dir} does not exist; {_LAYOUT}")
    classes = sorted(
        e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith(".")
    )
    files: list[str] = []
    labels: list[int] = []
    key_lines: list[str] = []
    for label, name in enumerate(classes):
        entries = sorted(
            (e for e in os.scandir(split_dir / name) if e.is_file() and not e.name.startswith(".")),
            key=lambda e: e.name,
        )
        if not entries:  # counted as a class, it would skew k-means and the probe
            raise DataError(
                f"the class folder {split_dir / name} has no images; add its images or remove "
                "the folder (every class folder is a class)"
            )
        for e in entries:
            st = e.stat()
            files.append(e.path)
            key_lines.append(f"{split}/{name}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n")
        labels.extend([label] * len(entries))
    if not files:
        raise DataError(f"image folder split '{split}' has no images under {split_dir}; {_LAYOUT}")
    return classes, files, labels, key_lines


def _cache_key(key_lines: Sequence[str], size: tuple[int, int] | None, on_bad_image: str) -> str:
    """Content key: hash of the file list (paths, sizes, mtimes) and the options."""
    header = {"version": _CACHE_VERSION, "image_size": size, "on_bad_image": on_bad_image}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    digest.update("".join(key_lines).encode())
    return digest.hexdigest()


def _decode_all(
    files: Sequence[str],
    size: tuple[int, int],
    on_bad_image: str,
    workers: int | None,
    report: progress.Report = lambda done, total: None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes files in parallel into one array; returns (images, kept mask).
    ``report(done, total)`` as chunks of files are done."""
    out = np.empty((len(files), size[0], size[1], 3), np.uint8)
    kept = np.ones(len(files), bool)
    resized = np.zeros(len(files), bool)

    def work(start: int) -> None:
        for i in range(start, min(start + _CHUNK, len(files))):
            try:
                image = decode_image(files[i])
            except Exception as err:  # Pillow raises many types for bad files
                if on_bad_image == "fail":
                    raise _bad_image(files[i], err) from err
                kept[i] = False
                continue
            resized[i] = image.shape[:2] != size
            out[i] = resize_array(image, size)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        starts = range(0, len(files), _CHUNK)
        for start, _ in zip(starts, pool.map(work, starts), strict=True):
            report(min(start + _CHUNK, len(files)), len(files))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if resized.any():
        logging.info("resized %d of %d images to %dx%d", resized.sum(), len(files), *size)
    return out, kept


def _first_size(files: Sequence[str], on_bad_image: str) -> tuple[int, int]:
    for f in files:
        try:
            return decode_image(f).shape[:2]  # type: ignore[return-value]
        except Exception as err:
            if on_bad_image == "fail":
                raise _bad_image(f, err) from err
    raise DataError("no training image could be decoded; check the files in the image folder")


def load_image_folder(
    path: str | os.PathLike | None,
    *,
    image_size: tuple[int, int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    on_bad_image: str = "fail",
    num_workers: int | None = None,
    phase: progress.Phase = progress.silent,
) -> Dataset:
    """Loads ``path/train/<class>/*`` and ``path/test/<class>/*`` as uint8 RGB arrays.

    Labels index the sorted class folder names of ``train``; ``test`` must have the
    same class folders. See the module docstring for sizes, modes and caching.
    ``phase`` shows the decoding of each split (``jssl.progress``).
    """
    if path is None:
        raise DataError(f"the image_folder source needs path=...; {_LAYOUT}")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory; {_LAYOUT}")
    train_classes, train_files, train_labels, train_keys = list_split(root, "train")
    test_classes, test_files, test_labels, test_keys = list_split(root, "test")
    if test_classes != train_classes:
        missing = sorted(set(train_classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"image folder {root}: test class folders differ from train "
            f"(missing in test: {missing}, not in train: {extra}); use the same class "
            "folder names in both splits"
        )

    key = _cache_key(train_keys + test_keys, image_size, on_bad_image)
    cache_path = cache_root(cache_dir) / f"image_folder-{key}.npz"
    cached = read_cache(cache_path)
    if cached is not None:
        logging.info("loaded image folder %s from cache %s", root, cache_path)
    else:
        size = image_size or _first_size(train_files, on_bad_image)
        cached = {}
        skipped: list[str] = []
        for split, files, labels in (
            ("train", train_files, train_labels),
            ("test", test_files, test_labels),
        ):
            with phase(f"decoding the {split} images of {root}") as report:
                images, kept = _decode_all(files, size, on_bad_image, num_workers, report)
            if not kept.all():
                skipped.extend(f for f, k in zip(files, kept, strict=True) if not k)
                if not kept.any():
                    raise DataError(f"no image of split '{split}' in {root} could be decoded")
                images = images[kept]
            cached[f"{split}_images"] = images
            cached[f"{split}_labels"] = np.asarray(labels, np.int32)[kept]
        if skipped:
            logging.warning(
                "skipped %d unreadable image files in %s (on_bad_image='skip'), e.g. %s",
                len(skipped),
                root,
                ", ".join(str(f) for f in skipped[:3]),
            )
        cached["class_names"] = np.asarray(train_classes, dtype=np.str_)
        write_cache(cache_path, cached)
    return Dataset(
        train=Split(cached["train_images"], cached["train_labels"]),
        test=Split(cached["test_images"], cached["test_labels"]),
        num_classes=len(train_classes),
        class_names=tuple(train_classes),
        name=f"image_folder:{root.name}",
    )
