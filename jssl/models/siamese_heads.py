"""The siamese methods' projectors: MLPs whose last Linear has no bias."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jssl.models.layers import batch_norm

Dtype = Any


class SiameseProjector(nn.Module):
    """(Linear-BN-ReLU) for each hidden width, then a bias-free Linear [-> BatchNorm(affine=False)].

    ``MLPHead`` with no bias on the last Linear, as the authors' projectors:
    BYOL's projector and predictor (deepmind-research/byol ``MLP``: last
    ``hk.Linear(with_bias=False)``), Barlow Twins' projector and VICReg's
    expander (last ``nn.Linear(bias=False)``). A bias there would be a null
    direction of the loss: BYOL's predictor starts with BatchNorm, and Barlow
    Twins and VICReg centre each dimension over the batch, so its gradient is
    rounding noise, which Adam would turn into full-size steps.

    ``out_bn=True`` is SimSiam's projector (facebookresearch/simsiam
    ``builder.py``): the last Linear (its bias frozen there, absent here) is
    followed by ``BatchNorm1d(dim, affine=False)``, a BatchNorm without scale
    or shift (its running statistics are in ``batch_stats`` as ``output_bn``).

    Hidden Linear layers have no bias when followed by BN (BN's shift replaces it).

    Attributes:
      hidden_dims: width of each hidden layer; () gives a single Linear.
      out_dim: output width.
      use_bn: BatchNorm after each hidden Linear.
      out_bn: BatchNorm without affine on the output (SimSiam).
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, D]``, ``train`` -> ``[B, out_dim]`` float32.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True
    out_bn: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = x.astype(self.dtype)
        for width in self.hidden_dims:
            x = nn.Dense(
                width, use_bias=not self.use_bn, dtype=self.dtype, param_dtype=jnp.float32
            )(x)
            if self.use_bn:
                x = batch_norm(train, dtype=self.dtype)(x)
            x = nn.relu(x)
        x = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)(x)
        if self.out_bn:
            x = nn.BatchNorm(
                use_running_average=not train,
                use_scale=False,
                use_bias=False,
                momentum=0.9,
                epsilon=1e-5,
                dtype=self.dtype,
                param_dtype=jnp.float32,
                name="output_bn",
            )(x)
        return x.astype(jnp.float32)
