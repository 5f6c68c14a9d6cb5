"""Tests for jssl.data: sources on real files, caching, errors and deterministic batching."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jssl.data.image_folder as image_folder_lib
from jssl.data import (
    SOURCES,
    DataError,
    Dataset,
    batch_indices,
    epoch_permutation,
    host_batch_indices,
    load_dataset,
    steps_per_epoch,
)
from tests.helpers import ROOT

SHARED_DATASETS = Path(ROOT).resolve().parent / "shared" / "datasets"
CIFAR_TAR = SHARED_DATASETS / "cifar10-jpeg.tar.gz"


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_stratified_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.train.images.shape == (1437, 8, 8, 1) and ds.test.images.shape == (360, 8, 8, 1)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int32
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")
    assert ds.train.images.min() == 0 and ds.train.images.max() == 255
    # Same split and pixel mapping as the reference recipe.
    raw = load_digits()
    _, x_test, _, y_test = train_test_split(
        raw.images, raw.target, test_size=0.2, stratify=raw.target, random_state=0
    )
    np.testing.assert_array_equal(ds.test.labels, y_test)
    np.testing.assert_array_equal(ds.test.images[..., 0], np.rint(x_test * 255 / 16))
    # Stratified: every class has ~20% of its images in the test split.
    total = np.bincount(raw.target, minlength=10)
    assert np.all(np.abs(np.bincount(ds.test.labels, minlength=10) - 0.2 * total) <= 1)


def test_digits_resize():
    ds = load_dataset("digits", image_size=16)
    assert ds.train.images.shape == (1437, 16, 16, 1) and ds.train.images.dtype == np.uint8


def test_digits_load_again_from_the_cache_without_importing_scikit_learn(tmp_path):
    first = load_dataset("digits", image_size=16, seed=3, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("digits-seed3-16x16-sklearn*.npz")
    code = (
        "import sys; import numpy as np; from jssl.data import load_dataset; "
        "d = load_dataset('digits', image_size=16, seed=3, cache_dir=sys.argv[1]); "
        "assert 'sklearn' not in sys.modules; np.save(sys.argv[2], d.train.images[::7])"
    )
    out = tmp_path / "again.npy"
    subprocess.run([sys.executable, "-c", code, tmp_path, out], cwd=ROOT, check=True)
    np.testing.assert_array_equal(np.load(out), first.train.images[::7])
    cached.write_bytes(b"truncated")  # an unreadable cache is rebuilt
    again = load_dataset("digits", image_size=16, seed=3, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.test.labels, first.test.labels)


def test_cache_dir_order(monkeypatch, tmp_path):
    from jssl.data import default_cache_dir

    monkeypatch.setenv("JSSL_CACHE_DIR", str(tmp_path / "j"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "j"
    monkeypatch.delenv("JSSL_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "x" / "jssl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "jssl"


def test_unknown_source_and_bad_option():
    with pytest.raises(DataError, match="known sources.*arrayrecord.*digits.*image_folder.*tfds"):
        load_dataset("cifar100")
    with pytest.raises(DataError, match="on_bad_image"):
        load_dataset("digits", on_bad_image="ignore")
    assert set(SOURCES) == {"digits", "image_folder", "tfds", "arrayrecord"}


# ----------------------------------------------------------------------- image folder


def _save(path: Path, image: Image.Image, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)


def _make_folder(root: Path) -> None:
    """3 classes (created unsorted), mixed modes, formats and sizes; first train image 10x12."""
    rgb = Image.fromarray(np.full((10, 12, 3), (200, 100, 50), np.uint8))
    _save(root / "train" / "dog" / "a.png", rgb, "PNG")
    _save(root / "train" / "dog" / "b.jpg", rgb.resize((20, 14)), "JPEG")
    _save(root / "train" / "bird" / "a.png", rgb, "PNG")  # first in sorted order
    _save(root / "train" / "bird" / "gray.png", Image.new("L", (12, 10), 77), "PNG")
    _save(root / "train" / "bird" / "rgba.png", Image.new("RGBA", (12, 10), (10, 20, 30, 9)), "PNG")
    for name, value in (("i16.png", 32896), ("i16max.png", 65535)):
        _save(
            root / "train" / "cat" / name,
            Image.fromarray(np.full((10, 12), value, np.uint16)),
            "PNG",
        )
    _save(
        root / "train" / "cat" / "pal.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"
    )
    _save(root / "train" / "cat" / "cmyk.jpg", Image.new("CMYK", (7, 9), (0, 0, 0, 0)), "JPEG")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"hidden files are ignored")
    for name in ("bird", "cat", "dog"):
        _save(root / "test" / name / "t.png", Image.new("L", (5, 5), 1), "PNG")


def test_image_folder_modes_sizes_and_labels(tmp_path):
    _make_folder(tmp_path / "imgs")
    ds = load_dataset("image_folder", path=tmp_path / "imgs", cache_dir=tmp_path / "cache")
    assert ds.class_names == ("bird", "cat", "dog") and ds.num_classes == 3
    # Sorted class folders, then sorted file names.
    np.testing.assert_array_equal(ds.train.labels, [0, 0, 0, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.test.labels, [0, 1, 2])
    # No image_size: everything is resized to the first training image (10x12).
    assert ds.train.images.shape == (9, 10, 12, 3) and ds.test.images.shape == (3, 10, 12, 3)
    assert ds.train.images.dtype == np.uint8
    x = ds.train.images
    np.testing.assert_array_equal(x[0], np.full((10, 12, 3), (200, 100, 50)))  # bird/a.png
    np.testing.assert_array_equal(x[1], 77)  # L -> RGB
    np.testing.assert_array_equal(x[2], np.full((10, 12, 3), (10, 20, 30)))  # RGBA -> RGB
    np.testing.assert_array_equal(x[4], 128)  # 16-bit 32896 = 128 * 257
    np.testing.assert_array_equal(x[5], 255)  # 16-bit 65535
    np.testing.assert_array_equal(x[6], np.full((10, 12, 3), (200, 100, 50)))  # palette
    assert x[3].min() >= 250  # CMYK (0, 0, 0, 0) is white, resized from 7x9
    assert np.abs(x[8].astype(int) - (200, 100, 50)).max() <= 12  # JPEG, resized from 14x20
    assert ds.name == "image_folder:imgs"

    sized = load_dataset(
        "image_folder", path=tmp_path / "imgs", image_size=(6, 7), cache_dir=tmp_path / "cache"
    )
    assert sized.train.images.shape == (9, 6, 7, 3) and sized.test.images.shape == (3, 6, 7, 3)


def test_image_folder_corrupt_files_fail_naming_the_file(tmp_path):
    _make_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "x.jpg"
    bad.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(DataError, match=r"x\.jpg.*on_bad_image='skip'"):
        load_dataset("image_folder", path=tmp_path, cache_dir=tmp_path / "cache")
    bad.unlink()
    good = tmp_path / "train" / "dog" / "b.jpg"
    truncated = tmp_path / "train" / "dog" / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"trunc\.jpg"):
        load_dataset("image_folder", path=tmp_path, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing cached on failure


def test_image_folder_skip_mode_counts(tmp_path, caplog):
    _make_folder(tmp_path)
    (tmp_path / "train" / "dog" / "x.jpg").write_bytes(b"not an image")
    (tmp_path / "test" / "cat" / "notes.txt").write_text("not an image either")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset(
            "image_folder", path=tmp_path, cache_dir=tmp_path / "cache", on_bad_image="skip"
        )
    assert len(ds.train) == 9 and len(ds.test) == 3
    assert "skipped 2 unreadable image files" in caplog.text
    assert "x.jpg" in caplog.text and "notes.txt" in caplog.text


def test_image_folder_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}.*expected layout"):
        load_dataset("image_folder", path=tmp_path / "nope")
    with pytest.raises(DataError, match="needs path"):
        load_dataset("image_folder")
    _save(tmp_path / "train" / "a" / "x.png", Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(DataError, match="test.*does not exist"):
        load_dataset("image_folder", path=tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="split 'test' has no images"):
        load_dataset("image_folder", path=tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "test" / "a").mkdir()  # an empty class folder is not a class
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'test' / 'a'} has no images"):
        load_dataset("image_folder", path=tmp_path, cache_dir=tmp_path / "cache")
    _save(tmp_path / "test" / "a" / "x.png", Image.new("RGB", (4, 4)), "PNG")
    _save(tmp_path / "test" / "b" / "x.png", Image.new("RGB", (4, 4)), "PNG")
    with pytest.raises(DataError, match=r"not in train: \['b'\]"):
        load_dataset("image_folder", path=tmp_path, cache_dir=tmp_path / "cache")


def test_image_folder_cache_hit_and_invalidation(tmp_path, monkeypatch):
    _make_folder(tmp_path / "imgs")
    calls = []
    real_decode = image_folder_lib.decode_image

    def counting_decode(path, size=None):
        calls.append(path)
        return real_decode(path, size)

    monkeypatch.setattr(image_folder_lib, "decode_image", counting_decode)
    kwargs = dict(path=tmp_path / "imgs", cache_dir=tmp_path / "cache")
    phases = []

    @contextlib.contextmanager
    def phase(name):  # records each phase's reports
        phases.append((name, []))
        yield lambda done, total: phases[-1][1].append((done, total))

    first = load_dataset("image_folder", **kwargs, phase=phase)
    assert len(calls) > 0
    # The first load shows each split's decoding up to its last image.
    assert [name.split(" of ")[0] for name, _ in phases] == [
        "decoding the train images",
        "decoding the test images",
    ]
    assert [reports[-1] for _, reports in phases] == [
        (len(first.train),) * 2,
        (len(first.test),) * 2,
    ]
    cache_files = list((tmp_path / "cache").iterdir())
    assert len(cache_files) == 1 and cache_files[0].suffix == ".npz"

    calls.clear()
    second = load_dataset("image_folder", **kwargs, phase=phase)
    assert calls == [] and len(phases) == 2  # served from the cache, nothing decoded
    for a, b in [(first.train, second.train), (first.test, second.test)]:
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert second.class_names == first.class_names

    # JSSL_CACHE_DIR is the default cache location.
    monkeypatch.setenv("JSSL_CACHE_DIR", str(tmp_path / "cache"))
    load_dataset("image_folder", path=tmp_path / "imgs")
    assert calls == []

    # A changed file (new size and mtime) is a cache miss.
    _save(tmp_path / "imgs" / "test" / "dog" / "t.png", Image.new("L", (5, 5), 200), "PNG")
    os.utime(tmp_path / "imgs" / "test" / "dog" / "t.png", ns=(1, 1))
    third = load_dataset("image_folder", **kwargs)
    assert len(calls) > 0
    np.testing.assert_array_equal(third.test.images[2], 200)


def test_image_folder_unreadable_cache_is_rebuilt(tmp_path):
    _make_folder(tmp_path / "imgs")
    kwargs = dict(path=tmp_path / "imgs", cache_dir=tmp_path / "cache")
    first = load_dataset("image_folder", **kwargs)
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_bytes(b"garbage")
    again = load_dataset("image_folder", **kwargs)
    np.testing.assert_array_equal(first.train.images, again.train.images)


@pytest.mark.skipif(not CIFAR_TAR.exists(), reason=f"{CIFAR_TAR} not present")
def test_image_folder_on_cifar10_jpeg_sample(tmp_path):
    """A few hundred real CIFAR-10 JPEGs (the first 20 per class and split)."""
    with tarfile.open(CIFAR_TAR, "r:gz") as tar:
        members = [
            m for m in tar if m.isfile() and m.name.count("/") == 2 and int(Path(m.name).stem) < 20
        ]
        tar.extractall(tmp_path / "cifar", members=members, filter="data")
    ds = load_dataset("image_folder", path=tmp_path / "cifar", cache_dir=tmp_path / "cache")
    assert ds.class_names == (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    )  # fmt: skip
    assert ds.train.images.shape == (200, 32, 32, 3) and ds.test.images.shape == (200, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(ds.train.labels), [20] * 10)
    assert 60 < ds.train.images.mean() < 200


# ------------------------------------------------------------------------------- tfds


@pytest.fixture(scope="module")
def tiny_tfds_dir(tmp_path_factory) -> Path:
    """A real tfds dataset in ArrayRecord format, prepared without TensorFlow.

    (`tfds.testing.mock_data` cannot be used: in tfds 4.9.10 its mocked data source's
    `__getitems__` is an unbound partial and raises TypeError.) The builder is not
    registered, so loading it exercises tfds's read-from-files path.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")

    with tfds.core.registered.skip_registration():

        class JsslTinyImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self,
                    features=tfds.features.FeaturesDict(
                        {
                            "image": tfds.features.Image(shape=(6, 5, 3)),
                            "label": tfds.features.ClassLabel(names=["ant", "bee", "cow"]),
                        }
                    ),
                )

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(9), "test": self._generate_examples(4)}

            def _generate_examples(self, n):
                for i in range(n):
                    pixels = np.full((6, 5, 3), 10 * i, np.uint8)
                    yield i, {"image": Image.fromarray(pixels), "label": i % 3}

        JsslTinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_streamed_reads_as_tfds_in_memory(tiny_tfds_dir):
    kw = dict(tfds_name="jssl_tiny_images", data_dir=tiny_tfds_dir)
    for size in (None, 4):
        memory = load_dataset("tfds", image_size=size, **kw)
        streamed = load_dataset("tfds", image_size=size, stream=True, num_threads=2, **kw)
        assert streamed.class_names == memory.class_names and streamed.name == memory.name
        for s, m in ((streamed.train, memory.train), (streamed.test, memory.test)):
            assert not hasattr(m, "load") and hasattr(s, "load")  # in memory / streamed
            assert s.image_shape == m.image_shape
            np.testing.assert_array_equal(s.labels, m.labels)
            np.testing.assert_array_equal(s.get(np.arange(len(s))), m.images)
            np.testing.assert_array_equal(s.load(2), m.images[2])
    with pytest.raises(DataError, match="available splits"):
        load_dataset("tfds", stream=True, test_split="val", **kw)


def test_tfds_streamed_labels_are_read_once_then_cached(tiny_tfds_dir, tmp_path, monkeypatch):
    """The labels of a streamed split come from the cache after the first load; a broken
    cache is read again and replaced; a dataset prepared again (a file's mtime changed)
    gets a new cache entry, never the old labels."""
    monkeypatch.setenv("JSSL_CACHE_DIR", str(tmp_path))
    kw = dict(tfds_name="jssl_tiny_images", data_dir=tiny_tfds_dir, stream=True, num_threads=1)
    want = load_dataset("tfds", **kw).train.labels
    cached = sorted(tmp_path.glob("tfds/jssl_tiny_images/1.0.0/*.npy"))
    assert [p.name.split("-")[0] for p in cached] == ["test", "train"]
    train_cache = cached[1]
    np.testing.assert_array_equal(np.load(train_cache), want)
    np.save(train_cache, want[::-1].copy())  # a cache that differs: the load must use it
    np.testing.assert_array_equal(load_dataset("tfds", **kw).train.labels, want[::-1])
    train_cache.write_bytes(b"not an npy file")
    np.testing.assert_array_equal(load_dataset("tfds", **kw).train.labels, want)
    np.testing.assert_array_equal(np.load(train_cache), want)  # replaced
    np.save(train_cache, want[::-1].copy())
    record = next(p for p in Path(tiny_tfds_dir).rglob("*train.array_record*"))
    os.utime(record, ns=(record.stat().st_atime_ns, record.stat().st_mtime_ns + 10**9))
    np.testing.assert_array_equal(load_dataset("tfds", **kw).train.labels, want)
    assert len(list(tmp_path.glob("tfds/jssl_tiny_images/1.0.0/train-*.npy"))) == 2


def test_tfds_reads_prepared_array_record(tiny_tfds_dir):
    ds = load_dataset("tfds", tfds_name="jssl_tiny_images", data_dir=tiny_tfds_dir)
    assert ds.train.images.shape == (9, 6, 5, 3) and ds.test.images.shape == (4, 6, 5, 3)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int32
    assert ds.class_names == ("ant", "bee", "cow") and ds.num_classes == 3
    assert ds.name == "tfds:jssl_tiny_images"
    # Each image is the constant 10 * i for its example index i, with label i % 3.
    index = ds.train.images[:, 0, 0, 0].astype(int) // 10
    np.testing.assert_array_equal(np.sort(index), np.arange(9))
    np.testing.assert_array_equal(ds.train.labels, index % 3)

    sized = load_dataset(
        "tfds",
        tfds_name="jssl_tiny_images",
        data_dir=tiny_tfds_dir,
        train_split="train[:5]",
        image_size=4,
    )
    assert sized.train.images.shape == (5, 4, 4, 3) and sized.test.images.shape == (4, 4, 4, 3)
    with pytest.raises(DataError, match="available splits"):
        load_dataset("tfds", tfds_name="jssl_tiny_images", data_dir=tiny_tfds_dir, test_split="val")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="TensorFlow would prepare the data"
)
def test_tfds_unprepared_without_tensorflow_says_how_to_prepare(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match=r"not prepared.*pip install -e \"\.\[tfds\]\".*mnist"):
        load_dataset("tfds", tfds_name="mnist", data_dir=tmp_path)


def test_tfds_unknown_name(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match="unknown tfds dataset 'cifar11'.*cifar10"):
        load_dataset("tfds", tfds_name="cifar11", data_dir=tmp_path)
    with pytest.raises(DataError, match="tfds_name"):
        load_dataset("tfds")


# --------------------------------------------------------------------------- batching


def test_batch_indices_is_a_pure_function_of_seed_and_step():
    a = [batch_indices(103, 10, seed=3, step=s) for s in range(25)]
    b = [batch_indices(103, 10, seed=3, step=s) for s in reversed(range(25))][::-1]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
        assert x.shape == (10,)
    assert not np.array_equal(a[0], batch_indices(103, 10, seed=4, step=0))
    np.testing.assert_array_equal(epoch_permutation(103, seed=3, epoch=1)[:10], a[10])


def test_epoch_covers_each_index_at_most_once_and_epochs_differ():
    n, bs = 103, 10
    spe = steps_per_epoch(n, bs)
    assert spe == 10
    epochs = [
        np.concatenate([batch_indices(n, bs, seed=0, step=e * spe + i) for i in range(spe)])
        for e in range(3)
    ]
    for idx in epochs:
        assert len(np.unique(idx)) == spe * bs and idx.min() >= 0 and idx.max() < n
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    # Returned arrays are copies: mutating one does not change later answers.
    x = batch_indices(n, bs, seed=0, step=0)
    x[:] = -1
    assert batch_indices(n, bs, seed=0, step=0).min() >= 0


def test_batching_errors():
    with pytest.raises(DataError, match="larger than the dataset"):
        batch_indices(5, 8, seed=0, step=0)
    with pytest.raises(DataError, match="step"):
        batch_indices(50, 8, seed=0, step=-1)
    with pytest.raises(DataError, match="not divisible by the process count 3"):
        host_batch_indices(50, 8, seed=0, step=0, process_index=0, process_count=3)
    with pytest.raises(DataError, match="process_index"):
        host_batch_indices(50, 8, seed=0, step=0, process_index=2, process_count=2)


def test_host_slices_concatenate_to_global_batch():
    for step in (0, 7, 123):
        global_batch = batch_indices(1000, 64, seed=1, step=step)
        parts = [
            host_batch_indices(1000, 64, seed=1, step=step, process_index=p, process_count=4)
            for p in range(4)
        ]
        assert all(p.shape == (16,) for p in parts)
        np.testing.assert_array_equal(np.concatenate(parts), global_batch)


# ----------------------------------------------------------------------------- safety


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_dataset_names_and_paths_cannot_write_outside_the_cache(tmp_path):
    """A dataset name or path never becomes a path that the loader writes to."""
    data_dir, work = tmp_path / "tfds", tmp_path / "work"
    data_dir.mkdir()
    work.mkdir()
    before = _tree(tmp_path)
    for name in ("../../x", "cifar10/../../../x", "/tmp/x", "mnist:../..", "x/..", "a/b/c"):
        with pytest.raises(DataError, match="invalid tfds dataset name"):
            load_dataset("tfds", tfds_name=name, data_dir=data_dir)
    assert _tree(tmp_path) == before

    # An image folder reached through '..' with odd class names: the only file written
    # is the content-addressed cache file in cache_dir; the folder itself is only read.
    images = work / "imgs"
    for split in ("train", "test"):
        for cls in ("x..y", "a b", "ü"):
            _save(images / split / cls / "i.png", Image.new("RGB", (4, 4)), "PNG")
    before = _tree(tmp_path)
    ds = load_dataset(
        "image_folder", path=work / ".." / "work" / "imgs", cache_dir=tmp_path / "cache"
    )
    assert ds.class_names == ("a b", "x..y", "ü")
    new = _tree(tmp_path) - before
    assert {n.split("/")[0] for n in new} == {"cache"}
    (cache_file,) = (tmp_path / "cache").iterdir()
    assert re.fullmatch(r"image_folder-[0-9a-f]{64}\.npz", cache_file.name)
    # The cache holds plain arrays: it loads without pickle.
    with np.load(cache_file, allow_pickle=False) as npz:
        assert list(npz["class_names"]) == ["a b", "x..y", "ü"]
