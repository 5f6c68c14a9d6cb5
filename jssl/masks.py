"""I-JEPA's multi-block masks as a jittable function of a key, with static shapes.

Written from facebookresearch/ijepa ``src/masks/multiblock.py`` (``MaskCollator``), with the
values of every released config (``num_pred_masks: 4``, ``pred_mask_scale: (0.15, 0.2)``,
``aspect_ratio: (0.75, 1.5)``, ``num_enc_masks: 1``, ``enc_mask_scale: (0.85, 1.0)``,
``min_keep: 10``, ``allow_overlap: false``):

- one uniform draw sets a block's scale and aspect ratio together, once per batch for the
  target blocks and once for the context block (aspect 1): ``max_keep = int(H W scale)``,
  ``h = round(sqrt(max_keep ar))``, ``w = round(sqrt(max_keep / ar))``, each lowered until
  it is under the grid's side;
- top-left corners per image and block, ``randint(0, H - h)`` and ``randint(0, W - w)``;
- the context block keeps only the patches outside every target block of its image; a
  corner that leaves ``min_keep`` patches or fewer is drawn again, and after 20 failures
  the last target block stops constraining it (then the next, ...);
- every mask of the batch is truncated to the smallest count in the batch (its first
  patches in row-major order). The official batch is one GPU's (128 images in the
  released configs): ``group`` truncates within groups of that many consecutive images
  of the global batch, so the result does not depend on the number of devices.

Static shapes: the indices are padded to the largest count the scale and aspect ranges
allow, with a ``valid`` mask marking the tokens kept (the official code's truncated
count); the retries are 20 candidate corners per relaxation level, the first valid one
taken, as the official loop would.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["BlockMasks", "block_size", "largest_block", "multiblock_masks"]

_TRIES = 20  # corners per relaxation level (the official timeout)


class BlockMasks(NamedTuple):
    """Patch indices (row-major in a gh x gw grid) and which of them count."""

    context: jax.Array  # int32 [N, Kc]
    context_valid: jax.Array  # bool [N, Kc]: the first kc (its group's smallest count)
    targets: jax.Array  # int32 [M, N, Kt]
    targets_valid: jax.Array  # bool [M, N, Kt]: the first h * w


def block_size(r, grid: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float]):
    """(h, w) of a block from one uniform draw ``r`` (a float or a traced scalar)."""
    height, width = grid
    s = scale[0] + r * (scale[1] - scale[0])
    max_keep = jnp.floor(height * width * s)
    ar = aspect[0] + r * (aspect[1] - aspect[0])
    h = jnp.minimum(jnp.round(jnp.sqrt(max_keep * ar)), height - 1)
    w = jnp.minimum(jnp.round(jnp.sqrt(max_keep / ar)), width - 1)
    return jnp.maximum(h, 1).astype(jnp.int32), jnp.maximum(w, 1).astype(jnp.int32)


def largest_block(grid: tuple[int, int], scale, aspect) -> int:
    """A static bound on h * w over the scale and aspect ranges (the padded token count)."""
    height, width = grid
    most = math.floor(height * width * scale[1])
    h = min(height - 1, round(math.sqrt(most * max(aspect))))
    w = min(width - 1, round(math.sqrt(most / min(aspect))))
    return max(h, 1) * max(w, 1)


def _blocks(key, shape, grid, h, w) -> jax.Array:
    """bool [*shape, H * W]: blocks of h x w at uniform top-left corners."""
    height, width = grid
    k_top, k_left = jax.random.split(key)
    top = jax.random.randint(k_top, shape, 0, height - h)
    left = jax.random.randint(k_left, shape, 0, width - w)
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    t, lft = top[..., None, None], left[..., None, None]
    inside = (rows >= t) & (rows < t + h) & (cols >= lft) & (cols < lft + w)
    return inside.reshape(*shape, height * width)


def _first(mask: jax.Array, count: int) -> jax.Array:
    """int32 [..., count]: the positions of the True entries first, in order."""
    order = jnp.argsort(jnp.logical_not(mask).astype(jnp.int32), axis=-1, stable=True)
    return order[..., :count].astype(jnp.int32)


def multiblock_masks(
    key: jax.Array,
    batch: int,
    grid: tuple[int, int],
    *,
    num_targets: int = 4,
    target_scale: tuple[float, float] = (0.15, 0.2),
    target_aspect: tuple[float, float] = (0.75, 1.5),
    context_scale: tuple[float, float] = (0.85, 1.0),
    min_keep: int = 10,
    group: int | None = None,
) -> BlockMasks:
    """I-JEPA's context and target blocks of ``batch`` images on a ``grid`` of patches; the
    context masks truncated to the smallest count of each ``group`` of consecutive images
    (None: the whole batch)."""
    height, width = grid
    if height < 2 or width < 2:
        raise ValueError(f"multiblock_masks needs a grid of at least 2 x 2 patches, got {grid}")
    k_size, k_targets, k_context = jax.random.split(key, 3)
    r_target, r_context = jax.random.uniform(k_size, (2,))
    th, tw = block_size(r_target, grid, target_scale, target_aspect)
    ch, cw = block_size(r_context, grid, context_scale, (1.0, 1.0))
    targets = _blocks(k_targets, (num_targets, batch), grid, th, tw)  # [M, N, L]

    # Context candidates: _TRIES corners per level; level j drops the last j target blocks.
    levels = num_targets + 1
    candidates = _blocks(k_context, (levels, _TRIES, batch), grid, ch, cw)  # [J, T, N, L]
    keep_target = jnp.arange(num_targets)[None, :] < (num_targets - jnp.arange(levels))[:, None]
    blocked = jnp.any(targets[None] & keep_target[:, :, None, None], axis=1)  # [J, N, L]
    allowed = candidates & jnp.logical_not(blocked)[:, None]
    counts = jnp.sum(allowed, axis=-1).reshape(levels * _TRIES, batch)
    ok = counts > min_keep
    pick = jnp.where(jnp.any(ok, axis=0), jnp.argmax(ok, axis=0), levels * _TRIES - 1)  # [N]
    context = jnp.take_along_axis(
        allowed.reshape(levels * _TRIES, batch, -1), pick[None, :, None], axis=0
    )[0]  # [N, L]

    kt = largest_block(grid, target_scale, target_aspect)
    kc = largest_block(grid, context_scale, (1.0, 1.0))
    group = batch if group is None else min(group, batch)
    counts = jnp.sum(context, axis=-1)  # [N]
    padded = jnp.pad(counts, (0, -batch % group), constant_values=kc + 1)
    kept = jnp.repeat(jnp.min(padded.reshape(-1, group), axis=1), group)[:batch]  # [N]
    return BlockMasks(
        context=_first(context, kc),
        context_valid=jnp.arange(kc)[None, :] < kept[:, None],
        targets=_first(targets, kt),
        targets_valid=jnp.broadcast_to(jnp.arange(kt) < th * tw, (num_targets, batch, kt)),
    )
