"""Context prediction (Doersch et al. 2015): where is the second patch relative to the first?

A centre patch and one of its 8 neighbours (with a gap and independent jitter,
so edges and lines cannot simply be continued) go through the shared backbone;
the two features, concatenated in order, are classified into the 8 relative
positions. ``colour_drop_p`` drops 2 of the 3 colour channels of each patch
(replaced by faint noise) so chromatic aberration cannot reveal the position;
``gray_p`` is the milder alternative. As for jigsaw, every input is standardised
inside the model (see :mod:`jssl.methods.jigsaw`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import pretext
from jssl.checks import MAX_SIDE, PROBABILITY, SIZE, WIDTH, boolean, integer, pair
from jssl.errors import UserError
from jssl.methods.base import Method, classification_loss
from jssl.models import PartsClassifier, create_model


def build_model(config: ml_collections.ConfigDict) -> PartsClassifier:
    dtype = jnp.dtype(config.model.dtype)
    cc = config.context
    span = pretext.context_span(cc.patch_size, cc.gap, cc.jitter)
    if span > cc.image_size:
        raise UserError(
            f"context.image_size={cc.image_size} cannot hold 3 patches of {cc.patch_size} px "
            f"with gap {cc.gap} and jitter {cc.jitter} (needs {span}); raise image_size or "
            "lower patch_size, gap or jitter."
        )
    return PartsClassifier(
        backbone=create_model(config.model.name, dtype=dtype, **config.model.kwargs),
        num_parts=2,
        num_classes=8,
        part_dim=cc.patch_dim,
        hidden_dim=cc.hidden_dim,
        standardize=cc.standardize,
        dtype=dtype,
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(pairs [B, 2, patch, patch, C] (centre first), position labels [B] in [0, 8))."""
    cc = config.context
    return pretext.context_views(
        key,
        batch["image"],
        size=cc.image_size,
        patch=cc.patch_size,
        gap=cc.gap,
        jitter=cc.jitter,
        scale=tuple(cc.scale),
        colour_drop_p=cc.colour_drop_p,
        gray_p=cc.gray_p,
        standardize=False,  # the model standardises every input itself
    )


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    return classification_loss(model, "position_acc")


def check(values: dict) -> list[str]:
    size = values.get("context.image_size")
    patch, gap, jit = (values.get(f"context.{f}") for f in ("patch_size", "gap", "jitter"))
    if None not in (size, patch, gap, jit) and 3 * patch + 2 * gap + 2 * jit > size:
        need = 3 * patch + 2 * gap + 2 * jit
        return [
            f"context.image_size={size}: cannot hold 3 patches of {patch} px with "
            f"gap {gap} and jitter {jit} (needs {need}); raise image_size to {need} or "
            "lower patch_size, gap or jitter"
        ]
    return []


CONTEXT = Method(
    name="context",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    fields={
        "augment.crop_size": SIZE,
        "context.image_size": SIZE,
        "context.patch_size": SIZE,
        "context.gap": integer(0, MAX_SIDE),
        "context.jitter": integer(0, MAX_SIDE),
        "context.scale": pair(),
        "context.colour_drop_p": PROBABILITY,
        "context.gray_p": PROBABILITY,
        "context.standardize": boolean,
        "context.patch_dim": WIDTH,
        "context.hidden_dim": WIDTH,
    },
    check=check,
)
