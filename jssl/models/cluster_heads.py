"""H linear clustering heads on shared features (SeLa, SCAN, self-labelling)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ClusterHeads(nn.Module):
    """H linear clustering heads on the same features: [B, D] -> logits [H, B, K] float32.

    Parameters ``kernel`` [H, D, K] and ``bias`` [H, K], so one head is a slice.
    """

    num_heads: int
    num_clusters: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, *, train: bool) -> jax.Array:
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        kernel = self.param("kernel", init, (self.num_heads, h.shape[-1], self.num_clusters))
        bias = self.param("bias", nn.initializers.zeros, (self.num_heads, self.num_clusters))
        logits = jnp.einsum("bd,hdk->hbk", h.astype(self.dtype), kernel.astype(self.dtype))
        return logits.astype(jnp.float32) + bias[:, None, :]
