"""Rotation prediction (Gidaris et al. 2018): 4-way classification of 0/90/180/270 degrees.

Every image of the batch is shown at all four rotations (example-major, so the
4B rotated copies stay on the device holding their example; BatchNorm statistics
are those of the whole 4B batch).

The head decides what the task can use. ``head="spatial"`` flattens the
backbone's feature map into a linear layer and ``head="attention"`` pools it
with a learned query over position-embedded locations: both see *where* things
are. ``head="gap"`` classifies the globally average-pooled features, which
have thrown the layout away, so rotation must be read from orientation-
selective channels alone (Gidaris et al., 2018, compare their spatial heads with
pooled ones). Evaluation always uses
the backbone's pooled features ``aux["features"]``, whatever the head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import pretext
from jssl.checks import MAX_WIDTH, integer, one_of
from jssl.methods import parts
from jssl.methods.base import Method, classification_loss
from jssl.models import TransformClassifier, create_model
from jssl.models.pretext_heads import HEADS


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


def make_loss(model, config: ml_collections.ConfigDict, run=None):
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
    fields={
        **parts.CROP_FLIP_FIELDS,
        "rotation.head": one_of(tuple(HEADS), "rotation.head"),
        "rotation.hidden_dim": integer(0, MAX_WIDTH),
    },
)
