"""Prepare once, stream always: an image folder -> ArrayRecord shards (no TensorFlow).

    python -m jssl.data.prepare --source=DIR --out=OUT [--shard_size=1024]
                                [--on_bad_image=fail|skip] [--num_threads=16]

DIR holds ``train/<class>/*`` and ``val/<class>/*`` (ImageNet's layout) or
``test/<class>/*``; each becomes a split of OUT of the same name, read by
``--config.data.name=arrayrecord --config.data.path=OUT`` (jssl/data/arrayrecord.py).
Records are the files' own bytes (nothing is re-encoded), each checked by a full
decode first.

Resumable and crash-safe: shard k holds files [k * shard_size, (k+1) * shard_size)
of the sorted file list and is written to a temporary name, renamed, and then
recorded in ``shard-k.json`` (its labels, skipped files, and a key of its files'
paths, sizes and modification times); a rerun after an interruption keeps every
recorded shard whose files are unchanged and writes the rest. ``meta.json`` is
written last, so a folder without it is never read as finished data. An
unreadable file stops the run naming it (``--on_bad_image=fail``, the default;
the shards written so far stay: replace the file and rerun) or is skipped and
counted (``skip``; the list goes to ``OUT/skipped.txt``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from jssl.data.arrayrecord import FORMAT, META, decode_encoded, shard_name
from jssl.data.core import DataError
from jssl.data.image_folder import list_split

TEST_SPLITS = ("val", "test")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True).encode()))


def _read_checked(path: str) -> tuple[bytes | None, str | None]:
    """The file's bytes if it decodes as an image, else (None, reason)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        decode_encoded(data, None)
        return data, None
    except Exception as err:  # Pillow raises many types for bad files
        return None, " ".join(str(err).split())[:200] or type(err).__name__


def _splits(root: Path) -> list[str]:
    if not (root / "train").is_dir():
        raise DataError(
            f"{root} has no train/ folder; expected DIR/train/<class>/* and DIR/val/<class>/* "
            "(or DIR/test/<class>/*)"
        )
    tests = [s for s in TEST_SPLITS if (root / s).is_dir()]
    if not tests:
        raise DataError(f"{root} has no val/ or test/ folder next to train/; add one")
    return ["train", *tests]


def _key(lines, *extra) -> str:
    digest = hashlib.sha256(json.dumps([FORMAT, *extra]).encode())
    digest.update("".join(lines).encode())
    return digest.hexdigest()


def _write_shard(
    out_dir: Path, index: int, key: str, files, labels, threads: int, on_bad: str, bar
):
    """Writes shard ``index`` of these files; returns its record labels and skipped files."""
    import grain
    from array_record.python.array_record_module import ArrayRecordWriter

    path = out_dir / shard_name(index)
    tmp = out_dir / (shard_name(index) + ".tmp")
    checked = (
        grain.MapDataset.source(list(files))
        .map(_read_checked)
        .to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
    )
    kept, skipped = [], []
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    try:
        for file, label, (data, reason) in zip(files, labels, checked, strict=True):
            bar.update(1)
            if data is None:
                if on_bad == "fail":
                    raise DataError(
                        f"cannot decode image file {file} ({reason}); delete or replace it and "
                        "rerun (the shards written so far are kept), or pass "
                        "--on_bad_image=skip to skip unreadable files"
                    )
                skipped.append(f"{file}\t{reason}")
                continue
            writer.write(data)
            kept.append(int(label))
    finally:
        writer.close()
    os.replace(tmp, path)
    record = {"key": key, "labels": kept, "skipped": skipped}
    _write_json(out_dir / f"shard-{index:05d}.json", record)
    return kept, skipped


def _finished_shard(out_dir: Path, index: int, key: str) -> dict | None:
    """Shard ``index``'s record if it was written from these very files, else None."""
    record = out_dir / f"shard-{index:05d}.json"
    if not (record.exists() and (out_dir / shard_name(index)).exists()):
        return None
    try:
        done = json.loads(record.read_text())
    except ValueError:
        return None
    return done if done.get("key") == key else None


def prepare(
    source,
    out,
    *,
    shard_size: int = 1024,
    on_bad_image: str = "fail",
    num_threads: int = 16,
    progress: bool = True,
) -> dict:
    """Writes the image folder ``source`` as ArrayRecord shards in ``out``; returns meta.json."""
    from tqdm import tqdm

    if shard_size < 1:
        raise DataError(f"--shard_size must be >= 1, got {shard_size}")
    if on_bad_image not in ("fail", "skip"):
        raise DataError(f"--on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    root, out = Path(source).expanduser(), Path(out).expanduser()
    if not root.is_dir():
        raise DataError(f"--source={root} does not exist or is not a directory")
    splits = _splits(root)
    listed = {s: list_split(root, s) for s in splits}
    classes = listed["train"][0]
    for s in splits[1:]:
        if listed[s][0] != classes:
            raise DataError(
                f"{root}/{s} has class folders {listed[s][0][:5]}..., train/ has "
                f"{classes[:5]}...; use the same class folder names in every split"
            )
    key = _key([line for sp in splits for line in listed[sp][3]], shard_size, on_bad_image)
    out.mkdir(parents=True, exist_ok=True)
    if (out / META).exists():
        meta = json.loads((out / META).read_text())
        if meta.get("key") == key:
            print(f"{out} is already prepared from {root}; nothing to do")
            return meta
        raise DataError(
            f"{out} already holds prepared data of other files or options; choose another "
            "--out or delete it"
        )

    total = sum(len(listed[s][1]) for s in splits)
    bar = tqdm(total=total, desc="prepare", unit="img", disable=not progress, file=sys.stderr)
    meta = {"format": FORMAT, "key": key, "class_names": classes, "splits": {}}
    skipped_all = []
    for s in splits:
        _, files, labels, lines = listed[s]
        out_dir = out / s
        out_dir.mkdir(exist_ok=True)
        counts, split_labels = [], []
        for k, start in enumerate(range(0, len(files), shard_size)):
            chunk = slice(start, start + shard_size)
            shard_key = _key(lines[chunk], on_bad_image)
            done = _finished_shard(out_dir, k, shard_key)
            if done is not None:
                kept, skipped = done["labels"], done["skipped"]
                bar.update(len(files[chunk]))
            else:
                kept, skipped = _write_shard(
                    out_dir,
                    k,
                    shard_key,
                    files[chunk],
                    labels[chunk],
                    num_threads,
                    on_bad_image,
                    bar,
                )
            counts.append(len(kept))
            split_labels.extend(kept)
            skipped_all.extend(skipped)
        if not split_labels:
            raise DataError(f"no image of {root}/{s} could be decoded; check the files")
        array = np.asarray(split_labels, np.int32)
        _atomic_write(out_dir / "labels.npy", lambda f, a=array: np.save(f, a))
        meta["splits"][s] = {"num_examples": len(array), "counts": counts}
    bar.close()
    meta["skipped"] = len(skipped_all)
    if skipped_all:
        _atomic_write(out / "skipped.txt", lambda f: f.write("\n".join(skipped_all).encode()))
    _write_json(out / META, meta)
    sizes = ", ".join(f"{v['num_examples']} {k}" for k, v in meta["splits"].items())
    note = f"; skipped {len(skipped_all)} unreadable files (see {out / 'skipped.txt'})"
    print(f"prepared {sizes} images in {out}{note if skipped_all else ''}", flush=True)
    return meta


def main(argv=None) -> int:
    from jssl.cli import ArgumentParser, print_error

    p = ArgumentParser(prog="python -m jssl.data.prepare", description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="image folder: DIR/train/<class>/*, ...")
    p.add_argument("--out", required=True, help="output folder (resumes an interrupted run)")
    p.add_argument("--shard_size", type=int, default=1024, help="images per shard")
    p.add_argument("--on_bad_image", default="fail", choices=("fail", "skip"))
    p.add_argument("--num_threads", type=int, default=16, help="reading/checking threads")
    args = p.parse_args(argv)
    try:
        prepare(
            args.source,
            args.out,
            shard_size=args.shard_size,
            on_bad_image=args.on_bad_image,
            num_threads=args.num_threads,
        )
    except DataError as e:
        print_error(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
