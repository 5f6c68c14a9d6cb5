"""Projection / prediction heads."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Dtype = Any

_ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}


class MLPHead(nn.Module):
    """Linear-(BN)-activation for each hidden width, then a final Linear.

    Hidden Linear layers have no bias when followed by BN (BN's shift replaces it).
    SimCLR's projection is ``MLPHead((feature_dim,), 128)``.

    Attributes:
      hidden_dims: width of each hidden layer; () gives a single Linear.
      out_dim: output width.
      use_bn: BatchNorm after each hidden Linear.
      activation: "relu" or "gelu".
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, D]``, ``train`` -> ``[B, out_dim]`` float32.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True
    activation: str = "relu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {self.activation!r}; valid: {sorted(_ACTIVATIONS)}."
            )
        act = _ACTIVATIONS[self.activation]
        x = x.astype(self.dtype)
        for width in self.hidden_dims:
            x = nn.Dense(
                width, use_bias=not self.use_bn, dtype=self.dtype, param_dtype=jnp.float32
            )(x)
            if self.use_bn:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                )(x)
            x = act(x)
        x = nn.Dense(self.out_dim, dtype=self.dtype, param_dtype=jnp.float32)(x)
        return x.astype(jnp.float32)
