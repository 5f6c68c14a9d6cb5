"""Every convolution of a CPU-sized ResNet, under each of jssl's ways to compute it.

    python benchmarks/conv_impl.py                      # width 16, batch 512 views
    python benchmarks/conv_impl.py --width 32 --batch 256

For each distinct convolution of a ResNet with a 3x3 CIFAR stem and one basic
block per stage (the network of benchmarks/compare_pytorch.py), times forward +
backward (gradients for input and kernel, jitted) under every
``jssl.models.conv.CONV_IMPLS`` choice ("auto" is one of the others), and
reports GFLOP/s of each, the fastest, and the time of one whole network pass
under each choice (each convolution counted as often as the network uses it).
Writes ``benchmarks/results/conv_impl_w<W>_b<B>_<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from benchmarks.throughput import write_result  # noqa: E402
from jssl.models.conv import CONV_IMPLS, conv_fn  # noqa: E402

DN = ("NHWC", "HWIO", "NHWC")
IMPLS = [impl for impl in CONV_IMPLS if impl != "auto"]


def resnet_convs(width: int, size: int = 32, stages: int = 4) -> list[dict]:
    """(input side, cin, cout, kernel, stride, uses per pass) of a 1-block-per-stage ResNet."""
    convs = [dict(side=size, cin=3, cout=width, kernel=3, stride=1, uses=1)]  # stem
    side, c = size, width
    for i in range(stages):
        out, stride = width * 2**i, 1 if i == 0 else 2
        convs.append(dict(side=side, cin=c, cout=out, kernel=3, stride=stride, uses=1))
        convs.append(dict(side=side // stride, cin=out, cout=out, kernel=3, stride=1, uses=1))
        if stride > 1:
            convs.append(dict(side=side, cin=c, cout=out, kernel=1, stride=2, uses=1))
        side, c = side // stride, out
    merged: dict[tuple, dict] = {}
    for cv in convs:
        key = tuple(cv[k] for k in ("side", "cin", "cout", "kernel", "stride"))
        merged.setdefault(key, {**cv, "uses": 0})["uses"] += cv["uses"]
    return list(merged.values())


def time_fwd_bwd(conv, x, w, stride: int, repeats: int) -> float:
    pad = w.shape[0] // 2

    def loss(x, w):
        y = conv(x, w, (stride, stride), ((pad, pad), (pad, pad)), dimension_numbers=DN)
        return jnp.sum(y * y)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(grad(x, w))
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = grad(x, w)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / repeats


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=512, help="views per step (2 x images)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    rows = []
    for cv in resnet_convs(args.width):
        x = jnp.asarray(rng.normal(size=(args.batch, cv["side"], cv["side"], cv["cin"])), "float32")
        w = jnp.asarray(rng.normal(size=(cv["kernel"],) * 2 + (cv["cin"], cv["cout"])), "float32")
        out_side = cv["side"] // cv["stride"]
        flops = 3 * 2 * args.batch * out_side**2 * cv["kernel"] ** 2 * cv["cin"] * cv["cout"]
        row = dict(cv)
        for impl in IMPLS:
            conv = conv_fn(impl, cv["stride"]) or lax.conv_general_dilated
            seconds = time_fwd_bwd(conv, x, w, cv["stride"], args.repeats)
            row[f"{impl}_seconds"] = seconds
            row[f"{impl}_gflops"] = flops / seconds / 1e9
        row["fastest"] = min(IMPLS, key=lambda impl: row[f"{impl}_seconds"])
        rows.append(row)
        name = (
            f"{cv['side']}x{cv['side']}x{cv['cin']} -> {cv['cout']}, {cv['kernel']}x{cv['kernel']}"
        )
        rates = "  ".join(f"{impl} {row[f'{impl}_gflops']:6.1f}" for impl in IMPLS)
        print(f"{name:28s} s{cv['stride']}  GFLOP/s: {rates}", flush=True)
    per_pass = {impl: sum(r["uses"] * r[f"{impl}_seconds"] for r in rows) for impl in IMPLS}
    for impl, seconds in per_pass.items():
        print(f"all convolutions, fwd + bwd, conv_impl={impl}: {seconds:.3f} s", flush=True)
    date = datetime.date.today().isoformat()
    result = {
        "command": "python benchmarks/conv_impl.py " + " ".join(argv or sys.argv[1:]),
        "date": date,
        "jax": jax.__version__,
        "machine": f"{os.cpu_count()} cores, loadavg {os.getloadavg()}",
        "width": args.width,
        "batch": args.batch,
        "convs": rows,
        "seconds_per_pass": per_pass,
    }
    write_result(result, f"conv_impl_w{args.width}_b{args.batch}_{date}.json", args.out)
    return result


if __name__ == "__main__":
    main()
