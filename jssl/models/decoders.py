"""Decoders: a backbone's feature map (or a code vector) back to an image.

Upsampling is ``resize (nearest or bilinear) + 3x3 conv`` by default. On XLA's
CPU backend a stride-2 transposed convolution has been reported ~100x slower
than PyTorch's (JAX issue 23783); benchmarks/decoders.py measures both on the
development machine (numbers in its docstring), and "transpose" stays available
as an option. Resize + conv also avoids the checkerboard artefacts of
transposed convolutions (Odena et al. 2016).

Works after every backbone of jssl.models: the number of x2 stages is
``ceil(log2(H / h))`` and the stage sizes are chosen so the last one lands
exactly on the output size (e.g. ConvNet 4x4 -> 8 -> 16, ResNet-18 with the
ImageNet stem at 96 px 3x3 -> 6 -> 12 -> 24 -> 48 -> 96).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.models.layers import batch_norm

Dtype = Any
UPSAMPLING = ("nearest", "bilinear", "transpose")


def stage_sizes(size: int, out_size: int) -> list[int]:
    """Sizes after each x2 stage from ``size`` up to ``out_size``: ceil(out / 2^(n-1-i))."""
    if out_size <= size:
        return []
    n = math.ceil(math.log2(out_size / size))
    return [math.ceil(out_size / 2 ** (n - 1 - i)) for i in range(n)]


class Decoder(nn.Module):
    """Feature map ``[B, h, w, C]`` -> image-like ``[B, H, W, out_channels]`` float32.

    Each stage: upsample x2 (to the stage size), conv3x3 (or a 4x4 stride-2
    transposed conv), BatchNorm, ReLU; then a final conv3x3 with bias and no
    activation (so the output is unbounded: pixels, ab values or logits).

    Attributes:
      widths: channels of each stage; () halves the input width at each stage,
        floored at ``min_width``. A shorter tuple repeats its last entry.
      min_width: floor of the default widths.
      upsample: "nearest", "bilinear" (jax.image.resize + conv) or "transpose".
      use_bn: BatchNorm after each stage's conv.
      dtype: compute dtype; parameters are always float32.

    Call: ``fmap``, ``out_shape=(H, W, C)``, ``train`` -> ``[B, H, W, C]`` float32.
    """

    widths: Sequence[int] = ()
    min_width: int = 16
    upsample: str = "nearest"
    use_bn: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, fmap: jax.Array, *, out_shape: tuple[int, int, int], train: bool
    ) -> jax.Array:
        if self.upsample not in UPSAMPLING:
            raise ValueError(
                f"Unknown decoder upsampling {self.upsample!r}; valid: {', '.join(UPSAMPLING)}."
            )
        if fmap.ndim != 4:
            raise ValueError(f"Decoder expects a feature map [B, h, w, C]; got {fmap.shape}.")
        out_h, out_w, out_c = out_shape
        b, h, w, c = fmap.shape
        hs, ws = stage_sizes(h, out_h), stage_sizes(w, out_w)
        n = max(len(hs), len(ws))
        hs = [out_h] * (n - len(hs)) + hs if len(hs) < n else hs
        ws = [out_w] * (n - len(ws)) + ws if len(ws) < n else ws
        x = fmap.astype(self.dtype)
        width = c
        for i in range(n):
            if self.widths:
                width = self.widths[min(i, len(self.widths) - 1)]
            else:
                width = max(self.min_width, width // 2)
            if self.upsample == "transpose":
                x = nn.ConvTranspose(
                    width,
                    (4, 4),
                    strides=(2, 2),
                    padding="SAME",
                    use_bias=not self.use_bn,
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                )(x)
                if x.shape[1:3] != (hs[i], ws[i]):  # odd target sizes: resample the x2 output
                    x = jax.image.resize(x, (b, hs[i], ws[i], width), "bilinear")
            else:
                x = jax.image.resize(x, (b, hs[i], ws[i], x.shape[-1]), self.upsample)
                x = nn.Conv(
                    width,
                    (3, 3),
                    padding=1,
                    use_bias=not self.use_bn,
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                )(x)
            if self.use_bn:
                x = batch_norm(train, dtype=self.dtype)(x)
            x = nn.relu(x)
        if x.shape[1:3] != (out_h, out_w):  # the feature map is larger than the output
            x = jax.image.resize(x, (b, out_h, out_w, x.shape[-1]), "bilinear")
        x = nn.Conv(out_c, (3, 3), padding=1, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return x.astype(jnp.float32)


class VectorDecoder(nn.Module):
    """A code vector ``[B, K]`` -> Dense -> ``seed_shape`` map -> :class:`Decoder`.

    For bottlenecks that are vectors (low-dimensional and sparse autoencoders,
    the VAE's latent).

    Call: ``code``, ``out_shape=(H, W, C)``, ``train`` -> ``[B, H, W, C]`` float32.
    """

    seed_shape: tuple[int, int, int]
    decoder: Decoder
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, code: jax.Array, *, out_shape: tuple[int, int, int], train: bool
    ) -> jax.Array:
        h, w, c = self.seed_shape
        x = nn.Dense(h * w * c, dtype=self.dtype, param_dtype=jnp.float32)(code.astype(self.dtype))
        x = nn.relu(x.reshape(code.shape[0], h, w, c))
        return self.decoder(x, out_shape=out_shape, train=train)
