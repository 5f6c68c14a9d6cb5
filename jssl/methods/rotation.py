"""Rotation prediction (Gidaris et al. 2018): 4-way classification of 0/90/180/270 degrees.

Every image of the batch is shown at all four rotations (example-major, so the
4B rotated copies stay on the device holding their example; BatchNorm statistics
are those of the whole 4B batch).

The head decides what the task can use. ``head="spatial"`` flattens the
backbone's feature map into a linear layer and ``head="attention"`` pools it
with a learned query over position-embedded locations: both see *where* things
are. ``head="gap"`` classifies the globally average-pooled features, which
have thrown the layout away, so rotation must be read from orientation-
selective channels alone: the "GAP trap" (REFERENCE.md). Evaluation always uses
the backbone's pooled features ``aux["features"]``, whatever the head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jssl import pretext
from jssl.methods.base import Method, classification_loss
from jssl.models import create_model

Dtype = Any
HEADS = ("spatial", "attention", "gap")


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


def build_model(config: ml_collections.ConfigDict) -> TransformClassifier:
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    rc = config.rotation
    return TransformClassifier(
        backbone=backbone, head=rc.head, num_classes=4, hidden_dim=rc.hidden_dim, dtype=dtype
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(rotated [4B, S, S, C], labels [4B]): a crop/flip view of each image at 4 angles."""
    a = config.augment
    x = pretext.crop_flip_views(
        key, batch["image"], size=a.crop_size, scale=tuple(a.scale), flip=a.flip
    )
    return pretext.all_rotations(x)


def make_loss(model, config: ml_collections.ConfigDict):
    return classification_loss(model, "rotation_acc")


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    # The 4-way loss stuck at ln 4 means the head sees nothing that depends on rotation.
    if "rotation_acc" in metrics and metrics["rotation_acc"] < 0.3 and metrics["loss"] > 1.35:
        return [
            f"rotation accuracy {metrics['rotation_acc']:.3f} is at chance (loss "
            f"{metrics['loss']:.3f} ~ ln 4): the head cannot tell the rotations apart"
        ]
    return []


ROTATION = Method(
    name="rotation",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
)
