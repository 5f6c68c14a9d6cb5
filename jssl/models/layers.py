"""Layer helpers shared by the models."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any


def batch_norm(
    train: bool,
    *,
    dtype: Dtype,
    momentum: float = 0.9,
    epsilon: float = 1e-5,
    zero_scale: bool = False,
    name: str | None = None,
) -> nn.BatchNorm:
    """The models' BatchNorm: batch statistics when training, running averages otherwise.

    ``dtype`` is the compute dtype (parameters are float32); ``zero_scale``
    initialises the scale to 0 instead of 1 (zero-init residual branches).
    Called inside a parent's ``@nn.compact`` method, the layer is named as an
    ``nn.BatchNorm`` created there directly (``BatchNorm_0``, ... unless ``name``).
    """
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=momentum,
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
        name=name,
    )
