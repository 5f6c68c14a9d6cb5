"""Contrastive losses (SimCLR's NT-Xent) and embedding health numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["embedding_std", "l2_normalize", "nt_xent"]


def l2_normalize(x: jax.Array, *, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) along ``axis``."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float) -> jax.Array:
    """SimCLR's normalised-temperature cross-entropy (NT-Xent).

    loss = mean over the 2N anchors i of
      -log( exp(s(i, p(i)) / t) / sum_{j != i} exp(s(i, j) / t) ),
    with s the cosine similarity over the 2N embeddings [z1; z2] and p(i) the
    other view of the same image: one positive and 2N - 2 negatives per anchor.

    Args:
      z1, z2: [N, D] embeddings of the two views (any float dtype; computed in
        float32).
      temperature: softmax temperature t > 0.

    Returns:
      Scalar float32 loss.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"nt_xent expects two [N, D] arrays of one shape, got {z1.shape} and {z2.shape}"
        )
    n = z1.shape[0]
    z = l2_normalize(jnp.concatenate([z1, z2], axis=0).astype(jnp.float32))
    logits = (z @ z.T) / temperature  # [2N, 2N]
    # An anchor is never its own negative.
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, positives[:, None], axis=-1))


def embedding_std(z: jax.Array) -> jax.Array:
    """Mean per-dimension std of L2-normalised embeddings [N, D] (collapse monitor).

    About 1/sqrt(D) for well-spread embeddings, 0 for collapsed ones.
    """
    return jnp.mean(jnp.std(l2_normalize(z.astype(jnp.float32)), axis=0))
