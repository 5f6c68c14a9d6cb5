"""TFDS source: reads prepared ArrayRecord data with ``tfds.data_source`` (no TensorFlow).

Reading needs only ``tensorflow_datasets`` and ``array_record``. Preparing
(downloading and converting) a dataset needs TensorFlow for most builders: if
the dataset is not prepared in ``data_dir`` and TensorFlow is importable, it is
prepared here in ArrayRecord format; without TensorFlow a ``DataError`` says
how to install it and prepare the data once.

Images keep their stored channel count (e.g. 1 for MNIST, 3 for CIFAR-10). If
``image_size`` is not given and images differ in size, all are resized to the
size of the first training image.

``stream=True`` reads nothing into memory but the labels: each image is read
from the ArrayRecord files and decoded when a batch needs it (``TfdsStreamSource``,
the same decoding as ``jssl/data/arrayrecord.py``), for data sets larger than
memory such as ``imagenet2012``. The labels are read from every record once and
cached (``labels_cache_path``); later runs start without reading the records.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import logging

from jssl.data.arrayrecord import StreamedSource
from jssl.data.cache import default_cache_dir
from jssl.data.core import DataError, Dataset, Split, resize_array

_BATCH = 1024  # examples per __getitems__ call
# name[/config][:version]; no path separators beyond the one '/', no '.' or '..' parts, so a
# name can never point tfds outside its data_dir.
_NAME = re.compile(
    r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*)?(:(\d+|\*)(\.(\d+|\*)){0,2})?"
)


def _has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _prepare_hint(name: str, data_dir: str | os.PathLike | None) -> str:
    dd = f", data_dir={str(data_dir)!r}" if data_dir is not None else ""
    return (
        f'run `pip install -e ".[tfds]"` then `python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}'{dd}, file_format='array_record').download_and_prepare()\"`"
    )


def _read_split(
    source: Sequence[Any], split: str, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Reads every example's 'image' and 'label' of one data source."""
    n = len(source)
    if n == 0:
        raise DataError(f"tfds split '{split}' is empty; choose a split with examples")
    images: list[np.ndarray] = []
    labels = np.empty(n, np.int32)
    for start in range(0, n, _BATCH):
        keys = list(range(start, min(start + _BATCH, n)))
        for i, example in zip(keys, source.__getitems__(keys), strict=True):
            image = np.asarray(example["image"])
            if image.ndim == 2:
                image = image[..., None]
            images.append(image)
            labels[i] = int(example["label"])
    target = size or images[0].shape[:2]
    out = np.empty((n, target[0], target[1], images[0].shape[2]), np.uint8)
    for i, image in enumerate(images):
        if image.dtype != np.uint8 or image.shape[2] != out.shape[3]:
            raise DataError(
                f"tfds split '{split}' example {i} has image {image.dtype} {image.shape}; "
                "only uint8 images with one channel count are supported"
            )
        out[i] = resize_array(image, target)
    return out, labels


def _skip_image_decoding(builder, split: str):
    import tensorflow_datasets as tfds

    return builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})


@dataclasses.dataclass(eq=False)
class TfdsStreamSource(StreamedSource):
    """One prepared tfds split streamed: labels in memory, each image decoded on demand."""

    name: str
    data_dir: str | None
    split: str
    label_array: np.ndarray
    size: tuple[int, int]
    channels: int
    num_threads: int = 8

    def __post_init__(self) -> None:
        self._records = None

    @property
    def where(self) -> str:
        return f"tfds split {self.name}:{self.split}"

    def records(self):
        if self._records is None:
            import tensorflow_datasets as tfds

            builder = tfds.builder(self.name, data_dir=self.data_dir, file_format="array_record")
            self._records = _skip_image_decoding(builder, self.split)
        return self._records

    def _blob(self, record) -> bytes:
        return record["image"]


def labels_cache_path(builder, split: str) -> str:
    """Where the labels of a streamed split are cached: ``jssl.data.cache.default_cache_dir()``
    / tfds / name / version / a file named by the split and a digest of the prepared files
    (names, sizes, mtimes), so a dataset prepared again, or another split, never reads stale
    labels."""
    files = sorted(
        (f, st.st_size, st.st_mtime_ns)
        for f in os.listdir(builder.data_dir)
        for st in [os.stat(os.path.join(builder.data_dir, f))]
    )
    digest = hashlib.sha256(repr((split, files)).encode()).hexdigest()[:16]
    root = str(default_cache_dir())
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", split)
    return os.path.join(root, "tfds", builder.name, str(builder.version), f"{safe}-{digest}.npy")


def _cached_labels(builder, split: str, records) -> np.ndarray:
    """Every label of ``records``: from the cache when it holds this split's, else read once
    (all records: ImageNet's 1.28M records are ~140 GB of JPEG bytes to go through) and
    cached, written to a temporary name and renamed (a reader never sees part of one)."""
    n = len(records)
    path = labels_cache_path(builder, split)
    try:
        labels = np.load(path, allow_pickle=False)
        if labels.dtype == np.int32 and labels.shape == (n,):
            return labels
        logging.warning(
            "Ignoring %s: it holds %s %s labels, not %d.", path, labels.dtype, labels.shape, n
        )
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as err:  # truncated or not .npy: read again and replace it
        logging.warning("Ignoring the unreadable label cache %s (%s).", path, err)
    labels = np.empty(n, np.int32)
    for start in range(0, n, _BATCH):
        keys = list(range(start, min(start + _BATCH, n)))
        labels[start : start + len(keys)] = [int(r["label"]) for r in records.__getitems__(keys)]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npy"
        np.save(tmp, labels)
        os.replace(tmp, path)
    except OSError as err:  # a read-only home: stream without the cache
        logging.warning("Could not cache the labels in %s (%s).", path, err)
    return labels


def _stream_split(builder, name, data_dir, split, size, num_threads) -> TfdsStreamSource:
    """The split with its labels read (images skipped); size None: the first image's."""
    try:
        records = _skip_image_decoding(builder, split)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise DataError(
            f"cannot read split '{split}' of tfds dataset '{name}' "
            f"({' '.join(str(err).split())[:300]}); available splits: "
            f"{sorted(builder.info.splits)}"
        ) from None
    n = len(records)
    if n == 0:
        raise DataError(f"tfds split '{split}' is empty; choose a split with examples")
    labels = _cached_labels(builder, split, records)
    shape = builder.info.features["image"].shape
    channels = int(shape[-1]) if shape and shape[-1] else 3
    source = TfdsStreamSource(
        name,
        None if data_dir is None else str(data_dir),
        split,
        labels,
        size,
        channels,
        num_threads,
    )
    if size is None:
        from jssl.data.arrayrecord import decode_encoded

        first = decode_encoded(records[0]["image"], None, channels)
        source = dataclasses.replace(source, size=tuple(first.shape[:2]))
    return source


def load_tfds(
    tfds_name: str | None,
    *,
    train_split: str = "train",
    test_split: str = "test",
    data_dir: str | os.PathLike | None = None,
    image_size: tuple[int, int] | None = None,
    stream: bool = False,
    num_threads: int = 8,
) -> Dataset:
    """A prepared tfds dataset's 'image'/'label' features: in memory, or streamed."""
    if not tfds_name:
        raise DataError("the tfds source needs tfds_name=... (e.g. 'cifar10')")
    if not _NAME.fullmatch(tfds_name):
        raise DataError(
            f"invalid tfds dataset name {tfds_name!r}: use name[/config][:version] with letters, "
            "digits and '_' (e.g. 'cifar10', 'imagenet2012_subset/1pct:5.0.0'); put the "
            "directory in data_dir, not in the name"
        )
    import tensorflow_datasets as tfds  # slow import, only for this source

    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir, file_format="array_record")
    except (tfds.core.DatasetNotFoundError, ValueError, KeyError) as err:
        close = difflib.get_close_matches(
            tfds_name.split("/")[0].split(":")[0],
            tfds.list_builders(with_community_datasets=False),
            n=3,
        )
        reason = " ".join(str(err).split())[:200]
        raise DataError(
            f"unknown tfds dataset '{tfds_name}' (not in the tfds catalog nor prepared in "
            f"data_dir={data_dir}: {reason}); close names: {close}"
        ) from None
    if not builder.is_prepared():
        if not _has_tensorflow():
            raise DataError(
                f"tfds dataset '{tfds_name}' is not prepared in {builder.data_dir} and "
                f"preparing it needs TensorFlow: {_prepare_hint(tfds_name, data_dir)}"
            )
        logging.info("preparing tfds dataset %s in %s", tfds_name, builder.data_dir)
        builder.download_and_prepare()
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"tfds dataset '{tfds_name}' has features {sorted(features)}, not 'image' and "
            "'label'; use a labelled image dataset"
        )
    label = features["label"]
    names = tuple(label.names) if hasattr(label, "names") else ()
    if stream:
        train = _stream_split(builder, tfds_name, data_dir, train_split, image_size, num_threads)
        test = _stream_split(builder, tfds_name, data_dir, test_split, train.size, num_threads)
        num_classes = int(getattr(label, "num_classes", 0)) or int(train.labels.max()) + 1
        return Dataset(
            train=train,
            test=test,
            num_classes=num_classes,
            class_names=names or tuple(str(i) for i in range(num_classes)),
            name=f"tfds:{tfds_name}",
        )
    try:
        sources = builder.as_data_source(split=[train_split, test_split])
    except (ValueError, KeyError, NotImplementedError) as err:
        raise DataError(
            f"cannot read splits '{train_split}'/'{test_split}' of tfds dataset '{tfds_name}' "
            f"({' '.join(str(err).split())[:300]}); available splits: "
            f"{sorted(builder.info.splits)}; the data must be prepared with "
            "file_format='array_record'"
        ) from None
    train_images, train_labels = _read_split(sources[0], train_split, image_size)
    size = image_size or train_images.shape[1:3]
    test_images, test_labels = _read_split(sources[1], test_split, size)
    num_classes = int(getattr(label, "num_classes", 0)) or int(train_labels.max()) + 1
    return Dataset(
        train=Split(train_images, train_labels),
        test=Split(test_images, test_labels),
        num_classes=num_classes,
        class_names=names or tuple(str(i) for i in range(num_classes)),
        name=f"tfds:{tfds_name}",
    )
