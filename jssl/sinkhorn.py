"""Log-domain Sinkhorn-Knopp: the equipartition optimal-transport labelling of SeLa and SwAV.

Given scores S [N, K] (e.g. log-probabilities), find the transport plan

    Q = diag(exp(u)) exp(S / epsilon) diag(exp(v))

whose rows sum to 1 (every example is fully assigned) and whose column k sums
to N * w_k (cluster k receives its share w_k of the examples). ``epsilon`` is
the entropic regularisation; SeLa's lambda is 1 / epsilon (Q proportional to
p^lambda).

Why the log domain: the probability-domain iteration multiplies by
exp(S / epsilon), which overflows float32 once S / epsilon > 88 (scores above
4.4 with epsilon 0.05) and float16 above 11 (scores above 0.55). Here only
log-sum-exps of S / epsilon + u + v are formed, which are finite for any
finite scores. Everything runs in float32 whatever the input dtype (bf16
scores are upcast), because the marginal constraints need float32 accuracy.

The function is written on the global [N, K] array: under ``jax.jit`` with the
rows sharded over a mesh, XLA turns the column log-sum-exps into all-reduces,
so the marginals are global without hand-written collectives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

__all__ = ["balanced_assignment", "cluster_capacities", "marginal_error", "sinkhorn_knopp"]


def _log_class_marginal(num_rows: int, num_cols: int, class_weights) -> jax.Array:
    """log(N * w_k) [K] with w normalised to sum to 1 (uniform 1/K when None)."""
    if class_weights is None:
        return jnp.full((num_cols,), np.log(num_rows / num_cols), jnp.float32)
    w = jnp.asarray(class_weights, jnp.float32)
    if w.shape != (num_cols,):
        raise ValueError(f"class_weights must have shape [K]=({num_cols},), got {w.shape}.")
    if not isinstance(w, jax.core.Tracer):
        wn = np.asarray(w)
        if not np.all(np.isfinite(wn)) or np.any(wn <= 0):
            raise ValueError(f"class_weights must be finite and > 0, got {wn}.")
    return jnp.log(num_rows * w / jnp.sum(w))


def marginal_error(q: jax.Array, *, class_weights=None) -> tuple[jax.Array, jax.Array]:
    """Largest relative marginal errors of a plan q [N, K].

    Returns:
      (row error, column error): max_i |sum_k q_ik - 1| and
      max_k |sum_i q_ik / (N w_k) - 1|, float32 scalars.
    """
    n, k = q.shape
    target = jnp.exp(_log_class_marginal(n, k, class_weights))
    rows = jnp.max(jnp.abs(jnp.sum(q, axis=1) - 1.0))
    cols = jnp.max(jnp.abs(jnp.sum(q, axis=0) / target - 1.0))
    return rows, cols


def sinkhorn_knopp(
    scores: jax.Array,
    *,
    epsilon: float,
    num_iters: int,
    class_weights: jax.Array | np.ndarray | None = None,
    tol: float | None = None,
) -> jax.Array:
    """Entropic OT plan with row sums 1 and column sums N * w_k, in the log domain.

    Q = exp(S / epsilon + u[:, None] + v[None, :]) where each iteration sets
    v = log(N w) - logsumexp_i(S / epsilon + u) (columns exact), then
    u = -logsumexp_k(S / epsilon + v) (rows exact). The iteration ends on a row
    update, so every row of Q sums to 1 up to float32 rounding and the column
    sums converge to N * w_k.

    Jittable (``epsilon``, ``num_iters`` and ``tol`` are static Python values).
    With ``tol=None`` it runs exactly ``num_iters`` iterations in a
    ``lax.fori_loop`` (reverse-mode differentiable, though callers normally use
    Q as a target under ``stop_gradient``); with ``tol`` it uses a
    ``lax.while_loop`` that also stops once the largest relative column error
    max_k |sum_i Q_ik / (N w_k) - 1| is <= tol.

    Args:
      scores: [N, K] scores (any float dtype; computed in float32), e.g. log p.
      epsilon: entropic regularisation > 0 (SeLa: 1 / lambda, lambda = 25).
      num_iters: maximum number of (column, row) update pairs, >= 1.
      class_weights: optional [K] positive cluster proportions w (normalised to
        sum to 1); uniform 1/K when None.
      tol: optional early-stopping tolerance on the relative column error.

    Returns:
      [N, K] float32 plan Q with rows summing to 1 and column k to N * w_k.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, K], got shape {scores.shape}.")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}.")
    if int(num_iters) != num_iters or num_iters < 1:
        raise ValueError(f"num_iters must be an integer >= 1, got {num_iters}.")
    n, k = scores.shape
    log_c = _log_class_marginal(n, k, class_weights)
    raw = scores.astype(jnp.float32) / jnp.float32(epsilon)
    # Rows shifted by their max: the shift only moves u, not Q, and keeps u and
    # the entries that carry the mass near 0, where float32 is accurate (with
    # scores of 1e3 and epsilon 0.05, u would sit near 2e4, where one float32
    # step is 2e-3, and Q would be off by that much).
    s = raw - jax.lax.stop_gradient(jnp.max(raw, axis=1, keepdims=True))

    # Carry the column log-sums of the current row scaling, so each iteration
    # costs two log-sum-exps and the column error comes for free.
    def body(carry):
        i, _, _, col_lse, _ = carry
        v = log_c - col_lse
        u = -logsumexp(s + v[None, :], axis=1)
        col_lse = logsumexp(s + u[:, None], axis=0)
        err = jnp.max(jnp.abs(jnp.exp(col_lse + v - log_c) - 1.0))
        return i + 1, u, v, col_lse, err

    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((n,), jnp.float32),
        jnp.zeros((k,), jnp.float32),
        # The first column update starts from u = 0 in unshifted coordinates.
        logsumexp(raw, axis=0),
        jnp.full((), jnp.inf, jnp.float32),
    )
    if tol is None:
        _, u, v, _, _ = jax.lax.fori_loop(0, int(num_iters), lambda _, c: body(c), init)
    else:
        cond = lambda c: (c[0] < num_iters) & (c[4] > tol)
        _, u, v, _, _ = jax.lax.while_loop(cond, body, init)
    # The last row update in closed form: each row is a softmax of s + v, so rows
    # sum to 1 to float32 rounding even where v is large.
    del u
    return jax.nn.softmax(s + v[None, :], axis=1)


def cluster_capacities(num_rows: int, num_cols: int, class_weights=None) -> np.ndarray:
    """Integer cluster sizes [K] summing to N, nearest to N * w_k (largest remainders)."""
    w = np.full(num_cols, 1.0 / num_cols) if class_weights is None else np.asarray(class_weights)
    target = num_rows * w / w.sum()
    sizes = np.floor(target).astype(np.int64)
    extra = num_rows - int(sizes.sum())
    sizes[np.argsort(-(target - sizes), kind="stable")[:extra]] += 1
    return sizes.astype(np.int32)


def balanced_assignment(q: jax.Array, *, class_weights=None) -> jax.Array:
    """Hard labels from a plan q [N, K] that fill every cluster to exactly its capacity.

    argmax_k q can be far from the equal-size constraint when q is diffuse
    (an untrained network scores every image alike). Greedy rounding instead:
    rows in order of decreasing confidence max_k q take their most probable
    cluster that still has room; capacities are ``cluster_capacities``. Where
    q is sharp this equals the argmax. Jittable (a ``lax.fori_loop`` over N).

    Returns:
      [N] int32 labels; cluster k receives exactly capacities[k] rows.
    """
    n, k = q.shape
    capacity = jnp.asarray(cluster_capacities(n, k, class_weights))
    order = jnp.argsort(-jnp.max(q, axis=1))

    def body(i, carry):
        labels, room = carry
        row = order[i]
        choice = jnp.argmax(jnp.where(room > 0, q[row], -jnp.inf))
        return labels.at[row].set(choice.astype(jnp.int32)), room.at[choice].add(-1)

    labels, _ = jax.lax.fori_loop(0, n, body, (jnp.zeros((n,), jnp.int32), capacity))
    return labels
