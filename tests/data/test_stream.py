"""Streamed data: ``python -m jssl.data.prepare`` and the ArrayRecord source.

Real files throughout: image folders of JPEGs and PNGs written here, real
ArrayRecord shards, grain threads and worker processes, train.py in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from jssl import trainer
from jssl.data import DataError, host_batches, load_dataset, load_image_folder
from jssl.data.arrayrecord import decode_encoded, load_arrayrecord, shard_name
from jssl.data.prepare import prepare
from tests.helpers import ROOT, leaves_equal, tiny_config, write_image_folder


def _listing(root):
    """{relative path: (size, mtime_ns)} of every file under ``root``."""
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(folder, f))
            out[os.path.relpath(os.path.join(folder, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def _same_prepared(a, b):
    """Two prepared folders hold the same records, labels and meta."""
    da, db = load_arrayrecord(a), load_arrayrecord(b)
    for sa, sb in ((da.train, db.train), (da.test, db.test)):
        np.testing.assert_array_equal(sa.labels, sb.labels)
        assert sa.counts == sb.counts
        ra, rb = sa.records(), sb.records()
        assert [ra[i] for i in range(len(ra))] == [rb[i] for i in range(len(rb))]
    assert da.class_names == db.class_names


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """JPEGs (train) and PNGs (test) of 3 classes in two sizes."""
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, 36, 12, classes=("a", "b", "c"), size=(20, 24))
    extra = root / "train" / "b" / "big.png"  # another size: resized like every other image
    Image.fromarray(np.full((40, 30, 3), 200, np.uint8)).save(extra)
    for f in (root / "test").rglob("*.jpg"):
        Image.open(f).save(f.with_suffix(".png"))
        f.unlink()
    return root


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "out"
    prepare(folder, out, shard_size=10, progress=False)
    return out


def test_prepared_data_reads_as_the_in_memory_folder(folder, prepared, tmp_path):
    for size in (None, (16, 12)):
        streamed = load_arrayrecord(prepared, image_size=size)
        memory = load_image_folder(folder, image_size=size, cache_dir=tmp_path)
        assert streamed.class_names == memory.class_names == ("a", "b", "c")
        for s, m in ((streamed.train, memory.train), (streamed.test, memory.test)):
            assert len(s) == len(m) and s.image_shape == m.image_shape
            np.testing.assert_array_equal(s.labels, m.labels)
            np.testing.assert_array_equal(s.get(np.arange(len(s))), m.images)
            picks = np.array([5, 0, 5, len(s) - 1])  # any order, repeats
            np.testing.assert_array_equal(s.get(picks), m.images[picks])
            assert s.get(np.array([], np.int64)).shape == (0, *m.image_shape)
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["splits"]["train"] == {"num_examples": 37, "counts": [10, 10, 10, 7]}
    assert meta["skipped"] == 0


def test_large_jpegs_decode_in_the_dct_domain_close_to_a_full_decode():
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(480, 640, 3)), 0), 1)
    smooth = (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(smooth).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (64, 64))
        assert im.size == (160, 120)  # 1/4: the smallest scale with both sides >= 64
    fast = decode_encoded(data, (48, 64))
    full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    reference = np.asarray(Image.fromarray(full).resize((64, 48), Image.Resampling.BILINEAR))
    assert fast.shape == reference.shape == (48, 64, 3)
    assert np.abs(fast.astype(int) - reference).mean() < 3.0


def test_prepare_stops_at_a_bad_file_keeps_shards_and_resumes(folder, prepared, tmp_path):
    src = tmp_path / "src"
    write_image_folder(src, 36, 12, classes=("a", "b", "c"), size=(20, 24))
    bad = src / "train" / "c" / "0026.jpg"  # the 25th train file in sorted order: shard 2
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) // 2])  # a truncated JPEG
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cannot decode image file .*0026\.jpg.*on_bad_image=skip"):
        prepare(src, out, shard_size=10, progress=False)
    assert not (out / "meta.json").exists()
    with pytest.raises(DataError, match="no finished prepared data.*rerun"):
        load_arrayrecord(out)
    kept = {
        k: v for k, v in _listing(out).items() if k.startswith("train/shard-0000") and k[16] in "01"
    }
    assert sorted(kept) == [
        "train/shard-00000.array_record",
        "train/shard-00000.json",
        "train/shard-00001.array_record",
        "train/shard-00001.json",
    ]
    time.sleep(0.01)
    bad.write_bytes(good)  # the user replaces the file and reruns
    prepare(src, out, shard_size=10, progress=False)
    after = _listing(out)
    assert all(after[k] == v for k, v in kept.items())  # the finished shards were not rewritten
    fresh = tmp_path / "fresh"
    prepare(src, fresh, shard_size=10, progress=False)
    _same_prepared(out, fresh)


def test_prepare_skips_and_counts_bad_files(tmp_path):
    src = write_image_folder(tmp_path / "src", 8, 4)
    (src / "train" / "dark" / "zz.jpg").write_text("not an image")
    out = tmp_path / "out"
    meta = prepare(src, out, shard_size=4, on_bad_image="skip", progress=False)
    assert meta["skipped"] == 1 and meta["splits"]["train"]["num_examples"] == 8
    assert "zz.jpg" in (out / "skipped.txt").read_text()
    assert len(load_arrayrecord(out).train) == 8


def test_prepare_killed_half_way_resumes_to_the_same_data(tmp_path):
    src = write_image_folder(tmp_path / "src", 120, 10)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    cmd = [
        sys.executable,
        "-m",
        "jssl.data.prepare",
        f"--source={src}",
        f"--out={out}",
        "--shard_size=2",
        "--num_threads=1",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "train" / "shard-00003.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "prepare ended too early"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "meta.json").exists()
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    prepare(src, fresh, shard_size=2, progress=False)
    _same_prepared(out, fresh)
    assert not list(out.rglob("*.tmp"))


def test_damaged_prepared_data_gives_one_line_errors(prepared, tmp_path):
    import shutil

    def copy():
        dst = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(prepared, dst)
        return dst

    missing = copy()
    os.remove(missing / "train" / shard_name(1))
    with pytest.raises(DataError, match=r"shard .*shard-00001\.array_record is missing"):
        load_arrayrecord(missing).train.get([0])

    truncated = copy()
    path = truncated / "train" / shard_name(2)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or corrupt|truncated or replaced"):
        load_arrayrecord(truncated).train.get([0])

    garbage = copy()
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(garbage / "train" / shard_name(3)), "group_size:1")
    for _ in range(7):
        writer.write(b"these bytes are not an image")
    writer.close()
    source = load_arrayrecord(garbage, image_size=(8, 8)).train
    source.get([0])  # the other shards read
    with pytest.raises(DataError, match="record 31 of .*train is not a decodable image"):
        source.get([31])

    wrong = tmp_path / "other_format"
    shutil.copytree(prepared, wrong)
    meta = json.loads((wrong / "meta.json").read_text())
    (wrong / "meta.json").write_text(json.dumps({**meta, "format": "x"}))
    with pytest.raises(DataError, match="prepare the data again"):
        load_arrayrecord(wrong)
    with pytest.raises(DataError, match="has no split 'val'"):
        load_arrayrecord(prepared, test_split="val")
    with pytest.raises(DataError, match="needs --config.data.path"):
        load_dataset("arrayrecord")


def test_streamed_batches_are_the_in_memory_batches(prepared, folder, tmp_path):
    """Threads, worker processes and process slices: the batches of steps 3..8 as in memory."""
    streamed = load_arrayrecord(prepared).train
    memory = load_image_folder(folder, cache_dir=tmp_path).train
    for proc, workers in ((0, 0), (1, 0), (1, 2)):
        kw = dict(seed=3, start=3, stop=9, process_index=proc, process_count=2)
        want = list(host_batches(memory, 12, **kw))
        got = list(host_batches(streamed, 12, num_threads=3, num_workers=workers, **kw))
        assert [s for s, _, _ in got] == list(range(3, 9))
        for (_, i, x), (_, i2, x2) in zip(want, got, strict=True):
            np.testing.assert_array_equal(i, i2)
            np.testing.assert_array_equal(x, x2)
    with pytest.raises(DataError, match="not divisible by the process count 5"):
        next(host_batches(streamed, 12, seed=0, start=0, stop=1, process_count=5))


def test_streamed_run_resumed_equals_the_in_memory_run(folder, prepared, tmp_path):
    """Training on the prepared copy of a folder, interrupted and resumed, ends with the
    parameters of an uninterrupted in-memory run of the folder, bit for bit."""

    def config(name, path):
        return tiny_config(
            "simclr",
            **{
                "data.name": name,
                "data.path": str(path),
                "data.cache_dir": str(tmp_path / "cache"),
                "data.num_threads": 2,
                "batch_size": 16,
                "num_steps": 6,
                "log_every": 3,
                "checkpoint_every": 2,
            },
        )

    memory = trainer.train_and_evaluate(
        config("image_folder", folder), tmp_path / "memory", show_progress=False
    )
    run = tmp_path / "streamed"
    first = trainer.train_and_evaluate(
        config("arrayrecord", prepared), run, show_progress=False, stop_at_step=3
    )
    assert first["eval"] is None
    streamed = trainer.train_and_evaluate(config("arrayrecord", prepared), run, show_progress=False)
    leaves_equal(memory["state"].params, streamed["state"].params)
    leaves_equal(memory["state"].opt_state, streamed["state"].opt_state)
    assert memory["eval"]["knn_top1"] == streamed["eval"]["knn_top1"]


def test_a_subset_of_a_streamed_source_streams(prepared, folder, tmp_path):
    """The validation carve (a Subset) of a streamed split streams its batches too."""
    from jssl.data import Subset, carve_validation

    memory = load_image_folder(folder, cache_dir=tmp_path)
    carved = carve_validation(load_arrayrecord(prepared), 0.25, seed=0, split="val")
    reference = carve_validation(memory, 0.25, seed=0, split="val")
    assert isinstance(carved.train, Subset) and callable(carved.train.load)
    assert not hasattr(reference.train, "load")  # in memory: no load, read on this thread
    np.testing.assert_array_equal(carved.train.load(3), reference.train.get([3])[0])
    kw = dict(seed=1, start=0, stop=3)
    for (_, i, x), (_, i2, x2) in zip(
        host_batches(reference.train, 8, **kw), host_batches(carved.train, 8, **kw), strict=True
    ):
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(carved.test.get([0, 1]), reference.test.get([0, 1]))
