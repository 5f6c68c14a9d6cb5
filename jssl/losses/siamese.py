"""Siamese losses without negatives: BYOL's normalised regression and SimSiam's cosine.

Both compare an online prediction p of one view with a target embedding z of
the other view, and neither may train the target through this term: z is under
``stop_gradient`` (BYOL's target network is an EMA; SimSiam's stop-gradient is
what prevents its collapse). Both are per-example means, so they are global
under ``jax.jit`` with the batch sharded. The caller symmetrises over the two
views. Computations are float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl.losses.contrastive import l2_normalize

__all__ = ["byol_loss", "simsiam_loss"]

# BYOL's l2_normalize floors the squared norm at 1e-12, i.e. the norm at 1e-6;
# SimSiam's torch.nn.CosineSimilarity floors each norm at 1e-8.
_BYOL_EPS = 1e-6
_SIMSIAM_EPS = 1e-8


def _check_pair(name: str, p: jax.Array, z: jax.Array) -> None:
    if p.shape != z.shape or p.ndim != 2:
        raise ValueError(f"{name} expects p and z of one shape [N, D], got {p.shape} and {z.shape}")


def _cosine(p: jax.Array, z: jax.Array, eps: float) -> jax.Array:
    """[N] cos(p_n, stop_gradient(z_n)) in float32."""
    p = l2_normalize(p.astype(jnp.float32), eps=eps)
    z = l2_normalize(jax.lax.stop_gradient(z).astype(jnp.float32), eps=eps)
    return jnp.sum(p * z, axis=-1)


def byol_loss(p: jax.Array, z: jax.Array) -> jax.Array:
    """BYOL's regression loss (Grill et al., 2020): mean_n 2 - 2 cos(p_n, sg(z_n)).

    Equal to the mean squared distance of the L2-normalised p_n and z_n, as in
    deepmind-research/byol.

    Args:
      p: [N, D] online predictions of one view.
      z: [N, D] target projections of the other view (no gradient flows into z).

    Returns:
      Scalar float32 loss in [0, 4].
    """
    _check_pair("byol_loss", p, z)
    return jnp.mean(2.0 - 2.0 * _cosine(p, z, _BYOL_EPS))


def simsiam_loss(p: jax.Array, z: jax.Array) -> jax.Array:
    """SimSiam's loss (Chen & He, 2021): mean_n -cos(p_n, sg(z_n)).

    The paper's symmetric loss is (simsiam_loss(p1, z2) + simsiam_loss(p2, z1)) / 2.

    Args:
      p: [N, D] predictor outputs of one view.
      z: [N, D] projections of the other view (no gradient flows into z).

    Returns:
      Scalar float32 loss in [-1, 1].
    """
    _check_pair("simsiam_loss", p, z)
    return -jnp.mean(_cosine(p, z, _SIMSIAM_EPS))
