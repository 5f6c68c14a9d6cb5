"""Pretext-task losses: classification of transforms, reconstruction, bottleneck
penalties (sparsity, vector quantisation), the VAE's ELBO terms and equivariance.

All are pure functions of arrays, computed in float32, averaged over the global
batch (under jit over the mesh XLA adds the collectives).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "classification_loss",
    "codebook_usage",
    "equivariance_loss",
    "gaussian_kl",
    "gaussian_nll",
    "l1_sparsity",
    "masked_mse",
    "soft_cross_entropy",
    "top1_accuracy",
    "vq_losses",
]


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy: -mean_n log softmax(logits[n])[labels[n]].

    Args:
      logits: [N, K].
      labels: [N] integers in [0, K).
    """
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=-1))


def top1_accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows of logits [N, K] whose argmax equals labels [N]."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))


def soft_cross_entropy(
    logits: jax.Array, targets: jax.Array, *, weights: jax.Array | None = None
) -> jax.Array:
    """sum_n w_n * (-sum_k t_nk log softmax(logits_n)_k) / sum_n w_n.

    Args:
      logits: [..., K]; targets: [..., K] distributions.
      weights: optional [...] per-position weights (Zhang's class rebalancing);
        uniform when None.
    """
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.sum(targets.astype(jnp.float32) * log_p, axis=-1)
    if weights is None:
        return jnp.mean(ce)
    weights = weights.astype(jnp.float32)
    return jnp.sum(weights * ce) / jnp.maximum(jnp.sum(weights), 1e-12)


def masked_mse(
    prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """Mean squared error over the masked elements: sum(m (p - t)^2) / sum(m).

    Args:
      prediction, target: [B, H, W, C].
      mask: broadcastable to them (e.g. [B, H, W, 1]), 1/True where the loss
        counts; None means everywhere (plain MSE).
    """
    err = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    if mask is None:
        return jnp.mean(err)
    m = jnp.broadcast_to(mask.astype(jnp.float32), err.shape)
    return jnp.sum(m * err) / jnp.maximum(jnp.sum(m), 1.0)


def l1_sparsity(code: jax.Array) -> jax.Array:
    """Mean over examples of the L1 norm of the code [B, K] divided by K."""
    return jnp.mean(jnp.abs(code.astype(jnp.float32)))


def vq_losses(z_e: jax.Array, z_q: jax.Array) -> tuple[jax.Array, jax.Array]:
    """VQ-VAE's codebook and commitment terms (van den Oord et al. 2017).

    codebook = mean ||sg(z_e) - z_q||^2 (moves the codes), commitment =
    mean ||z_e - sg(z_q)||^2 (keeps the encoder near its codes; the caller
    weights it by beta, 0.25 in the paper). Means are over all elements.

    Args:
      z_e: encoder outputs [..., D]; z_q: their nearest codes [..., D].
    """
    z_e = z_e.astype(jnp.float32)
    z_q = z_q.astype(jnp.float32)
    codebook = jnp.mean(jnp.square(jax.lax.stop_gradient(z_e) - z_q))
    commitment = jnp.mean(jnp.square(z_e - jax.lax.stop_gradient(z_q)))
    return codebook, commitment


def codebook_usage(indices: jax.Array, num_codes: int) -> tuple[jax.Array, jax.Array]:
    """(fraction of assignments per code [K], perplexity exp(H(usage))) of code indices."""
    counts = jnp.sum(jax.nn.one_hot(indices.reshape(-1), num_codes, dtype=jnp.float32), axis=0)
    usage = counts / jnp.maximum(jnp.sum(counts), 1.0)
    entropy = -jnp.sum(jnp.where(usage > 0, usage * jnp.log(jnp.maximum(usage, 1e-30)), 0.0))
    return usage, jnp.exp(entropy)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, I)) per example, summed over the last axis.

    = 0.5 * sum(exp(log_var) + mean^2 - 1 - log_var). Returns [B].
    """
    mean = mean.astype(jnp.float32)
    log_var = log_var.astype(jnp.float32)
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


def gaussian_nll(x: jax.Array, mean: jax.Array, log_scale: jax.Array) -> jax.Array:
    """-log N(x; mean, exp(log_scale)^2) per example, summed over all but the first axis.

    Per element: 0.5 log(2 pi) + log_scale + 0.5 ((x - mean) / exp(log_scale))^2;
    ``log_scale`` broadcasts against x (e.g. one per channel). Returns [B] in nats.
    """
    x = x.astype(jnp.float32)
    mean = mean.astype(jnp.float32)
    log_scale = jnp.broadcast_to(log_scale.astype(jnp.float32), x.shape)
    z = (x - mean) * jnp.exp(-log_scale)
    nll = 0.5 * math.log(2 * math.pi) + log_scale + 0.5 * jnp.square(z)
    return jnp.sum(nll.reshape(x.shape[0], -1), axis=-1)


def equivariance_loss(a: jax.Array, b: jax.Array, *, eps: float = 1e-6) -> jax.Array:
    """Mean over all positions of 2 - 2 cos(a, b) along the channel axis.

    a, b: [B, h, w, C] feature maps (f(pi x) and pi'(f x)). 0 when every
    position's feature vectors point the same way, 4 when opposite.
    """
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    na = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), eps)
    nb = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), eps)
    return jnp.mean(2.0 - 2.0 * jnp.sum(na * nb, axis=-1))
