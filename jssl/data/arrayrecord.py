"""Streamed source: ArrayRecord shards of encoded images, read and decoded on demand.

``python -m jssl.data.prepare --source=DIR --out=OUT`` writes the layout read here::

    OUT/meta.json                          written last: a prepare run that did not finish
                                           has none, and reading it says so
    OUT/<split>/shard-NNNNN.array_record   one record per image: the file's encoded bytes
    OUT/<split>/labels.npy                 int32 [N], in record order

Only the labels (4 bytes an image) live in memory; ``get`` reads and decodes the
requested records, so a run's host memory is bounded by its prefetch buffers,
not by the data set's size.

Decoding: Pillow, any mode converted to 8-bit RGB as the image-folder source
does, EXIF orientation applied, then a bilinear resize of the whole image to
``image_size`` (aspect ratio not kept, exactly as the in-memory image folder).
JPEGs much larger than ``image_size`` are decoded at 1/2, 1/4 or 1/8 scale in
the DCT domain first (Pillow's ``draft``, never below the target size), which
is several times cheaper than a full decode. The random-resized crop then runs
on the device over the whole resized image, as for in-memory data: the host
only delivers fixed-size uint8 images, so one pipeline serves every method's
views. (Cropping on the host from the full-resolution image would keep a little
more detail in small crops; for the ImageNet presets' 224 px crops from
256 px images the difference is the resize before the crop.)
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from jssl.data.core import DataError, Dataset, resize_array
from jssl.data.image_folder import to_rgb_array

FORMAT = "jssl-arrayrecord/1"
META = "meta.json"
_PREPARE = "python -m jssl.data.prepare --source=DIR --out={out}"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.array_record"


def decode_encoded(data: bytes, size: tuple[int, int] | None, channels: int = 3) -> np.ndarray:
    """uint8 [h, w, channels] of one encoded image (``channels`` 3: RGB, 1: greyscale),
    resized (bilinear) to size=(h, w) if given.

    A JPEG at least twice the target size is first decoded at reduced scale in the
    DCT domain (never below the target in either side, whatever its EXIF rotation).
    """
    with Image.open(io.BytesIO(data)) as image:
        if size is not None and image.format == "JPEG":
            side = max(size)
            image.draft("RGB" if channels == 3 else "L", (side, side))
        image.load()
        image = ImageOps.exif_transpose(image)
        if channels == 1:
            array = np.asarray(image.convert("L"), dtype=np.uint8)[..., None]
        else:
            array = to_rgb_array(image)
    return array if size is None else resize_array(array, size)


def read_meta(root: Path) -> dict:
    """OUT/meta.json of a finished prepare run, checked; DataError naming the fix otherwise."""
    path = root / META
    if not root.is_dir():
        raise DataError(
            f"prepared data folder {root} does not exist; make it with {_PREPARE.format(out=root)}"
        )
    if not path.exists():
        raise DataError(
            f"{root} holds no finished prepared data (no {META}): the prepare run did not "
            f"finish or this is not its --out folder; rerun {_PREPARE.format(out=root)} (it "
            "resumes)"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path} ({err}); prepare the data again") from None
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{path} has format {meta.get('format')!r}, not {FORMAT!r}; prepare the data again "
            "with this jssl version"
        )
    return meta


class StreamedSource:
    """An ``ImageSource`` whose images are encoded records read on demand.

    Subclasses give ``records()`` (random access to the encoded records, opened
    lazily so that the source pickles into grain worker processes) and
    ``_blob(record)`` (the encoded image of one record), and the fields
    ``label_array``, ``size`` (h, w), ``channels``, ``num_threads`` and ``where``
    (named in errors).
    """

    label_array: np.ndarray
    size: tuple[int, int]
    channels: int
    num_threads: int
    where: str

    def records(self):
        raise NotImplementedError

    def _blob(self, record) -> bytes:
        return record

    def __getstate__(self):
        return {**self.__dict__, "_records": None}

    def __len__(self) -> int:
        return int(self.label_array.shape[0])

    @property
    def labels(self) -> np.ndarray:
        return self.label_array

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.size, self.channels)

    def load(self, index: int) -> np.ndarray:
        """uint8 [h, w, c] of example ``index``."""
        return self._decode(self._blob(self.records()[int(index)]), int(index))

    def _decode(self, data: bytes, index: int) -> np.ndarray:
        try:
            return decode_encoded(data, self.size, self.channels)
        except Exception as err:  # Pillow raises many types for bad data
            raise DataError(
                f"record {index} of {self.where} is not a decodable image "
                f"({' '.join(str(err).split())[:120] or type(err).__name__}); prepare the data "
                "again"
            ) from None

    def get(self, indices) -> np.ndarray:
        """uint8 [b, h, w, c], decoded by ``num_threads`` grain threads (Pillow frees the GIL)."""
        import grain

        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        out = np.empty((len(idx), *self.image_shape), np.uint8)
        if not idx:
            return out
        blobs = [self._blob(r) for r in self.records().__getitems__(idx)]
        threads = max(1, min(self.num_threads, len(idx)))
        decoded = (
            grain.MapDataset.source(list(zip(blobs, idx, strict=True)))
            .map(lambda pair: self._decode(*pair))
            .to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads))
        )
        for i, image in enumerate(decoded):
            out[i] = image
        return out


@dataclasses.dataclass(eq=False)
class ArrayRecordSource(StreamedSource):
    """One prepared split: labels in memory, images read from its shards on demand."""

    split_dir: str
    counts: tuple[int, ...]  # records per shard, as prepare wrote them
    label_array: np.ndarray
    size: tuple[int, int]
    num_threads: int = 8
    channels: int = 3

    def __post_init__(self) -> None:
        self._records = None

    @property
    def where(self) -> str:
        return self.split_dir

    def _paths(self) -> list[str]:
        return [os.path.join(self.split_dir, shard_name(i)) for i in range(len(self.counts))]

    def records(self):
        """grain's ArrayRecordDataSource over the shards, opened once, checked against meta."""
        if self._records is None:
            import grain

            paths = self._paths()
            for path in paths:
                if not os.path.exists(path):
                    raise DataError(
                        f"shard {path} is missing; prepare the data again into "
                        f"{os.path.dirname(self.split_dir)}"
                    )
            try:
                records = grain.sources.ArrayRecordDataSource(paths)
            except Exception as err:  # array_record raises RuntimeError/ValueError on bad files
                raise DataError(
                    f"cannot open the shards in {self.split_dir} "
                    f"({' '.join(str(err).split())[:200]}); a shard is truncated or corrupt: "
                    f"prepare the data again into {os.path.dirname(self.split_dir)}"
                ) from None
            if len(records) != sum(self.counts):
                raise DataError(
                    f"the shards in {self.split_dir} hold {len(records)} records, "
                    f"{META} says {sum(self.counts)}; a shard was truncated or replaced: prepare "
                    "the data again"
                )
            self._records = records
        return self._records


def open_split(root: Path, split: str, meta: dict, size, num_threads: int) -> ArrayRecordSource:
    info = meta["splits"].get(split)
    if info is None:
        raise DataError(
            f"prepared data {root} has no split {split!r} (it has {sorted(meta['splits'])}); "
            "set --config.data.train_split / --config.data.test_split to one of those"
        )
    split_dir = root / split
    try:
        labels = np.load(split_dir / "labels.npy", allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(
            f"cannot read {split_dir / 'labels.npy'} ({err}); prepare the data again"
        ) from None
    counts = tuple(int(c) for c in info["counts"])
    if labels.dtype != np.int32 or labels.shape != (sum(counts),):
        raise DataError(
            f"{split_dir / 'labels.npy'} holds {labels.dtype} {labels.shape}, not int32 "
            f"[{sum(counts)}]; prepare the data again"
        )
    if not len(labels):
        raise DataError(f"split {split!r} of {root} is empty; prepare it from a folder with images")
    return ArrayRecordSource(str(split_dir), counts, labels, size, num_threads)


def load_arrayrecord(
    path,
    *,
    image_size: tuple[int, int] | None = None,
    train_split: str = "train",
    test_split: str = "test",
    num_threads: int = 8,
) -> Dataset:
    """The prepared data in ``path`` as streamed train/test sources.

    ``image_size`` defaults to the size of the first training image (as the
    image-folder source); the ImageNet presets set it.
    """
    if not path:
        raise DataError(
            "the arrayrecord source needs --config.data.path=OUT, a folder made by "
            + _PREPARE.format(out="OUT")
        )
    root = Path(path).expanduser()
    meta = read_meta(root)
    train = open_split(root, train_split, meta, image_size, num_threads)
    if image_size is None:
        first = decode_encoded(train.records()[0], None)
        train = dataclasses.replace(train, size=tuple(first.shape[:2]))
    test = open_split(root, test_split, meta, train.size, num_threads)
    names = tuple(meta["class_names"])
    return Dataset(
        train=train,
        test=test,
        num_classes=len(names),
        class_names=names,
        name=f"arrayrecord:{root.name}",
    )
