"""Clustering heads on frozen features: H small networks trained together in one jitted loop.

The pieces every head method shares: L2-normalised features, H heads (linear, or one
hidden GELU layer) as stacked arrays, and ``fit``, the whole training as one
``lax.scan`` over steps (AdamW), so a run of thousands of steps on cached features is
one compiled program. (Neighbours are mined by ``jssl.methods.scan.mine_neighbors``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jssl.losses import l2_normalize

PyTree = Any


def normalize(x) -> jax.Array:
    """Rows scaled to unit L2 norm, float32 (``jssl.losses.l2_normalize``)."""
    return l2_normalize(jnp.asarray(x, jnp.float32))


def init(key, dim: int, num_clusters: int, *, num_heads: int, hidden: int = 0) -> dict:
    """Parameters of H heads: ``hidden`` 0 for linear heads [H, D, K], else D -> hidden -> K."""
    k1, k2 = jax.random.split(key)
    if not hidden:
        w = jax.random.normal(k1, (num_heads, dim, num_clusters)) / np.sqrt(dim)
        return {"w": w, "b": jnp.zeros((num_heads, num_clusters))}
    return {
        "w1": jax.random.normal(k1, (num_heads, dim, hidden)) / np.sqrt(dim),
        "b1": jnp.zeros((num_heads, hidden)),
        "w": jax.random.normal(k2, (num_heads, hidden, num_clusters)) / np.sqrt(hidden),
        "b": jnp.zeros((num_heads, num_clusters)),
    }


def _per_head(b: jax.Array, ndim: int) -> jax.Array:
    """A [H, F] bias shaped to add to [H, ..., F] with ``ndim`` middle axes."""
    return b.reshape(b.shape[0], *([1] * ndim), b.shape[1])


def apply(params: dict, x: jax.Array) -> jax.Array:
    """Logits [H, ..., K] of every head for features ``x`` [..., D]."""
    mid = x.ndim - 1
    if "w1" in params:
        x = jnp.einsum("...d,hdf->h...f", x, params["w1"]) + _per_head(params["b1"], mid)
        x = jax.nn.gelu(x)
        return jnp.einsum("h...f,hfk->h...k", x, params["w"]) + _per_head(params["b"], mid)
    return jnp.einsum("...d,hdk->h...k", x, params["w"]) + _per_head(params["b"], mid)


# (params, extra, key, step) -> (loss, (extra, per_head [H]))
LossFn = Callable[[PyTree, PyTree, jax.Array, jax.Array], tuple[jax.Array, tuple[PyTree, Any]]]
# (params, extra, step) -> extra, after the update (an EMA teacher follows the new params)
AfterFn = Callable[[PyTree, PyTree, jax.Array], PyTree]


def fit(
    loss_fn: LossFn,
    params: PyTree,
    extra: PyTree,
    key: jax.Array,
    *,
    steps: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    after: AfterFn | None = None,
) -> tuple[PyTree, PyTree, np.ndarray, np.ndarray]:
    """Trains ``params`` for ``steps`` AdamW steps of ``loss_fn`` in one jitted ``lax.scan``.

    Returns (params, extra, loss per step [steps], per-head loss per step [steps, H]).
    """
    tx = optax.adamw(learning_rate, weight_decay=weight_decay)

    def step(carry, inputs):
        params, opt_state, extra = carry
        i, k = inputs
        (loss, (extra, per_head)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, extra, k, i
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if after is not None:
            extra = after(params, extra, i)
        return (params, opt_state, extra), (loss, per_head)

    @jax.jit
    def run(params, extra, key):
        inputs = (jnp.arange(steps), jax.random.split(key, steps))
        (params, _, extra), history = jax.lax.scan(step, (params, tx.init(params), extra), inputs)
        return params, extra, history

    params, extra, (losses, per_head) = run(params, extra, key)
    return params, extra, np.asarray(losses), np.asarray(per_head)


def tail_loss(per_head: np.ndarray) -> np.ndarray:
    """Each head's training loss [H] over the last tenth of the steps ([steps, H] history)."""
    return per_head[-max(1, len(per_head) // 10) :].mean(axis=0)
