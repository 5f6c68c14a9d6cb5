"""Convolution as patches + one matmul (im2col), a drop-in for ``lax.conv_general_dilated``.

On XLA's CPU backend, strided convolutions of narrow networks run 1.5-3x
faster as the k*k shifted windows gathered into one [N, H', W', k*k*C] array
times the reshaped kernel, while stride-1 convolutions are as fast or faster
in XLA's own kernel (benchmarks/conv_impl.py, every convolution of the width-16
CPU ResNet); the SimCLR step of that network ran 14-23% faster with
``im2col_strided`` (docs/results.md, "jssl against a PyTorch reference"). Flax's
``nn.Conv(conv_general_dilated=...)`` takes the function, so parameters, their
names and checkpoints are unchanged. On accelerators keep XLA's convolutions
(the default).

``CONV_IMPLS`` names the choices a model accepts (``conv_impl=``):

- ``"xla"``: ``lax.conv_general_dilated`` (the default everywhere).
- ``"im2col"``: every convolution as patches + matmul.
- ``"im2col_strided"``: only convolutions with a stride > 1 (the choice that
  measured fastest for that CPU step); the others stay XLA's.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("xla", "im2col", "im2col_strided")


def im2col_conv(
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
    """``lax.conv_general_dilated`` for 2-D NHWC x HWIO convolutions, as patches @ kernel.

    Handles any kernel size, strides and explicit or "SAME"/"VALID" padding.
    Cases it does not cover (dilation, grouped convolutions, other layouts or
    ranks) are passed on to ``lax.conv_general_dilated`` unchanged, so it is
    safe to use for every convolution of a model.
    """
    plain = (
        lhs.ndim == 4
        and rhs.ndim == 4
        and dimension_numbers is not None  # None means NCHW x OIHW in lax
        and feature_group_count == 1
        and batch_group_count == 1
        and all(d == 1 for d in (lhs_dilation or (1, 1)))
        and all(d == 1 for d in (rhs_dilation or (1, 1)))
    )
    if plain:  # the layouts as strings or as ConvDimensionNumbers
        dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        plain = dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    if not plain:
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
    kh, kw, cin, cout = rhs.shape
    sh, sw = window_strides
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
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


def conv_fn(impl: str, stride: int):
    """The ``conv_general_dilated`` for ``nn.Conv`` under ``impl`` (None: Flax's default)."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"Unknown conv_impl {impl!r}; valid: {', '.join(CONV_IMPLS)}.")
    if impl == "im2col" or (impl == "im2col_strided" and stride > 1):
        return im2col_conv
    return None
