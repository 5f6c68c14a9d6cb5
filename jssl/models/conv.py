"""Ways to compute a model's convolutions, drop-ins for ``lax.conv_general_dilated``.

Flax's ``nn.Conv(conv_general_dilated=...)`` takes the function, so parameters,
their names and checkpoints are the same under every choice; on accelerators
keep XLA's convolutions (the default). ``CONV_IMPLS`` names the choices a model
accepts (``conv_impl=``):

- ``"auto"`` (the default): ``"chunked_grad"`` when JAX's default backend is
  the CPU, ``"xla"`` on accelerators.
- ``"xla"``: ``lax.conv_general_dilated``.
- ``"im2col"``: every convolution as patches + one matmul: the k*k shifted
  windows gathered into one [N, H', W', k*k*C] array times the reshaped kernel.
- ``"im2col_strided"``: only convolutions with a stride > 1 as im2col; the
  others stay XLA's. On XLA:CPU strided convolutions of narrow networks run
  1.5-3x faster as im2col, stride-1 ones as fast or faster in XLA's own kernel
  (benchmarks/conv_impl.py).
- ``"chunked_grad"``: XLA's convolution (strided 1x1 ones as a slice and a
  matmul), its backward pass computed batch chunk by batch chunk (about
  ``CHUNK_BYTES`` of input each, at most ``MAX_CHUNKS``). XLA:CPU computes a
  kernel gradient as a convolution over the batch after transposing the
  activations and output gradients to batch-last; over a whole batch those
  transposes leave the cache and cost more than the convolutions themselves
  (docs/results.md, "Where the step's time goes, per op"). Chunked, the CPU
  step of the width-16 ResNet runs about 1.6x faster and ResNet-18's 2x.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "im2col", "im2col_strided", "chunked_grad")
CHUNK_BYTES = 1 << 20
# At most this many chunks per convolution: the chunks are unrolled in the program, and
# XLA's compile time grows faster than their number (SimCLR's ResNet-18 preset at batch
# 512: 181 s with 128 chunks in the first stage, 32 s with 32); larger batches get
# larger chunks.
MAX_CHUNKS = 32
NHWC = ("NHWC", "HWIO", "NHWC")


def _plain(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, groups) -> bool:
    """True for an undilated, ungrouped 2-D NHWC x HWIO convolution."""
    plain = (
        lhs.ndim == 4
        and rhs.ndim == 4
        and dimension_numbers is not None  # None means NCHW x OIHW in lax
        and groups == (1, 1)
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
    )
    # The layouts may come as strings or as ConvDimensionNumbers.
    return plain and lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, dimension_numbers
    ) == lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)


def _explicit(padding, lhs_shape, kernel_shape, strides) -> tuple:
    """Padding as ((top, bottom), (left, right)) ints, hashable."""
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs_shape[1:3], kernel_shape[:2], strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _patches_matmul(lhs, rhs, strides, padding, precision=None, preferred_element_type=None):
    """A plain convolution as patches @ reshaped kernel."""
    kh, kw, cin, cout = rhs.shape
    sh, sw = strides
    (pt, pb), (pl, pr) = padding
    x = jnp.pad(lhs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho = (x.shape[1] - kh) // sh + 1
    wo = (x.shape[2] - kw) // sw + 1
    windows = [
        x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    # Row (i * kw + j) * cin + c of the reshaped HWIO kernel multiplies window (i, j), channel c.
    patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
    return lax.dot_general(
        patches,
        rhs.reshape(kh * kw * cin, cout),
        (((3,), (0,)), ((), ())),
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


def _chunk_conv(lhs, rhs, strides, padding, precision=None, preferred_element_type=None):
    """``chunked_grad``'s convolution of a whole batch or a chunk: XLA's, except a strided 1x1
    one, which is a strided slice and one matmul (2-3x faster on XLA:CPU,
    benchmarks/conv_impl.py)."""
    if rhs.shape[:2] == (1, 1) and max(strides) > 1:
        return _patches_matmul(lhs, rhs, strides, padding, precision, preferred_element_type)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        strides,
        padding,
        dimension_numbers=NHWC,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _chunked_grad(lhs, rhs, strides, padding, precision, preferred_element_type):
    return _chunk_conv(lhs, rhs, strides, padding, precision, preferred_element_type)


def _chunked_grad_fwd(lhs, rhs, *options):
    return _chunk_conv(lhs, rhs, *options), (lhs, rhs)


def _chunked_grad_bwd(strides, padding, precision, preferred_element_type, residuals, g):
    """Both gradients, batch chunk by batch chunk: the input gradients concatenated, the
    kernel gradients summed."""
    lhs, rhs = residuals
    n = lhs.shape[0]
    chunks = max(1, min(n, MAX_CHUNKS, lhs.size * lhs.dtype.itemsize // CHUNK_BYTES))
    while n % chunks:
        chunks -= 1
    conv = functools.partial(
        _chunk_conv,
        strides=strides,
        padding=padding,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    parts = zip(jnp.split(lhs, chunks), jnp.split(g, chunks), strict=True)
    dxs, dws = zip(*(jax.vjp(conv, x, rhs)[1](g_part) for x, g_part in parts), strict=True)
    return jnp.concatenate(dxs), sum(dws[1:], dws[0])


_chunked_grad.defvjp(_chunked_grad_fwd, _chunked_grad_bwd)


def _dispatch(kernel):
    """A ``lax.conv_general_dilated`` drop-in computing plain convolutions with ``kernel``."""

    @functools.wraps(kernel)
    def conv(
        lhs,
        rhs,
        window_strides: Sequence[int],
        padding,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers=None,
        feature_group_count: int = 1,
        batch_group_count: int = 1,
        precision=None,
        preferred_element_type=None,
    ):
        groups = (feature_group_count, batch_group_count)
        if not _plain(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, groups):
            return lax.conv_general_dilated(
                lhs,
                rhs,
                window_strides,
                padding,
                lhs_dilation=lhs_dilation,
                rhs_dilation=rhs_dilation,
                dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count,
                batch_group_count=batch_group_count,
                precision=precision,
                preferred_element_type=preferred_element_type,
            )
        strides = tuple(int(s) for s in window_strides)
        padding = _explicit(padding, lhs.shape, rhs.shape, strides)
        return kernel(lhs, rhs, strides, padding, precision, preferred_element_type)

    return conv


@_dispatch
def im2col_conv(lhs, rhs, strides, padding, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` for 2-D NHWC x HWIO convolutions, as patches @ kernel.

    Handles any kernel size, strides and explicit or "SAME"/"VALID" padding.
    Cases it does not cover (dilation, grouped convolutions, other layouts or
    ranks) are passed on to ``lax.conv_general_dilated`` unchanged, so it is
    safe to use for every convolution of a model.
    """
    return _patches_matmul(lhs, rhs, strides, padding, precision, preferred_element_type)


@_dispatch
def chunked_grad_conv(lhs, rhs, strides, padding, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` with its backward pass computed batch chunk by chunk.

    The forward is XLA's convolution (a strided 1x1 one: a strided slice and one
    matmul). The backward takes the batch in chunks of about ``CHUNK_BYTES`` of
    input: their input gradients concatenated, their kernel gradients summed.
    Cases other than 2-D NHWC x HWIO go to XLA unchanged, as in ``im2col_conv``.
    """
    return _chunked_grad(lhs, rhs, strides, padding, precision, preferred_element_type)


def conv_fn(impl: str, stride: int):
    """The ``conv_general_dilated`` for ``nn.Conv`` under ``impl`` (None: Flax's default)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"Unknown conv_impl {impl!r}; valid: {', '.join(CONV_IMPLS)}.")
    if impl == "auto":
        impl = "chunked_grad" if jax.default_backend() == "cpu" else "xla"
    if impl == "chunked_grad":
        return chunked_grad_conv
    if impl == "im2col" or (impl == "im2col_strided" and stride > 1):
        return im2col_conv
    return None
