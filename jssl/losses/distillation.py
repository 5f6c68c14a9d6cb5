"""Self-distillation losses (DINO) and the numbers that watch for its collapse.

DINO (Caron et al., 2021) trains a student to match a teacher's sharpened,
centred distribution over K prototypes. Collapse has two signatures, and the
two tricks each guard against one:

- centring (subtracting a running mean of the teacher logits) stops one
  dimension from dominating, but on its own pushes towards uniform outputs;
- sharpening (a low teacher temperature) pushes away from uniform, but on its
  own lets one dimension dominate.

Everything here is a pure function of arrays on the *global* batch: under jit
with the batch sharded over the mesh, the centre's batch mean is global
without hand-written collectives. Computations run in float32 whatever the
logits' dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "dino_loss",
    "dino_monitor",
    "distillation_loss",
    "distillation_monitor",
    "entropy",
    "teacher_distribution",
    "update_center",
]

# einsum precision: no TF32/bf16 passes on accelerators for a float32 loss.
_HIGHEST = jax.lax.Precision.HIGHEST


def _check_logits(student_logits: jax.Array, teacher_logits: jax.Array, center: jax.Array):
    if student_logits.ndim != 3 or teacher_logits.ndim != 3:
        raise ValueError(
            "dino_loss expects student_logits [S, N, K] and teacher_logits [T, N, K], got "
            f"{student_logits.shape} and {teacher_logits.shape}"
        )
    s, n, k = student_logits.shape
    t = teacher_logits.shape[0]
    if s < 2:
        raise ValueError(
            "dino_loss needs at least 2 student crops (pairs s != t), got student_logits "
            f"{student_logits.shape}"
        )
    if teacher_logits.shape[1:] != (n, k) or t > s:
        raise ValueError(
            f"teacher_logits {teacher_logits.shape} must be [T, N, K] with T <= S for "
            f"student_logits {student_logits.shape} (the first T student crops are the "
            "teacher's global crops)"
        )
    if center.shape != (k,):
        raise ValueError(f"center must be [K] = [{k}], got {center.shape}")


def teacher_distribution(
    teacher_logits: jax.Array, center: jax.Array, *, teacher_temp: float | jax.Array
) -> jax.Array:
    """softmax((teacher_logits - center) / teacher_temp) over K, float32, no gradient.

    Args:
      teacher_logits: [..., K].
      center: [K] running mean of the teacher logits.
      teacher_temp: temperature (a low value sharpens).

    Returns:
      Probabilities [..., K] float32, wrapped in ``stop_gradient``: the teacher
      is a target, never trained by this loss.
    """
    z = (teacher_logits.astype(jnp.float32) - center.astype(jnp.float32)) / teacher_temp
    return jax.lax.stop_gradient(jax.nn.softmax(z, axis=-1))


def entropy(probs: jax.Array, *, axis: int = -1) -> jax.Array:
    """H(p) = -sum p log p along ``axis`` (natural log; 0 log 0 = 0)."""
    probs = probs.astype(jnp.float32)
    return -jnp.sum(
        jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), axis=axis
    )


def _pair_mask(num_student: int, num_teacher: int) -> jax.Array:
    """[T, S] float32: 1 for the pairs (teacher crop t, student crop s) with s != t."""
    t = jnp.arange(num_teacher)[:, None]
    s = jnp.arange(num_student)[None, :]
    return (s != t).astype(jnp.float32)


def _pair_cross_entropy(
    student_logits: jax.Array, teacher_probs: jax.Array, *, student_temp: float | jax.Array
) -> jax.Array:
    """[T, S]: batch-mean cross-entropy between teacher crop t and student crop s."""
    log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
    n = student_logits.shape[1]
    # sum_n sum_k q[t, n, k] log p[s, n, k]: a contraction over (N, K), so the
    # [T, S, N, K] product is never materialised (K is 65,536 on ImageNet).
    return -jnp.einsum("tnk,snk->ts", teacher_probs, log_p, precision=_HIGHEST) / n


def dino_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    center: jax.Array,
    *,
    student_temp: float | jax.Array,
    teacher_temp: float | jax.Array,
) -> jax.Array:
    """DINO's multi-crop self-distillation cross-entropy.

    loss = mean over pairs (t, s) with s != t, and over the batch n, of
      -sum_k softmax((teacher[t, n] - center) / teacher_temp)_k
             * log_softmax(student[s, n] / student_temp)_k.

    Args:
      student_logits: [S, N, K], all crops; the first T are the global crops
        the teacher also saw, in the same order.
      teacher_logits: [T, N, K], the teacher's logits of the global crops.
      center: [K] running mean of the teacher logits (see ``update_center``).
      student_temp: student temperature (DINO: 0.1).
      teacher_temp: teacher temperature (DINO: 0.04 -> 0.07).

    Returns:
      Scalar float32 loss. The teacher side carries no gradient.
    """
    _check_logits(student_logits, teacher_logits, center)
    q = teacher_distribution(teacher_logits, center, teacher_temp=teacher_temp)
    return distillation_loss(student_logits, q, student_temp=student_temp)


def distillation_loss(
    student_logits: jax.Array, targets: jax.Array, *, student_temp: float | jax.Array
) -> jax.Array:
    """DINO's cross-entropy against given teacher targets: the mean over the pairs (t, s),
    s != t, and the batch of -sum_k targets[t, n, k] log_softmax(student[s, n] / student_temp)_k.

    ``targets`` [T, N, K] are the teacher's distributions of the global crops (centred
    and sharpened: ``teacher_distribution``; or balanced: ``sinkhorn_knopp_teacher``),
    ``student_logits`` [S, N, K] all crops, the first T the teacher's. Scalar float32.
    """
    num_student, num_teacher = student_logits.shape[0], targets.shape[0]
    ce = _pair_cross_entropy(student_logits, targets, student_temp=student_temp)
    mask = _pair_mask(num_student, num_teacher)
    return jnp.sum(ce * mask) / jnp.sum(mask)


def update_center(
    center: jax.Array, teacher_logits: jax.Array, *, momentum: float | jax.Array
) -> jax.Array:
    """momentum * center + (1 - momentum) * mean of teacher_logits over crops and batch.

    Args:
      center: [K].
      teacher_logits: [T, N, K] (or [..., K]); the mean runs over every axis
        but the last, i.e. all teacher crops and the whole global batch.
      momentum: centre momentum (DINO: 0.9).

    Returns:
      The new centre [K] float32, without gradient.
    """
    if teacher_logits.shape[-1:] != center.shape:
        raise ValueError(
            f"teacher_logits [..., K] {teacher_logits.shape} does not match center [K] "
            f"{center.shape}"
        )
    logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    # The mean over the leading axes as they are: a reshape that merged the crops' axis with
    # the batch's would make XLA copy the whole (sharded) batch to every device.
    batch_center = jnp.mean(logits, axis=tuple(range(logits.ndim - 1)))
    return momentum * center.astype(jnp.float32) + (1.0 - momentum) * batch_center


def dino_monitor(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    center: jax.Array,
    *,
    student_temp: float | jax.Array,
    teacher_temp: float | jax.Array,
) -> dict[str, jax.Array]:
    """Collapse monitor numbers for one batch (all float32 scalars, nats).

    - ``teacher_entropy``: mean over teacher crops and examples of H(q); ln K
      when the teacher is uniform, 0 when it is one-hot.
    - ``teacher_batch_entropy``: H of the batch-mean teacher distribution; near
      0 when every example gets the same dimension (the "constant" collapse),
      ln K when the batch spreads over all dimensions.
    - ``student_entropy``: mean H of the student distributions.
    - ``kl``: mean over the loss's pairs (s != t) of KL(q_t || p_s) = the loss
      minus the teacher entropy; near 0 when the student copies the teacher.
    """
    _check_logits(student_logits, teacher_logits, center)
    q = teacher_distribution(teacher_logits, center, teacher_temp=teacher_temp)
    return distillation_monitor(student_logits, q, student_temp=student_temp)


def distillation_monitor(
    student_logits: jax.Array, targets: jax.Array, *, student_temp: float | jax.Array
) -> dict[str, jax.Array]:
    """``dino_monitor``'s numbers for given teacher targets [T, N, K] (see
    ``distillation_loss``)."""
    q = targets
    p = jax.nn.softmax(student_logits.astype(jnp.float32) / student_temp, axis=-1)
    h_q = entropy(q)  # [T, N]
    ce = _pair_cross_entropy(student_logits, q, student_temp=student_temp)  # [T, S]
    mask = _pair_mask(student_logits.shape[0], q.shape[0])
    # Each pair's KL is its cross-entropy minus its teacher crop's entropy.
    kl = jnp.sum((ce - jnp.mean(h_q, axis=1)[:, None]) * mask) / jnp.sum(mask)
    return {
        "teacher_entropy": jnp.mean(h_q),
        "teacher_batch_entropy": entropy(jnp.mean(q, axis=tuple(range(q.ndim - 1)))),
        "student_entropy": jnp.mean(entropy(p)),
        "kl": kl,
    }
