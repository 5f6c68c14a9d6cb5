"""Redundancy-reduction losses on the batch statistics of two views: Barlow Twins, VICReg.

Both are functions of per-dimension statistics over the batch (means,
variances, a D x D correlation or covariance), written on the *global* batch:
under ``jax.jit`` with the batch sharded over the mesh, XLA all-reduces the
sums, which is what Barlow Twins' SyncBatchNorm and all_reduce(c) and VICReg's
all-gather do by hand. Computations are float32 whatever the input dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["barlow_twins_loss", "vicreg_loss"]

# No TF32/bf16 passes on accelerators for the D x D matrices of a float32 loss.
_HIGHEST = jax.lax.Precision.HIGHEST
_BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default
_STD_EPS = 1e-4  # VICReg: std = sqrt(var + 1e-4)


def _check_views(name: str, z1: jax.Array, z2: jax.Array) -> None:
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(
            f"{name} expects z1 and z2 of one shape [N, D], got {z1.shape} and {z2.shape}"
        )
    if z1.shape[0] < 2:
        raise ValueError(f"{name} needs a batch of at least 2 rows, got {z1.shape}")


def _off_diagonal(m: jax.Array) -> jax.Array:
    """m with its diagonal zeroed (sums of squares over i != j)."""
    return jnp.where(jnp.eye(m.shape[0], dtype=bool), 0.0, m)


def _batch_norm(z: jax.Array) -> jax.Array:
    """(z - mean) / sqrt(biased var + 1e-5) per dimension: BatchNorm1d(affine=False), training."""
    mean = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mean), axis=0)
    return (z - mean) * jax.lax.rsqrt(var + _BN_EPS)


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, *, lambda_: float = 0.0051) -> jax.Array:
    """Barlow Twins (Zbontar et al., 2021): push the cross-correlation of the views to I.

    With z1_n, z2_n each standardised per dimension over the batch (mean and
    biased variance, eps 1e-5, as BatchNorm1d(affine=False) in training),
    c = z1_n^T z2_n / N [D, D] and
      loss = sum_i (1 - c_ii)^2 + lambda_ * sum_{i != j} c_ij^2.

    Args:
      z1, z2: [N, D] projections of the two views of N images.
      lambda_: weight of the redundancy (off-diagonal) term (paper: 0.0051).

    Returns:
      Scalar float32 loss.
    """
    _check_views("barlow_twins_loss", z1, z2)
    n = z1.shape[0]
    a = _batch_norm(z1.astype(jnp.float32))
    b = _batch_norm(z2.astype(jnp.float32))
    c = jnp.einsum("ni,nj->ij", a, b, precision=_HIGHEST) / n
    on_diag = jnp.sum(jnp.square(1.0 - jnp.diagonal(c)))
    off_diag = jnp.sum(jnp.square(_off_diagonal(c)))
    return on_diag + lambda_ * off_diag


def _variance_and_covariance(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """VICReg's hinge on the std and its off-diagonal covariance term of one view [N, D]."""
    n, d = z.shape
    z = z - jnp.mean(z, axis=0)
    std = jnp.sqrt(jnp.sum(jnp.square(z), axis=0) / (n - 1) + _STD_EPS)
    cov = jnp.einsum("ni,nj->ij", z, z, precision=_HIGHEST) / (n - 1)
    return jnp.mean(jax.nn.relu(1.0 - std)), jnp.sum(jnp.square(_off_diagonal(cov))) / d


def vicreg_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """VICReg (Bardes et al., 2022), as facebookresearch/vicreg computes it.

      invariance = mean over all N x D elements of (z1 - z2)^2;
      with each view centred over the batch, std_d = sqrt(unbiased var_d + 1e-4),
      variance = mean_d relu(1 - std1_d) / 2 + mean_d relu(1 - std2_d) / 2;
      C = z^T z / (N - 1) of the centred view,
      covariance = sum_{i != j} C1_ij^2 / D + sum_{i != j} C2_ij^2 / D;
      total = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance.

    (The official code averages the two views' variance terms; solo-learn sums them.)

    Args:
      z1, z2: [N, D] expander outputs of the two views of N images (N >= 2).
      sim_coeff, std_coeff, cov_coeff: the weights (paper: 25, 25, 1).

    Returns:
      (total, invariance, variance, covariance), float32 scalars.
    """
    _check_views("vicreg_loss", z1, z2)
    z1 = z1.astype(jnp.float32)
    z2 = z2.astype(jnp.float32)
    invariance = jnp.mean(jnp.square(z1 - z2))
    var1, cov1 = _variance_and_covariance(z1)
    var2, cov2 = _variance_and_covariance(z2)
    variance = var1 / 2 + var2 / 2
    covariance = cov1 + cov2
    total = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return total, invariance, variance, covariance
