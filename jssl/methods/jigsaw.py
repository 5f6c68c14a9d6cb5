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

import math

import jax
import jax.numpy as jnp
import ml_collections

from jssl import pretext
from jssl.checks import PROBABILITY, SIZE, WIDTH, boolean, integer, pair
from jssl.methods.base import Method, classification_loss
from jssl.models import PartsClassifier, create_model


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


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    return classification_loss(model, "permutation_acc")


def check(values: dict) -> list[str]:
    out = []
    grid, size = values.get("jigsaw.grid"), values.get("jigsaw.image_size")
    tile = values.get("jigsaw.tile_size")
    if grid and size is not None and tile is not None and tile > size // grid:
        out.append(
            f"jigsaw.tile_size={tile}: larger than a cell of the {size} px image "
            f"({grid}x{grid} cells of {size // grid} px); use at most {size // grid}, or "
            "raise jigsaw.image_size"
        )
    perms = values.get("jigsaw.num_permutations")
    if grid and perms is not None and perms > math.factorial(grid * grid):
        most = math.factorial(grid * grid)
        out.append(
            f"jigsaw.num_permutations={perms}: a {grid}x{grid} grid has only "
            f"{most} permutations; use at most {most}"
        )
    return out


JIGSAW = Method(
    name="jigsaw",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    fields={
        "augment.crop_size": SIZE,
        "jigsaw.grid": integer(2, 3),
        "jigsaw.num_permutations": integer(1),
        "jigsaw.perm_seed": integer(0, 2**32 - 1),
        "jigsaw.image_size": SIZE,
        "jigsaw.tile_size": SIZE,
        "jigsaw.scale": pair(),
        "jigsaw.jitter": boolean,
        "jigsaw.gray_p": PROBABILITY,
        "jigsaw.standardize": boolean,
        "jigsaw.tile_dim": WIDTH,
        "jigsaw.hidden_dim": WIDTH,
    },
    check=check,
)
