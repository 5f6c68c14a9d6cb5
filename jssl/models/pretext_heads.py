"""Classifier networks of the pretext tasks that predict a transformation.

- :class:`TransformClassifier` (rotation): backbone -> a head over its feature
  map (flattened, :class:`AttentionPool`-ed or globally pooled) -> logits;
- :class:`PartsClassifier` (jigsaw, context): a shared backbone over the parts
  of each example (tiles, patches) -> :class:`SetClassifierHead` -> logits.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import pretext

Dtype = Any
HEADS = ("spatial", "attention", "gap")  # TransformClassifier.head


class AttentionPool(nn.Module):
    """One learned query attends over the h*w positions (with learned position
    embeddings, so the pooling keeps layout); ``[B, h, w, C]`` -> ``[B, C]``."""

    num_heads: int = 4
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, fmap: jax.Array) -> jax.Array:
        b, h, w, c = fmap.shape
        heads = self.num_heads if c % self.num_heads == 0 else 1
        tokens = fmap.reshape(b, h * w, c).astype(self.dtype)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (h * w, c), jnp.float32)
        tokens = tokens + pos.astype(self.dtype)
        query = self.param("query", nn.initializers.normal(0.02), (heads, c // heads), jnp.float32)
        dense = lambda name: nn.DenseGeneral(
            (heads, c // heads), dtype=self.dtype, param_dtype=jnp.float32, name=name
        )
        k, v = dense("key")(tokens), dense("value")(tokens)  # [B, T, heads, d]
        logits = jnp.einsum("hd,bthd->bht", query.astype(self.dtype), k) / jnp.sqrt(c // heads)
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        return jnp.einsum("bht,bthd->bhd", attn, v).reshape(b, c).astype(jnp.float32)


class TransformClassifier(nn.Module):
    """backbone -> head over its feature map -> ``num_classes`` logits.

    Call: ``x [B, H, W, C]`` -> ``(logits [B, num_classes], aux)`` with
    ``aux["features"]`` the backbone's pooled output (used by evaluation).
    """

    backbone: nn.Module
    head: str = "spatial"
    num_classes: int = 4
    hidden_dim: int = 0  # > 0: one hidden ReLU layer in the head
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        if self.head not in HEADS:
            raise ValueError(f"Unknown rotation head {self.head!r}; valid: {', '.join(HEADS)}.")
        h, aux = self.backbone(x, train=train)
        fmap = aux["feature_map"]
        if self.head == "spatial":
            y = fmap.reshape(fmap.shape[0], -1)
        elif self.head == "attention":
            y = AttentionPool(dtype=self.dtype)(fmap)
        else:
            y = h
        if self.hidden_dim:
            y = nn.relu(nn.Dense(self.hidden_dim, dtype=self.dtype, param_dtype=jnp.float32)(y))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32)(y)
        return logits.astype(jnp.float32), {**aux, "features": h}


def standardize_images(x: jax.Array) -> jax.Array:
    """Per-image standardisation of [..., H, W, C] over (H, W, C)."""
    return jax.vmap(pretext.standardize_tile)(x.reshape(-1, *x.shape[-3:])).reshape(x.shape)


class SetClassifierHead(nn.Module):
    """Per-part features [B, T, D] -> shared Dense+ReLU per part -> concat -> MLP -> logits.

    The concatenation keeps the order of the parts, which is what the jigsaw
    and context tasks ask about.
    """

    num_classes: int
    part_dim: int = 64
    hidden_dim: int = 256
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=jnp.float32, name=name)
        y = nn.relu(dense(self.part_dim, "part")(h.astype(self.dtype)))
        y = y.reshape(h.shape[0], -1)
        if self.hidden_dim:
            y = nn.relu(dense(self.hidden_dim, "hidden")(y))
        return dense(self.num_classes, "out")(y).astype(jnp.float32)


class PartsClassifier(nn.Module):
    """Shared backbone over the parts of each example, then a SetClassifierHead.

    Call with parts ``[B, T, h, w, C]`` -> ``(logits [B, num_classes], aux)``
    (training); with images ``[B, H, W, C]`` -> ``(features [B, D], aux)`` with
    ``aux["features"]`` the backbone's pooled features (evaluation). Init with
    images also creates the head's parameters.
    """

    backbone: nn.Module
    num_parts: int
    num_classes: int
    part_dim: int = 64
    hidden_dim: int = 256
    standardize: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        head = SetClassifierHead(
            self.num_classes, self.part_dim, self.hidden_dim, self.dtype, name="head"
        )
        if self.standardize:
            x = standardize_images(x)
        if x.ndim == 5:
            b, t = x.shape[:2]
            if t != self.num_parts:
                raise ValueError(f"expected {self.num_parts} parts per example, got {t}")
            h, aux = self.backbone(x.reshape(b * t, *x.shape[2:]), train=train)
            parts = h.reshape(b, t, -1)
            return head(parts), {"features": jnp.mean(parts, axis=1)}
        h, aux = self.backbone(x, train=train)
        if self.is_initializing():  # create the head's parameters from whole images
            head(jnp.repeat(h[:, None], self.num_parts, axis=1))
        return h, {**aux, "features": h}
