"""Jigsaw puzzles (Noroozi & Favaro 2016): which of P permutations shuffled the 3x3 tiles?

Each example is cropped, cut into a grid of tiles with random gaps (each tile
jittered inside its cell), shuffled by one of P permutations chosen greedily
for a large minimum Hamming distance (``pretext.permutation_set``), and every
tile goes through the *shared* backbone; the per-tile features are embedded by
one shared layer, concatenated in the shuffled order and classified into P
classes.

Every input the backbone sees, tile or whole image (evaluation), is first
standardised to zero mean and unit variance over its pixels (Noroozi's
per-tile normalisation, against low-level shortcuts). Doing it inside the model
keeps training (tiles) and evaluation (whole images) on the same input
statistics, so BatchNorm's running averages fit both.
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


def build_model(config: ml_collections.ConfigDict) -> PartsClassifier:
    dtype = jnp.dtype(config.model.dtype)
    jc = config.jigsaw
    return PartsClassifier(
        backbone=create_model(config.model.name, dtype=dtype, **config.model.kwargs),
        num_parts=jc.grid**2,
        num_classes=jc.num_permutations,
        part_dim=jc.tile_dim,
        hidden_dim=jc.hidden_dim,
        standardize=jc.standardize,
        dtype=dtype,
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(tiles [B, grid^2, tile, tile, C], permutation labels [B])."""
    jc = config.jigsaw
    perms = pretext.permutation_set(jc.num_permutations, num_tiles=jc.grid**2, seed=jc.perm_seed)
    return pretext.jigsaw_views(
        key,
        batch["image"],
        perms,
        size=jc.image_size,
        tile=jc.tile_size,
        grid=jc.grid,
        scale=tuple(jc.scale),
        jitter=jc.jitter,
        gray_p=jc.gray_p,
        standardize=False,  # the model standardises every input itself
    )


def make_loss(model, config: ml_collections.ConfigDict):
    return classification_loss(model, "permutation_acc")


JIGSAW = Method(name="jigsaw", build_model=build_model, make_views=make_views, make_loss=make_loss)
