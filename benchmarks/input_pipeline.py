"""Host images/s of the streamed input pipeline next to the train step's images/s, one machine.

    python benchmarks/input_pipeline.py                    # ~3,000 JPEGs, a few minutes
    python benchmarks/input_pipeline.py --num_images=10000 --step_model=resnet50
    python benchmarks/input_pipeline.py --tiny             # seconds: what the test runs

1. Writes ``--num_images`` synthetic ImageNet-like JPEGs into an image folder in a temporary
   directory: 500x375 (a quarter of them 375x500), quality 90, about 90 KB each (ImageNet's
   training JPEGs average ~110 KB), with natural-image statistics: a 1/f amplitude spectrum
   in luminance, smoother correlated chroma, flat shapes with sharp edges, sensor noise.
   Then prepares it with ``jssl.data.prepare`` (ArrayRecord shards), as a user would.
2. Decode alone, one thread, a plain loop over encoded bytes held in memory: Pillow's full
   decode + bilinear resize to ``--image_size`` (the baseline of every ratio), and
   ``jssl.data.arrayrecord.decode_encoded``, which first decodes in the DCT domain at 1/2, 1/4
   or 1/8 scale (Pillow's ``draft``) when the JPEG is at least twice the target in both sides;
   both at ``--image_size`` and at half of it (where ``draft`` can act on 500x375 images).
3. The real pipeline: ``jssl.data.host_batches`` over the ``ArrayRecordSource`` (read the
   records, decode, resize, batch) with 1, 2, 4, ... grain threads up to the core count, and
   with 1, 2, ... grain worker processes (one thread each). The first batch (each worker's
   first batch) is not timed, so process start-up is reported apart. The shards were just
   written, so they are read from the page cache: storage bandwidth is not measured.
4. The train step on the same machine: SimCLR's imagenet preset (``configs/simclr.py:imagenet``,
   two 224 px views cropped on the device from the ``--image_size`` images, LARS) with
   ``--step_model`` (ResNet-18 by default, float32: ResNet-50 in bfloat16 at the preset's
   batch does not fit a 2-core CPU's minutes) at ``--step_batch``; XLA's FLOPs per image and the
   machine's float32 matmul rate measured in the same run, as benchmarks/throughput.py does.

Every timed phase records the CPU cores this benchmark used (worker processes included) and the
cores every other process took meanwhile (``others_cores``: on a shared machine 0.5 or more
makes a figure suspect), so "images per core-second" is CPU-time based and less sensitive to a
busy machine than images/s. The summary divides the step's images/s by the pipeline's images per
core-second: the host cores one accelerator's step needs at that rate, and per 1,000 images/s.
Writes benchmarks/results/input_pipeline_<size>_<date>.json (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageOps  # noqa: E402

from benchmarks.common import CpuSampler, loadavg, machine, versions  # noqa: E402
from benchmarks.throughput import load_config, matmul_flops_per_sec, write_result  # noqa: E402

NUM_CLASSES = 10
JPEG_QUALITY = 90
IMAGENET_MEAN_BYTES = 110_000  # ~140 GB / 1.28 M training JPEGs


# ----------------------------------------------------------------------------
# Synthetic ImageNet-like JPEGs


def _field(rng, side: int, channels: int, exponent: float) -> np.ndarray:
    """float32 [side, side, channels] Gaussian field with amplitude spectrum 1 / f**exponent."""
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    amp = f**-exponent
    amp[0, 0] = 0.0
    shape = (channels, side, side // 2 + 1)
    spec = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * amp
    x = np.moveaxis(np.fft.irfft2(spec, s=(side, side), axes=(1, 2)), 0, -1)
    return ((x - x.mean()) / x.std()).astype(np.float32)


# Y, Cb, Cr -> R, G, B (JFIF), applied as x @ YCC_TO_RGB.
YCC_TO_RGB = np.array([[1, 1, 1], [0, -0.344, 1.772], [1.402, -0.714, 0]], np.float32)


class SyntheticPhotos:
    """Random crops of a pool of 1/f fields, recoloured, with shapes and noise: cheap per image."""

    def __init__(self, seed: int, size: tuple[int, int], pool: int = 8):
        self.rng = np.random.default_rng(seed)
        self.size = size  # (h, w) of the landscape images
        self.side = int(max(size) * 1.5)
        self.pool = [
            np.concatenate(
                [
                    _field(self.rng, self.side, 1, 1.1),  # luminance: ~1/f, as photographs
                    0.35 * _field(self.rng, self.side, 2, 1.4),  # chroma: weaker, smoother
                ],
                -1,
            )
            for _ in range(pool)
        ]
        self.noise = self.rng.standard_normal((self.side, self.side, 1)).astype(np.float32)

    def jpeg(self) -> bytes:
        rng = self.rng
        h, w = self.size if rng.random() < 0.75 else self.size[::-1]
        y, x = rng.integers(0, self.side - h + 1), rng.integers(0, self.side - w + 1)
        ycc = self.pool[rng.integers(len(self.pool))][y : y + h, x : x + w]
        rgb = ycc @ YCC_TO_RGB * rng.uniform(35, 55) + rng.uniform(80, 170, 3).astype(np.float32)
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(3, 10)):  # objects: flat regions with sharp edges
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))]
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        y, x = rng.integers(0, self.side - h + 1), rng.integers(0, self.side - w + 1)
        noisy = np.asarray(image, np.float32) + self.noise[y : y + h, x : x + w] * rng.uniform(3, 8)
        out = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            out, "JPEG", quality=JPEG_QUALITY
        )
        return out.getvalue()


def write_folder(root: str, num_train: int, num_val: int, size, seed: int) -> dict:
    """DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg; returns counts, sizes, seconds."""
    t0 = time.perf_counter()
    photos = SyntheticPhotos(seed, size, pool=8 if num_train >= 500 else 2)
    sizes = []
    for split, count in (("train", num_train), ("val", num_val)):
        for c in range(NUM_CLASSES):
            os.makedirs(os.path.join(root, split, f"class{c}"), exist_ok=True)
        for i in range(count):
            data = photos.jpeg()
            sizes.append(len(data))
            path = os.path.join(root, split, f"class{i % NUM_CLASSES}", f"{i:06d}.jpg")
            with open(path, "wb") as f:
                f.write(data)
    return {
        "num_train": num_train,
        "num_val": num_val,
        "image_hw": list(size),
        "portrait_share": 0.25,
        "jpeg_quality": JPEG_QUALITY,
        "mean_bytes": float(np.mean(sizes)),
        "imagenet_mean_bytes_for_reference": IMAGENET_MEAN_BYTES,
        "write_seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------
# Timing with the CPU shares


def _timed(sampler: CpuSampler, images: int, start, end) -> dict:
    """Figures of a phase from two ``CpuSampler.sample()`` tuples (t, busy, own, load)."""
    wall = max(end[0] - start[0], 1e-9)
    own = max(end[2] - start[2], 1e-9)  # CPU seconds of this process and its workers
    busy = end[1] - start[1]
    return {
        "images": images,
        "seconds": wall,
        "images_per_sec": images / wall,
        "own_cores": own / wall,
        "others_cores": max(0.0, (busy - own) / wall),
        "images_per_core_second": images / own,
        "loadavg_1min": end[3][0],
    }


def decode_without_draft(data: bytes, size) -> np.ndarray:
    """``decode_encoded`` minus the DCT-domain downscaling: full decode, then bilinear resize."""
    from jssl.data.core import resize_array
    from jssl.data.image_folder import to_rgb_array

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        array = to_rgb_array(image)
    return resize_array(array, size)


def draft_scale(data: bytes, size) -> int:
    """The DCT-domain scale denominator (1, 2, 4, 8) ``decode_encoded`` decodes this JPEG at."""
    with Image.open(io.BytesIO(data)) as image:
        full = image.size
        image.draft("RGB", (max(size), max(size)))
        return round(full[0] / image.size[0])


def measure_decode(sampler, blobs, sizes) -> list[dict]:
    from jssl.data.arrayrecord import decode_encoded

    rows = []
    for side in sizes:
        size = (side, side)
        scales = sorted({draft_scale(b, size) for b in blobs})
        for name, fn in (("full decode", decode_without_draft), ("draft", decode_encoded)):
            fn(blobs[0], size)  # warm
            start = sampler.sample()
            for b in blobs:
                image = fn(b, size)
            row = _timed(sampler, len(blobs), start, sampler.sample())
            assert image.shape == (side, side, 3)
            rows.append(
                {
                    "what": f"decode alone, {name}",
                    "draft": name == "draft",
                    "image_size": side,
                    "draft_scales": scales if name == "draft" else [1],
                    "threads": 1,
                    **row,
                }
            )
    return rows


def measure_pipeline(sampler, source, *, batch, steps, threads=1, workers=0) -> dict:
    """``host_batches`` images/s over ``steps`` batches after each worker's (or the) first."""
    from jssl import data

    warm = max(1, workers)
    t0 = time.perf_counter()
    it = data.host_batches(
        source,
        batch,
        seed=0,
        start=0,
        stop=warm + steps + 1,  # one batch more than taken: no end-of-stream or shutdown timed
        num_threads=threads,
        prefetch=2,
        num_workers=workers,
    )
    try:
        for _ in range(warm):
            next(it)
        startup = time.perf_counter() - t0
        start = sampler.sample()
        for _ in range(steps):
            _, idx, images = next(it)
        end = sampler.sample()
    finally:
        it.close()
    assert images.shape == (batch, *source.image_shape) and images.dtype == np.uint8
    kind = f"{workers} worker process{'es' if workers > 1 else ''}" if workers else "threads"
    return {
        "what": f"host_batches, {kind}",
        "threads": threads,
        "workers": workers,
        "batch_size": batch,
        "first_batches_seconds": startup,
        **_timed(sampler, steps * batch, start, end),
    }


# ----------------------------------------------------------------------------
# The train step


def measure_step(sampler, args, images: np.ndarray) -> dict:
    import jax
    import ml_collections

    from jssl import data, trainer

    config = load_config("configs/simclr.py:imagenet")
    config.model.name = args.step_model
    config.model.dtype = args.step_dtype
    config.batch_size = args.step_batch
    config.data.image_size = args.image_size
    config.augment.crop_size = args.crop_size
    if args.tiny:  # a network that compiles in seconds
        config.model.name = "convnet"
        config.model.kwargs = ml_collections.ConfigDict({"widths": (8, 16)})
        config.augment.blur_p = 0.0
        config.simclr.proj_hidden_dims = (32,)
        config.simclr.proj_dim = 16
    labels = np.zeros(len(images), np.int32)
    split = data.Split(images=images, labels=labels)
    dataset = data.Dataset(
        train=split, test=split, num_classes=1, class_names=("0",), name="decoded-synthetic"
    )
    exp = trainer.Experiment(config, dataset=dataset)
    state = exp.init_state()
    batch = exp.global_batch(0)
    t0 = time.perf_counter()
    compiled = exp.train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    # The AOT-compiled executable itself: calling exp.train_step would compile it again.
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    start = sampler.sample()
    for _ in range(args.step_steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    row = _timed(sampler, args.step_steps * args.step_batch, start, sampler.sample())
    row.pop("images_per_core_second")  # the step uses the device, not a per-image host cost
    return {
        "what": f"SimCLR train step, {config.model.name} {args.step_dtype}",
        "config": "configs/simclr.py:imagenet",
        "model": config.model.name,
        "model_kwargs": config.model.kwargs.to_dict(),
        "dtype": args.step_dtype,
        "batch_size": args.step_batch,
        "image_size": args.image_size,
        "crop_size": args.crop_size,
        "views": 2,
        "devices": [str(d) for d in jax.devices()],
        "compile_seconds": compile_seconds,
        "step_seconds": row["seconds"] / args.step_steps,
        "xla_flops_per_step": flops,
        "xla_flops_per_image": flops / args.step_batch,
        "achieved_flops_per_sec": flops * args.step_steps / row["seconds"],
        **row,
    }


# ----------------------------------------------------------------------------
# Report


def _counts(cores: int) -> list[int]:
    out = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= cores]
    return sorted({*out, cores})


def table(result: dict) -> str:
    base = result["baseline"]["images_per_sec"]
    base_core = result["baseline"]["images_per_core_second"]
    head = (
        "| what | image px | threads | workers | images/s | vs baseline | own cores "
        "| others' cores | images per core-second | vs baseline |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in result["decode"] + result["pipeline"]:
        what = r["what"]
        if r.get("draft"):
            what += f" (scale 1/{'/'.join(map(str, r['draft_scales']))})"
        lines.append(
            f"| {what} | {r['image_size'] if 'image_size' in r else result['image_size']} "
            f"| {r['threads']} | {r.get('workers', 0)} | {r['images_per_sec']:,.0f} "
            f"| {r['images_per_sec'] / base:.2f}x | {r['own_cores']:.2f} "
            f"| {r['others_cores']:.2f} | {r['images_per_core_second']:,.0f} "
            f"| {r['images_per_core_second'] / base_core:.2f}x |"
        )
    s = result["step"]
    lines.append(
        f"| {s['what']}, batch {s['batch_size']}, 2 x {s['crop_size']} px views "
        f"({s['xla_flops_per_image'] / 1e9:.1f} GFLOP/image) | {s['image_size']} | - | - "
        f"| {s['images_per_sec']:,.1f} | {s['images_per_sec'] / base:.3f}x "
        f"| {s['own_cores']:.2f} | {s['others_cores']:.2f} | - | - |"
    )
    m = result["summary"]
    lines += [
        "",
        f"Host cores the step needs at its {s['images_per_sec']:,.1f} images/s: "
        f"{m['host_cores_for_step']:.3f} (at the pipeline's "
        f"{m['host_images_per_core_second']:,.0f} images per core-second, "
        f"{m['host_rate_from']}); per 1,000 images/s of an accelerator: "
        f"{m['host_cores_per_1000_images_per_sec']:.1f} cores.",
        f"Baseline: {result['baseline']['what']} at {result['image_size']} px, "
        f"{base:,.0f} images/s. Step at {s['achieved_flops_per_sec'] / 1e9:.1f} GFLOP/s, "
        f"{s['achieved_flops_per_sec'] / result['matmul_flops_per_sec']:.2f} of the "
        f"{result['matmul_flops_per_sec'] / 1e9:.0f} GFLOP/s float32 matmul measured in this "
        "run.",
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--num_images", type=int, default=3000, help="synthetic training JPEGs")
    p.add_argument("--image_size", type=int, default=256, help="decoded size (the preset's)")
    p.add_argument("--crop_size", type=int, default=224, help="the step's on-device crops")
    p.add_argument("--batch_size", type=int, default=64, help="host batch of the pipeline")
    p.add_argument("--steps", type=int, default=24, help="timed batches per pipeline setting")
    p.add_argument("--decode_images", type=int, default=300, help="images of each decode row")
    p.add_argument("--threads", default="", help="thread counts, e.g. 1,2 (default: 1, 2, 4, ...")
    p.add_argument("--workers", default="", help="worker counts (default as --threads)")
    p.add_argument("--step_model", default="resnet18", help="resnet18 | resnet50 | ...")
    p.add_argument("--step_dtype", default="float32", help="float32 | bfloat16")
    p.add_argument("--step_batch", type=int, default=8)
    p.add_argument("--step_steps", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a seconds-long dry run (the test's)")
    p.add_argument("--out", default="", help="JSON path (default under benchmarks/results/)")
    args = p.parse_args(argv)
    if args.tiny:
        args.num_images, args.image_size, args.crop_size = 48, 64, 56
        args.batch_size, args.steps, args.decode_images = 8, 2, 8
        args.step_batch, args.step_steps = 8, 1
        args.threads, args.workers = args.threads or "1", args.workers or "1"
    cores = os.cpu_count() or 1
    threads = [int(v) for v in args.threads.split(",")] if args.threads else _counts(cores)
    workers = [int(v) for v in args.workers.split(",")] if args.workers else _counts(cores)
    if args.num_images < max(args.batch_size, args.step_batch, 1) * 2:
        p.error("--num_images must be at least twice the batch sizes")

    started = time.perf_counter()
    result = {
        "command": "python benchmarks/input_pipeline.py " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_1_5_15_before": loadavg()},
        "versions": versions(),
        "image_size": args.image_size,
        "crop_size": args.crop_size,
    }
    with CpuSampler(every=2.0) as sampler, tempfile.TemporaryDirectory(prefix="jssl-ip-") as work:
        folder, out = os.path.join(work, "jpeg"), os.path.join(work, "prepared")
        num_val = max(NUM_CLASSES, args.num_images // 50)
        print(f"writing {args.num_images} + {num_val} synthetic JPEGs to {folder}", flush=True)
        result["data"] = write_folder(folder, args.num_images, num_val, (375, 500), args.seed)
        result["data"].update(prepare_folder(sampler, folder, out, cores))
        result.update(run_measurements(sampler, args, out, threads, workers))
    base = result["baseline"]["images_per_sec"]
    result["ratios_vs_baseline"] = {
        f"{r['what']} @{r.get('image_size', args.image_size)} t{r['threads']}"
        f" w{r.get('workers', 0)}": r["images_per_sec"] / base
        for r in result["decode"] + result["pipeline"]
    }
    result["ratios_vs_baseline"]["train step"] = result["step"]["images_per_sec"] / base
    base_core = result["baseline"]["images_per_core_second"]
    result["ratios_vs_baseline_per_core_second"] = {
        f"{r['what']} @{r.get('image_size', args.image_size)} t{r['threads']}"
        f" w{r.get('workers', 0)}": r["images_per_core_second"] / base_core
        for r in result["decode"] + result["pipeline"]
    }
    result["machine"]["loadavg_1_5_15_after"] = loadavg()
    result["total_seconds"] = time.perf_counter() - started
    print(table(result))
    date = result["date"][:10]
    write_result(result, f"input_pipeline_{args.image_size}px_{date}.json", args.out)
    return result


def prepare_folder(sampler, folder: str, out: str, cores: int) -> dict:
    from jssl.data.prepare import prepare

    start = sampler.sample()
    meta = prepare(folder, out, shard_size=1024, num_threads=cores, progress=False)
    n = sum(s["num_examples"] for s in meta["splits"].values())
    row = _timed(sampler, n, start, sampler.sample())
    return {"prepare": {"what": "python -m jssl.data.prepare (read + check by full decode)", **row}}


def run_measurements(sampler, args, out: str, threads, workers) -> dict:
    from jssl.data.arrayrecord import load_arrayrecord

    source = load_arrayrecord(
        out, image_size=(args.image_size, args.image_size), test_split="val"
    ).train
    n = min(args.decode_images, len(source))
    blobs = source.records().__getitems__(list(range(n)))
    print(f"decode alone: {n} images x 4", flush=True)
    decode = measure_decode(sampler, blobs, [args.image_size, args.image_size // 2])
    steps = min(args.steps, len(source) // args.batch_size - max(workers) - 1)
    if steps < 1:
        raise SystemExit("error: too few images for one timed batch; raise --num_images")
    pipeline = []
    for t in threads:
        print(f"host_batches: {t} thread(s)", flush=True)
        pipeline.append(
            measure_pipeline(sampler, source, batch=args.batch_size, steps=steps, threads=t)
        )
    for w in workers:
        print(f"host_batches: {w} worker process(es)", flush=True)
        pipeline.append(
            measure_pipeline(sampler, source, batch=args.batch_size, steps=steps, workers=w)
        )
    print(f"train step: batch {args.step_batch}", flush=True)
    import jax

    n_mm = 512 if args.tiny else (2048 if jax.default_backend() == "cpu" else 8192)
    matmul = matmul_flops_per_sec(n_mm, repeats=2 if args.tiny else 10)
    step = measure_step(sampler, args, source.get(np.arange(args.step_batch)))
    baseline = next(r for r in decode if not r["draft"] and r["image_size"] == args.image_size)
    one = next(r for r in pipeline if r["threads"] == 1 and not r["workers"])
    per_core = one["images_per_core_second"]
    summary = {
        "host_rate_from": "host_batches, 1 thread",
        "host_images_per_core_second": per_core,
        "host_cores_for_step": step["images_per_sec"] / per_core,
        "host_cores_per_1000_images_per_sec": 1000.0 / per_core,
        "best_host_images_per_sec": max(r["images_per_sec"] for r in pipeline),
        "draft_speedup_at_image_size": next(
            r["images_per_sec"] for r in decode if r["draft"] and r["image_size"] == args.image_size
        )
        / baseline["images_per_sec"],
        "draft_speedup_at_half_size": next(
            r["images_per_sec"]
            for r in decode
            if r["draft"] and r["image_size"] == args.image_size // 2
        )
        / next(
            r["images_per_sec"]
            for r in decode
            if not r["draft"] and r["image_size"] == args.image_size // 2
        ),
    }
    assert all(math.isfinite(v) for v in summary.values() if isinstance(v, float))
    return {
        "decode": decode,
        "pipeline": pipeline,
        "step": step,
        "matmul_flops_per_sec": matmul,
        "baseline": {
            k: baseline[k]
            for k in ("what", "image_size", "images_per_sec", "images_per_core_second")
        },
        "summary": summary,
    }


if __name__ == "__main__":
    main()
