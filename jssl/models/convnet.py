"""A small VGG-style conv net for 8x8 to 32x32 inputs (digits, CIFAR smoke runs)."""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jssl.models.layers import batch_norm

Dtype = Any


class ConvNet(nn.Module):
    """Stages of conv3x3-BN-ReLU, 2x2 max-pool between stages, then global average pooling.

    Spatial size halves between stages while it is at least 2, so 8x8 inputs end
    at 2x2 and 32x32 at 8x8 with the default three stages.

    Attributes:
      widths: channels of each stage.
      convs_per_stage: conv3x3-BN-ReLU layers in each stage.
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, H, W, C]`` float, ``train`` -> ``(features [B, widths[-1]] float32,
    {"feature_map": [B, h, w, widths[-1]] float32})``.
    """

    widths: Sequence[int] = (32, 64, 128)
    convs_per_stage: int = 1
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Size of the pooled features."""
        return self.widths[-1]

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> tuple[jnp.ndarray, dict]:
        if x.ndim != 4:
            raise ValueError(f"ConvNet expects images [B, H, W, C]; got shape {x.shape}.")
        x = x.astype(self.dtype)
        for i, width in enumerate(self.widths):
            if i > 0 and min(x.shape[1:3]) >= 2:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for _ in range(self.convs_per_stage):
                x = nn.Conv(
                    width,
                    (3, 3),
                    padding=1,
                    use_bias=False,
                    dtype=self.dtype,
                    param_dtype=jnp.float32,
                )(x)
                x = batch_norm(train, dtype=self.dtype)(x)
                x = nn.relu(x)
        feature_map = x.astype(jnp.float32)
        return jnp.mean(feature_map, axis=(1, 2)), {"feature_map": feature_map}
