"""Decoder upsampling on XLA CPU: resize (nearest / bilinear) + conv3x3 vs transposed conv.

    python -m benchmarks.decoders [--batch 256] [--repeats 5]

Times one jitted forward + backward of a 2-stage decoder (the digits shape: a
ConvNet's 4x4x128 map -> 8x8x64 -> 16x16x32 -> 16x16x1, and the CIFAR shape
8x8x128 -> 16 -> 32) per upsampling mode, median of ``repeats`` runs.
"transpose" is a 4x4 stride-2 ConvTranspose (fewer FLOPs than resize + 3x3 conv:
16 taps per input pixel against 9 per output pixel, 0.44x).

Measured 2026-11-28, jax 0.10.2, 2-core dev machine shared with other jobs
(load ~7, so absolute times are inflated; one run each):

    (4, 4, 128) -> (16, 16, 1)  nearest      452 ms    566 img/s
    (4, 4, 128) -> (16, 16, 1)  bilinear     455 ms    563 img/s
    (4, 4, 128) -> (16, 16, 1)  transpose   1405 ms    182 img/s
    (8, 8, 128) -> (32, 32, 3)  nearest     3534 ms     72 img/s
    (8, 8, 128) -> (32, 32, 3)  bilinear    3632 ms     70 img/s
    (8, 8, 128) -> (32, 32, 3)  transpose  13260 ms     19 img/s

Transposed convolution is 3.1-3.8x slower than resize + conv on XLA CPU despite
doing less arithmetic, so jssl's decoders default to nearest resize + conv.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from jssl.models.decoders import Decoder


def time_decoder(upsample: str, batch: int, shape, out_shape, repeats: int) -> float:
    dec = Decoder(widths=(64, 32), upsample=upsample)
    fmap = jax.random.normal(jax.random.PRNGKey(0), (batch, *shape))
    variables = dec.init(jax.random.PRNGKey(1), fmap, out_shape=out_shape, train=False)
    target = jnp.zeros((batch, *out_shape))

    @jax.jit
    def step(params, batch_stats, x):
        def loss(p):
            y, _ = dec.apply(
                {"params": p, "batch_stats": batch_stats},
                x,
                out_shape=out_shape,
                train=True,
                mutable=["batch_stats"],
            )
            return jnp.mean(jnp.square(y - target))

        return jax.grad(loss)(params)

    args = (variables["params"], variables["batch_stats"], fmap)
    jax.block_until_ready(step(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, batch {args.batch}, fwd+bwd")
    for shape, out in (((4, 4, 128), (16, 16, 1)), ((8, 8, 128), (32, 32, 3))):
        for mode in ("nearest", "bilinear", "transpose"):
            t = time_decoder(mode, args.batch, shape, out, args.repeats)
            print(f"{shape} -> {out}  {mode:<10} {1000 * t:8.1f} ms  {args.batch / t:8.0f} img/s")


if __name__ == "__main__":
    main()
