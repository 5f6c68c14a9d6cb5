"""Clustering heads trained on frozen features: TEMI's weighted PMI and TURTLE's objective.

TEMI (Adaloglou et al., 2023) trains H clustering heads (student and EMA
teacher) on frozen features of an image and one of its nearest neighbours with
a weighted, beta-tempered pointwise mutual information; the cluster prior p(k)
of each head is a running mean of the teacher's probabilities, updated before
the loss of the same step (``update_cluster_prior`` then ``temi_loss``).

TURTLE (Gadetsky et al., 2024) finds the labelling of a data set that linear
classifiers on several representation spaces fit best: ``turtle_task_labels``
is its labelling, ``turtle_loss`` the outer objective given the inner
classifiers' logits after their inner fit.

All are written on the global batch (XLA inserts the collectives when the
batch axis N is sharded), take bf16/f16/f32 inputs and compute in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["temi_loss", "turtle_loss", "turtle_task_labels", "update_cluster_prior"]

# log p(k) is taken of max(p(k), tiny): a cluster whose prior has decayed to zero
# (float32 underflow after ~1000 steps without mass) gives a large finite PMI
# term instead of inf - inf = NaN. Any prior >= tiny is used exactly.
_PRIOR_FLOOR = float(jnp.finfo(jnp.float32).tiny)


def update_cluster_prior(
    prior: jax.Array,
    teacher_logits: jax.Array,
    *,
    teacher_temp: float = 0.1,
    momentum: float = 0.9,
) -> jax.Array:
    """TEMI's running cluster prior p(k) of each head, updated with this batch.

    prior' = momentum * prior + (1 - momentum) * mean_{t, n} softmax(teacher / teacher_temp),
    the mean over every teacher crop and the global batch (TEMI's ``update_ema``).

    Args:
      prior: [H, K] running cluster probabilities of each head (start at 1/K).
      teacher_logits: [H, T, N, K] teacher-head logits of T crops of N images.
      teacher_temp: teacher softmax temperature (TEMI: 0.1).
      momentum: EMA momentum of the prior (TEMI: 0.9).

    Returns:
      [H, K] float32 updated prior, each row a distribution if ``prior``'s rows are;
      no gradient flows through it.
    """
    if teacher_logits.ndim != 4 or prior.shape != (
        teacher_logits.shape[0],
        teacher_logits.shape[3],
    ):
        raise ValueError(
            "update_cluster_prior takes prior [H, K] and teacher_logits [H, T, N, K], got "
            f"{prior.shape} and {teacher_logits.shape}."
        )
    prior = jax.lax.stop_gradient(prior).astype(jnp.float32)
    teacher = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
    batch_probs = jnp.mean(jax.nn.softmax(teacher / teacher_temp, axis=-1), axis=(1, 2))
    return momentum * prior + (1.0 - momentum) * batch_probs


def temi_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    prior: jax.Array,
    *,
    beta: float = 0.6,
    student_temp: float = 0.1,
    teacher_temp: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """TEMI's multi-head weighted beta-PMI loss (``MultiHeadWMI`` with ``sim_weight``).

    With q_t = softmax(teacher[h, t] / teacher_temp) and
    p_s = softmax(student[h, s] / student_temp):

      w_n = mean over heads h and teacher pairs t1 < t2 of sum_k q_t1[n, k] q_t2[n, k]
      pmi_h(s, t)_n = -log sum_k (p_s[n, k] q_t[n, k])^beta / prior[h, k]
      per_head[h] = mean over pairs (t < T, s < S, s != t) of mean_n w_n pmi_h(s, t)_n

    The weight w is one [N] vector shared by all heads (the official code sums
    it over heads and pairs before dividing by their count). The log-sum is a
    logsumexp of beta (log p_s + log q_t) - log prior, finite for confident
    logits. Only the student logits get a gradient: teacher probabilities, the
    weight and the prior are constants.

    Args:
      student_logits: [H, S, N, K] student-head logits of S crops; the first T are
        the teacher's crops in the same order.
      teacher_logits: [H, T, N, K] teacher-head logits, 2 <= T <= S.
      prior: [H, K] cluster prior p(k), already updated with this batch
        (``update_cluster_prior``), as the official code uses it.
      beta: PMI exponent (TEMI: 0.6).
      student_temp: student softmax temperature (TEMI: 0.1).
      teacher_temp: teacher softmax temperature (TEMI: 0.1).

    Returns:
      (loss, per_head): float32 scalar mean of the [H] float32 per-head losses.
    """
    if student_logits.ndim != 4 or teacher_logits.ndim != 4 or prior.ndim != 2:
        raise ValueError(
            "temi_loss takes student_logits [H, S, N, K], teacher_logits [H, T, N, K] and "
            f"prior [H, K], got {student_logits.shape}, {teacher_logits.shape} and {prior.shape}."
        )
    h, s, n, k = student_logits.shape
    t = teacher_logits.shape[1]
    if teacher_logits.shape != (h, t, n, k) or prior.shape != (h, k):
        raise ValueError(
            "student_logits [H, S, N, K], teacher_logits [H, T, N, K] and prior [H, K] must "
            f"agree on H, N and K, got {student_logits.shape}, {teacher_logits.shape} and "
            f"{prior.shape}."
        )
    if not 2 <= t <= s:
        raise ValueError(
            f"temi_loss needs 2 <= T <= S teacher and student crops, got T={t} and S={s}."
        )
    teacher = jax.lax.stop_gradient(teacher_logits).astype(jnp.float32)
    log_prior = jnp.log(jnp.maximum(jax.lax.stop_gradient(prior).astype(jnp.float32), _PRIOR_FLOOR))
    log_q = jax.nn.log_softmax(teacher / teacher_temp, axis=-1)  # [H, T, N, K]
    log_p = jax.nn.log_softmax(
        student_logits.astype(jnp.float32) / student_temp, axis=-1
    )  # [H, S, N, K]

    q = jnp.exp(log_q)
    sim = jnp.einsum("hink,hjnk->hijn", q, q)  # [H, T, T, N]
    upper = jnp.triu(jnp.ones((t, t), bool), k=1)  # the pairs t1 < t2
    weight = jnp.sum(jnp.where(upper[None, :, :, None], sim, 0.0), axis=(0, 1, 2))
    weight = weight / (h * t * (t - 1) // 2)  # [N]

    joint = beta * (log_q[:, :, None] + log_p[:, None]) - log_prior[:, None, None, None, :]
    pmi = -jax.scipy.special.logsumexp(joint, axis=-1)  # [H, T, S, N]
    pair_loss = jnp.mean(weight * pmi, axis=-1)  # [H, T, S]
    off_diagonal = jnp.arange(t)[:, None] != jnp.arange(s)[None, :]  # s != t
    per_head = jnp.sum(jnp.where(off_diagonal, pair_loss, 0.0), axis=(1, 2)) / (t * s - t)
    return jnp.mean(per_head), per_head


def turtle_task_labels(task_logits: jax.Array) -> jax.Array:
    """TURTLE's labelling: the mean over representation spaces of the task encoders' softmax.

    Args:
      task_logits: [S, N, C] task-encoder logits of N samples in each of S spaces.

    Returns:
      [N, C] float32 soft labels, each row a distribution over the C classes.
    """
    if task_logits.ndim != 3:
        raise ValueError(f"task_logits must be [S, N, C], got {task_logits.shape}.")
    return jnp.mean(jax.nn.softmax(task_logits.astype(jnp.float32), axis=-1), axis=0)


def _entr(x: jax.Array) -> jax.Array:
    """-x log x elementwise, 0 at 0 with a finite (zero) gradient there."""
    positive = x > 0
    return jnp.where(positive, -x * jnp.log(jnp.where(positive, x, 1.0)), 0.0)


def turtle_loss(
    task_logits: jax.Array, inner_logits: jax.Array, *, gamma: float = 10.0
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """TURTLE's outer objective: inner classifiers' error on the labelling minus its entropy.

      labels           = mean_s softmax(task_logits[s])                      [N, C]
      prediction_error = sum_s mean_n -sum_c labels[n, c] log_softmax(inner_logits[s])[n, c]
      entropy          = sum_s sum_c entr(mean_n softmax(task_logits[s])[n, c])
      loss             = prediction_error - gamma * entropy

    with entr(x) = -x log x (0 at 0). The gradient flows into the task logits
    only; the inner logits are constants (the official code detaches them).

    Args:
      task_logits: [S, N, C] task-encoder logits in each of S representation spaces.
      inner_logits: [S, N, C] logits of the inner linear classifiers after their fit.
      gamma: weight of the entropy regulariser (TURTLE: 10).

    Returns:
      (loss, prediction_error, entropy), float32 scalars.
    """
    if task_logits.ndim != 3 or inner_logits.shape != task_logits.shape:
        raise ValueError(
            "task_logits and inner_logits must have one shape [S, N, C], got "
            f"{task_logits.shape} and {inner_logits.shape}."
        )
    probs = jax.nn.softmax(task_logits.astype(jnp.float32), axis=-1)  # [S, N, C]
    labels = jnp.mean(probs, axis=0)  # [N, C]
    inner = jax.lax.stop_gradient(inner_logits).astype(jnp.float32)
    log_inner = jax.nn.log_softmax(inner, axis=-1)
    prediction_error = jnp.sum(jnp.mean(-jnp.sum(labels * log_inner, axis=-1), axis=-1))
    entropy = jnp.sum(_entr(jnp.mean(probs, axis=1)))
    return prediction_error - gamma * entropy, prediction_error, entropy
