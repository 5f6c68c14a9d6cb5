"""Clustering losses: SCAN, SeLa's cross-entropy on pseudo-labels, confident self-labelling.

All take logits whose last two axes are [B, K] (batch, clusters); leading axes
(e.g. clustering heads [H, B, K]) are kept, so one call scores every head and
returns per-head values of shape [H]. Computations are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "largest_cluster_share",
    "pseudo_label_cross_entropy",
    "scan_loss",
    "selflabel_loss",
]

# SCAN clamps probabilities at 1e-8 before the entropy's log; the same floor
# keeps the entropy's gradient finite for an empty cluster.
_PROB_FLOOR = 1e-8


def _entropy(p: jax.Array) -> jax.Array:
    """-sum_k p_k log p_k over the last axis, with 0 log 0 = 0 and a finite gradient."""
    return -jnp.sum(p * jnp.log(jnp.maximum(p, _PROB_FLOOR)), axis=-1)


def scan_loss(
    anchor_logits: jax.Array, neighbor_logits: jax.Array, *, entropy_weight: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """SCAN loss (Van Gansbeke et al., 2020): consistency with a neighbour minus entropy.

    consistency = -mean_b log <p(a_b), p(n_b)>, entropy = H(mean_b p(a_b)),
    total = consistency - entropy_weight * entropy, with p = softmax over K.
    The inner product is computed as logsumexp(log p_a + log p_n), so its log
    is finite even for confident, disagreeing predictions (SCAN's BCE clamps
    it at -100 instead). Gradients flow through both anchors and neighbours,
    as in SCAN.

    Args:
      anchor_logits: [..., B, K] logits of the anchors.
      neighbor_logits: [..., B, K] logits of one mined neighbour of each anchor.
      entropy_weight: weight of the entropy term (SCAN: 5.0).

    Returns:
      (total, consistency, entropy), each float32 of shape [...] (scalars for [B, K]).
    """
    if anchor_logits.shape != neighbor_logits.shape or anchor_logits.ndim < 2:
        raise ValueError(
            "anchor_logits and neighbor_logits must have one shape [..., B, K], got "
            f"{anchor_logits.shape} and {neighbor_logits.shape}."
        )
    log_pa = jax.nn.log_softmax(anchor_logits.astype(jnp.float32), axis=-1)
    log_pn = jax.nn.log_softmax(neighbor_logits.astype(jnp.float32), axis=-1)
    log_similarity = jax.scipy.special.logsumexp(log_pa + log_pn, axis=-1)  # [..., B]
    consistency = -jnp.mean(log_similarity, axis=-1)
    entropy = _entropy(jnp.mean(jnp.exp(log_pa), axis=-2))
    return consistency - entropy_weight * entropy, consistency, entropy


def pseudo_label_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy against pseudo-labels (SeLa's learning step).

    Args:
      logits: [..., B, K] logits.
      targets: [..., B] int hard labels in [0, K), or [..., B, K] soft labels
        (rows summing to 1).

    Returns:
      [...] float32 mean cross-entropy over B.
    """
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    if targets.shape == logits.shape:
        ce = -jnp.sum(targets.astype(jnp.float32) * log_p, axis=-1)
    elif targets.shape == logits.shape[:-1] and jnp.issubdtype(targets.dtype, jnp.integer):
        ce = -jnp.take_along_axis(log_p, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    else:
        raise ValueError(
            f"targets must be int {logits.shape[:-1]} (hard) or {logits.shape} (soft), "
            f"got {targets.dtype} {targets.shape}."
        )
    return jnp.mean(ce, axis=-1)


def selflabel_loss(
    weak_logits: jax.Array,
    strong_logits: jax.Array,
    *,
    threshold: float,
    class_balance: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """SCAN's self-labelling: cross-entropy of strong views on confident weak-view labels.

    Examples whose weak-view confidence max_k p_k exceeds ``threshold`` get the
    pseudo-label argmax_k p_k; the loss is the cross-entropy of the strongly
    augmented view's logits against it, averaged over the confident examples.
    With ``class_balance`` every confident example of pseudo-class c is
    weighted by n_confident / n_c (SCAN's ``apply_class_balancing``), so
    frequent clusters do not swallow the others. No gradient flows through
    the weak view. With no confident example the loss is 0.

    Args:
      weak_logits: [..., B, K] logits of the weakly augmented views.
      strong_logits: [..., B, K] logits of the strongly augmented views.
      threshold: confidence threshold (SCAN: 0.99).
      class_balance: reweight by inverse pseudo-class frequency.

    Returns:
      (loss, confident fraction), float32 of shape [...].
    """
    if weak_logits.shape != strong_logits.shape:
        raise ValueError(
            f"weak and strong logits must have one shape, got {weak_logits.shape} "
            f"and {strong_logits.shape}."
        )
    k = weak_logits.shape[-1]
    p = jax.nn.softmax(jax.lax.stop_gradient(weak_logits).astype(jnp.float32), axis=-1)
    mask = (jnp.max(p, axis=-1) > threshold).astype(jnp.float32)  # [..., B]
    target = jnp.argmax(p, axis=-1)
    onehot = jax.nn.one_hot(target, k, dtype=jnp.float32)  # [..., B, K]
    log_q = jax.nn.log_softmax(strong_logits.astype(jnp.float32), axis=-1)
    ce = -jnp.sum(onehot * log_q, axis=-1)
    weights = mask
    if class_balance:
        counts = jnp.sum(onehot * mask[..., None], axis=-2)  # [..., K]
        n = jnp.sum(mask, axis=-1, keepdims=True)
        freq = jnp.where(counts > 0, n / jnp.maximum(counts, 1.0), 1.0)
        weights = mask * jnp.sum(onehot * freq[..., None, :], axis=-1)
    total = jnp.sum(weights, axis=-1)
    loss = jnp.sum(weights * ce, axis=-1) / jnp.maximum(total, 1e-12)
    return jnp.where(total > 0, loss, 0.0), jnp.mean(mask, axis=-1)


def largest_cluster_share(logits: jax.Array) -> jax.Array:
    """Share of the batch in the most populated argmax cluster: [..., B, K] -> [...].

    1/K for a perfectly balanced batch, 1.0 when every example falls into one
    cluster (collapse).
    """
    k = logits.shape[-1]
    counts = jnp.sum(jax.nn.one_hot(jnp.argmax(logits, axis=-1), k), axis=-2)
    return jnp.max(counts, axis=-1) / logits.shape[-2]
