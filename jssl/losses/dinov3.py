"""DINOv2's Sinkhorn-Knopp teacher and DINOv3's Gram anchoring.

- ``sinkhorn_knopp_teacher``: the teacher's targets balanced over the K prototypes
  by three Sinkhorn-Knopp iterations instead of centring
  (facebookresearch/dinov2 ``dinov2/loss/dino_clstoken_loss.py:35-61``; the same in
  dinov3 and in the iBOT patch loss), here in the log domain: ``exp(logits / 0.04)``
  overflows float32, the log domain does not, and the result is the same.
- ``gram_loss``: DINOv3's Gram anchoring (facebookresearch/dinov3
  ``dinov3/loss/gram_loss.py:11-84``), the MSE between the student's and a frozen Gram
  teacher's patch-similarity matrices, with the anchoring configs' defaults.

Both are written on the global batch (under jit with the batch sharded the sums over
the batch are global) and return float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jssl.losses.contrastive import l2_normalize

__all__ = ["gram_loss", "sinkhorn_knopp_teacher"]


def sinkhorn_knopp_teacher(
    teacher_logits: jax.Array,
    *,
    teacher_temp: float | jax.Array,
    num_iters: int = 3,
    valid: jax.Array | None = None,
) -> jax.Array:
    """DINOv2's teacher targets: ``teacher_logits`` [..., K] -> [..., K], each row a
    distribution over K, the leading axes flattened into B rows balanced together; no gradient.

    Q = exp(logits / teacher_temp)^T [K, B], Q /= sum(Q); ``num_iters`` times: every
    prototype's row to 1 / K, then every sample's column to 1 / B; returns (B * Q)^T.

    ``valid`` [...] (optional, the leading axes): only those rows take part, B is their
    count and the other rows come back as zeros (iBOT's masked patches among a static
    number of tokens: DINOv2 balances the masked patches of the batch only).
    """
    # The rows keep their leading axes (no reshape to [B, K]: merging a sharded batch axis
    # with another would make XLA copy the whole batch to every device).
    log_q = jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32)) / teacher_temp
    k = log_q.shape[-1]
    samples = tuple(range(log_q.ndim - 1))
    if valid is None:
        rows = jnp.ones((*log_q.shape[:-1], 1), bool)
        log_b = jnp.log(jnp.float32(math.prod(log_q.shape[:-1])))
    else:
        rows = jnp.asarray(valid, bool)[..., None]
        log_b = jnp.log(jnp.maximum(jnp.sum(rows.astype(jnp.float32)), 1.0))
    keep = lambda x: jnp.where(rows, x, -jnp.inf)
    log_q = keep(log_q)
    log_q = keep(log_q - jax.nn.logsumexp(log_q))
    for _ in range(num_iters):
        log_q = keep(log_q - jax.nn.logsumexp(log_q, axis=samples, keepdims=True) - jnp.log(k))
        row_sum = jax.nn.logsumexp(jnp.where(rows, log_q, 0.0), axis=-1, keepdims=True)
        log_q = keep(log_q - row_sum - log_b)
    return jnp.exp(log_q + log_b)


def _gram(x: jax.Array, img_level: bool) -> jax.Array:
    if not img_level:
        x = x.reshape(1, -1, x.shape[-1])  # one matrix over every token of the batch
    return jnp.einsum("bpd,bqd->bpq", x, x, precision=jax.lax.Precision.HIGHEST)


def gram_loss(
    student_patches: jax.Array,
    teacher_patches: jax.Array,
    *,
    img_level: bool = True,
    normalize: bool = True,
    remove_neg: bool = False,
    remove_only_teacher_neg: bool = False,
) -> jax.Array:
    """Gram anchoring of student patch features [B, P, D] to the teacher's [B, P, D]: scalar.

    G = f f^T per image (``img_level``) or over all B * P tokens; tokens L2-normalised
    first (``normalize``); ``remove_neg`` zeroes the negative entries of both matrices,
    ``remove_only_teacher_neg`` those of the teacher only (the official code's student
    mask then selects nothing: the teacher is already clamped). Returns mean (G_s - G_t)^2.
    """
    if remove_neg and remove_only_teacher_neg:
        raise ValueError("remove_neg and remove_only_teacher_neg are mutually exclusive")
    student = jnp.asarray(student_patches, jnp.float32)
    teacher = jax.lax.stop_gradient(jnp.asarray(teacher_patches, jnp.float32))
    if normalize:
        student, teacher = l2_normalize(student), l2_normalize(teacher)
    g_s, g_t = _gram(student, img_level), _gram(teacher, img_level)
    if remove_neg:
        g_s, g_t = jnp.maximum(g_s, 0.0), jnp.maximum(g_t, 0.0)
    elif remove_only_teacher_neg:
        g_t = jnp.maximum(g_t, 0.0)
    return jnp.mean(jnp.square(g_s - g_t))
