"""I-JEPA (Assran et al., 2023): predict the target encoder's (layer-normalised) patch
features of a few target blocks from a context block, in feature space.

Written from facebookresearch/ijepa (``src/train.py:295-313``: the targets are
``F.layer_norm`` of the target encoder's output, gathered per target block by
``apply_masks`` (``src/masks/utils.py``), and the loss is ``F.smooth_l1_loss`` with its
mean reduction). On the global batch: the official all-reduce of the mean is the mean
over the global batch here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["ijepa_loss", "standardise_by_position"]


def _layer_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """``F.layer_norm(x, (D,))``: no affine, biased variance."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def ijepa_loss(
    predictions: jax.Array,
    target_features: jax.Array,
    target_indices: jax.Array,
    *,
    valid: jax.Array | None = None,
) -> jax.Array:
    """I-JEPA's loss: a float32 scalar; the targets carry no gradient.

    Args:
      predictions: [M, N, K, D] the predictor's outputs for M target blocks of N images,
        K tokens per block (block-major, as the official predictor returns them).
      target_features: [N, L, D] the target encoder's outputs for all L patches (raw: they
        are layer-normalised here, no affine, eps 1e-5).
      target_indices: [M, N, K] patch indices in [0, L) of each target block's tokens.
      valid: optional [M, N, K]: the tokens that count (static shapes pad the blocks of a
        batch to one K; the official code truncates them to the smallest); None: all.

    Returns:
      mean over (m, n, k, d) of smooth L1 (beta 1) between predictions and targets.
    """
    pred = jnp.asarray(predictions, jnp.float32)
    h = _layer_norm(jax.lax.stop_gradient(jnp.asarray(target_features, jnp.float32)))
    m, n, k, d = pred.shape
    if target_indices.shape != (m, n, k) or h.shape[0] != n or h.shape[-1] != d:
        raise ValueError(
            f"ijepa_loss: predictions {pred.shape}, target_features {h.shape} and "
            f"target_indices {target_indices.shape} must be [M, N, K, D], [N, L, D], [M, N, K]"
        )
    idx = jnp.asarray(target_indices, jnp.int32)
    target = jax.vmap(lambda i: jnp.take_along_axis(h, i[..., None], axis=1))(idx)
    diff = jnp.abs(pred - target)
    per = jnp.where(diff < 1.0, 0.5 * jnp.square(diff), diff - 0.5)
    if valid is None:
        return jnp.mean(per)
    w = jnp.asarray(valid, jnp.float32)[..., None]
    return jnp.sum(per * w) / (jnp.maximum(jnp.sum(w), 1.0) * d)


def standardise_by_position(target_features: jax.Array, eps: float = 1e-5) -> jax.Array:
    """[N, L, D] target features standardised over the N images at each patch position and
    feature (``jax.nn.standardize``: mean 0, variance 1, ``eps`` added): what the position
    alone does not tell. Not in the official recipe; ``ijepa_loss`` layer-normalises the
    result as it does raw features. On the global batch, as the loss.
    """
    return jax.nn.standardize(jnp.asarray(target_features, jnp.float32), axis=0, epsilon=eps)
