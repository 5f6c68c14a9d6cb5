"""Label-free quality of a representation: RankMe (Garrido et al., 2023) and LiDAR (Thilak
et al., 2024), the effective rank of the embeddings and of their linear discriminant.

Both are the exponential of an entropy of a normalised spectrum, so they lie in [1, the
matrix's rank]: a collapsed representation scores near 1, an isotropic one near its
dimension. Written as stable-pretraining's callbacks (``callbacks/rankme.py``,
``callbacks/lidar.py``), in float32, jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["lidar", "rankme"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _spectral_entropy_exp(p: jax.Array) -> jax.Array:
    return jnp.exp(-jnp.sum(p * jnp.log(p)))


def rankme(embeddings: jax.Array, *, eps: float = 1e-7) -> jax.Array:
    """RankMe of ``embeddings`` [N, D]: exp(entropy of p), p = s / sum(s) + eps over the
    singular values s. A float32 scalar in [1, min(N, D)] (up to eps); no centring."""
    x = jnp.asarray(embeddings, jnp.float32)
    s = jnp.linalg.svd(x, compute_uv=False)
    return _spectral_entropy_exp(s / jnp.sum(s) + eps)


def lidar(embeddings: jax.Array, *, delta: float = 1e-4, eps: float = 1e-8) -> jax.Array:
    """LiDAR of ``embeddings`` [n, q, D]: n surrogate classes (clean images) of q augmented
    views each. The effective rank of S_w^-1/2 S_b S_w^-1/2 (between-class scatter over
    the within-class scatter, regularised by ``delta`` I): a float32 scalar in
    [1, min(D, n - 1)] (up to eps)."""
    e = jnp.asarray(embeddings, jnp.float32)
    n, q, d = e.shape
    if n < 2 or q < 2:
        raise ValueError(f"lidar needs n >= 2 classes of q >= 2 views, got [n, q, D] = {e.shape}")
    class_means = jnp.mean(e, axis=1)  # [n, D]
    between = class_means - jnp.mean(class_means, axis=0)
    s_b = jnp.einsum("nd,ne->de", between, between, precision=_HIGHEST) / (n - 1)
    within = (e - class_means[:, None]).reshape(n * q, d)
    s_w = jnp.einsum("nd,ne->de", within, within, precision=_HIGHEST) / (n * (q - 1))
    s_w = s_w + delta * jnp.eye(d, dtype=jnp.float32)
    values, vectors = jnp.linalg.eigh(s_w)
    mm = lambda a, b: jnp.matmul(a, b, precision=_HIGHEST)
    inv_sqrt = mm(vectors * jax.lax.rsqrt(jnp.maximum(values, eps)), vectors.T)
    sigma = mm(mm(inv_sqrt, s_b), inv_sqrt)
    lam = jnp.maximum(jnp.linalg.eigvalsh((sigma + sigma.T) / 2), 0.0)
    return _spectral_entropy_exp((lam + eps) / jnp.sum(lam + eps))
