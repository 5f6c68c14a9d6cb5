"""InfoNCE with keys other than SimCLR's 2N views: MoCo v2's queue, MoCo v3's batch, NNCLR.

Each loss is a cross-entropy of a query against one positive key among
negatives, all rows L2-normalised:

- MoCo v2 (He et al., 2020; Chen et al., 2020): the positive is the momentum
  encoder's key of the same image, the negatives a queue of past keys;
- MoCo v3 (Chen, Xie & He, 2021): the keys of the whole global batch, the
  positive on the diagonal;
- NNCLR (Dwibedi et al., 2021): the query is the nearest neighbour, in a
  support queue, of one view's projection; the keys are the other view's
  predictions.

Keys from a momentum encoder and queues are targets: no gradient flows into
them. Written on the global batch: under ``jax.jit`` with the batch sharded,
the in-batch keys are global (MoCo v3's concat_all_gather). Computations are
float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl.losses.contrastive import l2_normalize

__all__ = ["infonce_with_queue", "moco_v3_loss", "nearest_neighbors", "nnclr_loss"]

# einsum precision: no TF32/bf16 passes on accelerators for a float32 loss.
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_rows(name: str, a: jax.Array, b: jax.Array, a_name: str, b_name: str) -> None:
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"{name} expects {a_name} and {b_name} of one shape [N, D], got {a.shape} and {b.shape}"
        )


def _diagonal_cross_entropy(a: jax.Array, b: jax.Array, temperature) -> jax.Array:
    """mean_i -log_softmax(a b^T / temperature)_ii for L2-normalised float32 rows."""
    logits = jnp.einsum("nd,md->nm", a, b, precision=_HIGHEST) / temperature
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))


def moco_v3_loss(q: jax.Array, k: jax.Array, *, temperature: float | jax.Array) -> jax.Array:
    """MoCo v3's contrastive loss: CE(q k^T / temperature, diagonal) * 2 * temperature.

    q_i and k_j are L2-normalised; the positive of query i is key i and the
    other N - 1 keys of the (global) batch are its negatives. The factor
    2 * temperature is MoCo v3's; the caller sums the two directions
    moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1).

    Args:
      q: [N, D] predictor outputs of one view (the base encoder).
      k: [N, D] momentum-encoder projections of the other view (no gradient).
      temperature: softmax temperature (MoCo v3: 0.2 for ViT, 1.0 for ResNet-50).

    Returns:
      Scalar float32 loss.
    """
    _check_rows("moco_v3_loss", q, k, "q", "k")
    q = l2_normalize(q.astype(jnp.float32))
    k = l2_normalize(jax.lax.stop_gradient(k).astype(jnp.float32))
    return _diagonal_cross_entropy(q, k, temperature) * (2.0 * temperature)


def infonce_with_queue(
    q: jax.Array, k: jax.Array, queue: jax.Array, *, temperature: float | jax.Array
) -> jax.Array:
    """MoCo v2's InfoNCE: the positive key against a queue of negatives.

    logits_i = [q_i . k_i, q_i . queue_1, ..., q_i . queue_Q] / temperature
    with every row L2-normalised, and loss = mean_i -log_softmax(logits_i)_0.

    Args:
      q: [N, D] queries (the online encoder).
      k: [N, D] momentum-encoder keys of the other view of the same images.
      queue: [Q, D] negative keys, one per row (MoCo stores it [D, Q]). It is
        normalised here too, a no-op for the usual queue of normalised keys.
      temperature: softmax temperature (MoCo v2: 0.2).

    Returns:
      Scalar float32 loss. No gradient flows into ``k`` or ``queue``.
    """
    _check_rows("infonce_with_queue", q, k, "q", "k")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be [Q, D] with D = {q.shape[1]}, got {queue.shape}")
    q = l2_normalize(q.astype(jnp.float32))
    k = l2_normalize(jax.lax.stop_gradient(k).astype(jnp.float32))
    queue = l2_normalize(jax.lax.stop_gradient(queue).astype(jnp.float32))
    positive = jnp.sum(q * k, axis=-1, keepdims=True)  # [N, 1]
    negatives = jnp.einsum("nd,qd->nq", q, queue, precision=_HIGHEST)  # [N, Q]
    logits = jnp.concatenate([positive, negatives], axis=1) / temperature
    return -jnp.mean(jax.nn.log_softmax(logits, axis=-1)[:, 0])


def nearest_neighbors(z: jax.Array, support: jax.Array) -> jax.Array:
    """NNCLR's neighbour lookup: for each row of z the most cosine-similar row of support.

    Args:
      z: [N, D] projections.
      support: [Q, D] support set (NNCLR's queue of past projections).

    Returns:
      [N, D] float32 rows of ``support`` (as stored), under ``stop_gradient``.
    """
    if z.ndim != 2 or support.ndim != 2 or z.shape[1] != support.shape[1]:
        raise ValueError(
            f"nearest_neighbors expects z [N, D] and support [Q, D], got {z.shape} and "
            f"{support.shape}"
        )
    support = jax.lax.stop_gradient(support.astype(jnp.float32))
    zn = l2_normalize(jax.lax.stop_gradient(z).astype(jnp.float32))
    sims = jnp.einsum("nd,qd->nq", zn, l2_normalize(support), precision=_HIGHEST)
    return jnp.take(support, jnp.argmax(sims, axis=1), axis=0)


def nnclr_loss(nn: jax.Array, p: jax.Array, *, temperature: float | jax.Array) -> jax.Array:
    """NNCLR's loss: CE(nn p^T / temperature, diagonal), rows L2-normalised.

    As solo-learn's nnclr_loss_func: the query is nn_i (the nearest neighbour
    of view 1's projection i, see ``nearest_neighbors``), its positive p_i
    (view 2's prediction of the same image), the other predictions of the
    global batch its negatives. The caller symmetrises:
    (nnclr_loss(nn1, p2) + nnclr_loss(nn2, p1)) / 2.

    Args:
      nn: [N, D] nearest neighbours from the support queue (no gradient).
      p: [N, D] predictions of the other view.
      temperature: softmax temperature (solo-learn: 0.2).

    Returns:
      Scalar float32 loss.
    """
    _check_rows("nnclr_loss", nn, p, "nn", "p")
    nn = l2_normalize(jax.lax.stop_gradient(nn).astype(jnp.float32))
    p = l2_normalize(p.astype(jnp.float32))
    return _diagonal_cross_entropy(nn, p, temperature)
