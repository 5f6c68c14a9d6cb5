"""SwAV's swapped prediction over prototypes (Caron et al., 2020).

Every crop is scored against K prototypes. The scores of each global crop are
turned into soft codes by equipartition optimal transport (Sinkhorn-Knopp over
the batch: every prototype gets N / K of the examples), and every *other* crop
must predict those codes with a softmax over its own scores. Codes are
targets: no gradient flows into them.

Sinkhorn's column marginals are over the *global* batch: under ``jax.jit`` with
the batch sharded, ``sinkhorn_knopp``'s column log-sum-exps become all-reduces,
which is what SwAV's distributed_sinkhorn does with all_reduce. Computations
are float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl.sinkhorn import sinkhorn_knopp

__all__ = ["swav_codes", "swav_loss"]

# einsum precision: no TF32/bf16 passes on accelerators for a float32 loss.
_HIGHEST = jax.lax.Precision.HIGHEST


def swav_codes(scores: jax.Array, *, epsilon: float = 0.05, num_iters: int = 3) -> jax.Array:
    """SwAV's codes: Sinkhorn-Knopp on each global crop's [N, K] scores, no gradient.

    Q_t proportional to exp(scores[t] / epsilon), rescaled so that every row
    (example) sums to 1 and every column (prototype) to N / K; each crop is
    balanced on its own, as SwAV runs distributed_sinkhorn per crop. With the
    same number of iterations (each: prototypes, then examples) this is
    SwAV's Q (its final Q *= B makes every example's code sum to 1).

    Args:
      scores: [T, N, K] prototype scores of the T global crops.
      epsilon: entropic regularisation (SwAV: 0.05).
      num_iters: Sinkhorn iterations (SwAV: 3).

    Returns:
      [T, N, K] float32 codes, each row a distribution over K, under
      ``stop_gradient``.
    """
    if scores.ndim != 3:
        raise ValueError(f"swav_codes expects scores [T, N, K], got {scores.shape}")
    scores = jax.lax.stop_gradient(scores.astype(jnp.float32))
    sinkhorn = lambda s: sinkhorn_knopp(s, epsilon=epsilon, num_iters=num_iters)
    return jax.lax.stop_gradient(jax.vmap(sinkhorn)(scores))


def swav_loss(scores: jax.Array, codes: jax.Array, *, temperature: float | jax.Array) -> jax.Array:
    """SwAV's swapped-prediction cross-entropy.

    loss = mean over global crops t < T, and over the other crops v != t, of
      mean_n -sum_k codes[t, n, k] * log_softmax(scores[v, n] / temperature)_k.

    Args:
      scores: [C, N, K] prototype scores (dot products of the L2-normalised
        projections with the L2-normalised prototypes) of all C crops; the
        first T are the global crops the codes come from, in the same order.
      codes: [T, N, K] targets of the global crops (see ``swav_codes``); no
        gradient flows into them.
      temperature: softmax temperature (SwAV: 0.1).

    Returns:
      Scalar float32 loss.
    """
    if scores.ndim != 3 or codes.ndim != 3:
        raise ValueError(
            f"swav_loss expects scores [C, N, K] and codes [T, N, K], got {scores.shape} "
            f"and {codes.shape}"
        )
    num_crops, n, k = scores.shape
    num_global = codes.shape[0]
    if codes.shape[1:] != (n, k) or not 1 <= num_global <= num_crops or num_crops < 2:
        raise ValueError(
            f"codes {codes.shape} must be [T, N, K] with 1 <= T <= C for scores {scores.shape} "
            "(C >= 2; the first T crops are the global crops)"
        )
    log_p = jax.nn.log_softmax(scores.astype(jnp.float32) / temperature, axis=-1)
    q = jax.lax.stop_gradient(codes.astype(jnp.float32))
    # [T, C] batch-mean cross-entropies, contracted over (N, K) without a [T, C, N, K] product.
    ce = -jnp.einsum("tnk,vnk->tv", q, log_p, precision=_HIGHEST) / n
    pairs = (jnp.arange(num_crops)[None, :] != jnp.arange(num_global)[:, None]).astype(jnp.float32)
    return jnp.sum(ce * pairs) / jnp.sum(pairs)
