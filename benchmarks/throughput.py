"""Images/s of a method's train step, XLA's FLOPs per step, and utilisation.

    python benchmarks/throughput.py --config=configs/simclr.py:cifar10 --batch_size=256

Reports images/s of the jitted step on fixed inputs (augmentation included,
since it runs inside the step), XLA's FLOP count per step from
``compiled.cost_analysis()``, the achieved FLOP/s, and the machine's float32
matmul FLOP/s measured in the same run, so utilisation is a ratio that does
not depend on how busy the shared machine is. Synthetic uint8 images of the
config's crop size are used, so no data set is needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jssl import data, trainer  # noqa: E402


def write_result(result: dict, name: str, out: str = "") -> str:
    """Writes a benchmark's JSON to ``out`` or benchmarks/results/NAME; returns the path."""
    path = out or os.path.join(ROOT, "benchmarks", "results", name)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(f"wrote {path}")
    return path


def load_config(spec: str):
    path, _, arg = spec.partition(":")
    import importlib.util

    module_spec = importlib.util.spec_from_file_location("bench_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def matmul_flops_per_sec(n: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def synthetic_dataset(config, channels: int, num_examples: int) -> data.Dataset:
    rng = np.random.default_rng(0)
    size = config.augment.crop_size
    images = rng.integers(0, 256, size=(num_examples, size, size, channels), dtype=np.uint8)
    labels = rng.integers(0, 10, size=num_examples).astype(np.int32)
    split = data.Split(images=images, labels=labels)
    return data.Dataset(
        train=split,
        test=split,
        num_classes=10,
        class_names=tuple(map(str, range(10))),
        name="synthetic",
    )


def measure_step(config, *, steps: int, channels: int) -> dict:
    exp = trainer.Experiment(config, dataset=synthetic_dataset(config, channels, config.batch_size))
    state = exp.init_state()
    batch = exp.global_batch(0)
    compiled = exp.train_step.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    state, metrics = exp.train_step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = exp.train_step(state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - t0) / steps
    return {
        "step_seconds": seconds,
        "images_per_sec": config.batch_size / seconds,
        "xla_flops_per_step": flops,
        "achieved_flops_per_sec": flops / seconds,
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="configs/simclr.py:cifar10")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--model", default="", help="override config.model.name")
    p.add_argument("--dtype", default="", help="override config.model.dtype (float32 | bfloat16)")
    p.add_argument(
        "--conv_impl",
        default="",
        help="override config.model.kwargs.conv_impl (ResNets: jssl.models.conv.CONV_IMPLS)",
    )
    p.add_argument(
        "--peak_tflops",
        type=float,
        default=0.0,
        help="the accelerator's peak dense TFLOP/s in the step's dtype, e.g. 989 for an H100 "
        "SXM in bf16; adds utilisation_vs_peak",
    )
    p.add_argument(
        "--channels", type=int, default=0, help="image channels (default: 1 for digits, else 3)"
    )
    p.add_argument("--out", default="", help="write the result JSON here")
    args = p.parse_args(argv)

    config = load_config(args.config)
    config.batch_size = args.batch_size
    if args.model:
        config.model.name = args.model
    if args.dtype:
        config.model.dtype = args.dtype
    if args.conv_impl:
        config.model.kwargs.conv_impl = args.conv_impl
    channels = args.channels or (1 if config.data.name == "digits" else 3)
    # The matmul rate in float32 and in the step's dtype; a large one on an accelerator.
    n = 2048 if jax.default_backend() == "cpu" else 8192
    matmul = matmul_flops_per_sec(n)
    dtype = jnp.dtype(config.model.dtype)
    matmul_dtype = matmul if dtype == jnp.float32 else matmul_flops_per_sec(n, dtype=dtype)
    step = measure_step(config, steps=args.steps, channels=channels)
    result = {
        "config": args.config,
        "model": config.model.name,
        "dtype": config.model.dtype,
        "batch_size": args.batch_size,
        "crop_size": config.augment.crop_size,
        "devices": [str(d) for d in jax.devices()],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
        "matmul_flops_per_sec": matmul,
        "matmul_flops_per_sec_in_dtype": matmul_dtype,
        **step,
        "utilisation_vs_matmul": step["achieved_flops_per_sec"] / matmul,
        "utilisation_vs_matmul_in_dtype": step["achieved_flops_per_sec"] / matmul_dtype,
        # 200 epochs of a 50,000-image training set (CIFAR-10) at this step's speed.
        "minutes_for_200_epochs_of_50k": 200 * 50_000 / step["images_per_sec"] / 60,
    }
    if args.peak_tflops > 0:
        result["utilisation_vs_peak"] = step["achieved_flops_per_sec"] / (args.peak_tflops * 1e12)
    print(json.dumps(result, indent=2))
    if args.out:
        write_result(result, "", args.out)
    return result


if __name__ == "__main__":
    main()
