"""LeJEPA (Balestriero & LeCun, 2025): SIGReg, the sliced Epps-Pulley test of an isotropic
Gaussian, and the LeJEPA objective (the views' agreement plus SIGReg).

Written from the authors' code (rbalestr-lab/lejepa at eddffdd): ``EppsPulley`` in
``lejepa/univariate/epps_pulley.py`` (17 trapezoid knots on [0, 3], the ECF's symmetry
doubling the weights, N of the global batch), the slicing of
``lejepa/multivariate/slicing.py`` (column-normalised directions, the statistic's mean), and
``MINIMAL.md``'s loss (per-view SIGReg, ``lambda * sigreg + (1 - lambda) * invariance``).
The slice directions are an input: draw them outside the loss from the step's key. Every
formula is on the global batch, so under ``jax.jit`` with the batch sharded the means over
samples are global (the official code's all-reduce).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["epps_pulley", "lejepa_loss", "sigreg"]


def _knots(num_points: int, t_max: float) -> tuple[jax.Array, jax.Array]:
    """(t [J], weights [J]): trapezoid knots on [0, t_max], weights doubled for the ECF's
    symmetry and multiplied by the standard normal's characteristic function."""
    if num_points < 3 or num_points % 2 == 0:
        raise ValueError(f"num_points must be odd and >= 3, got {num_points}")
    t = jnp.linspace(0.0, t_max, num_points, dtype=jnp.float32)
    dt = t_max / (num_points - 1)
    weights = jnp.full((num_points,), 2.0 * dt, jnp.float32).at[0].set(dt).at[-1].set(dt)
    return t, weights * jnp.exp(-0.5 * t**2)


def epps_pulley(x: jax.Array, *, num_points: int = 17, t_max: float = 3.0) -> jax.Array:
    """Epps-Pulley statistic of every column of ``x`` [..., N, S] against N(0, 1): [..., S].

    T = N * sum_j w_j ((mean_n cos(t_j x_n) - exp(-t_j^2 / 2))^2 + (mean_n sin(t_j x_n))^2),
    with N the samples on axis -2 (the global batch) and w_j the trapezoid weights above.
    """
    x = jnp.asarray(x, jnp.float32)
    t, weights = _knots(num_points, t_max)
    tx = x[..., None] * t  # [..., N, S, J]
    cos_mean = jnp.mean(jnp.cos(tx), axis=-3)  # [..., S, J]
    sin_mean = jnp.mean(jnp.sin(tx), axis=-3)
    err = jnp.square(cos_mean - jnp.exp(-0.5 * t**2)) + jnp.square(sin_mean)
    return x.shape[-2] * jnp.sum(err * weights, axis=-1)


def sigreg(
    x: jax.Array, directions: jax.Array, *, num_points: int = 17, t_max: float = 3.0
) -> jax.Array:
    """SIGReg of embeddings ``x`` [..., N, D] along ``directions`` [D, S]: scalar.

    The directions' columns are normalised to unit length (they carry no gradient); the
    result is the mean over the leading axes and the S slices of ``epps_pulley(x @ A)``.
    """
    x = jnp.asarray(x, jnp.float32)
    a = jax.lax.stop_gradient(jnp.asarray(directions, jnp.float32))
    a = a / jnp.linalg.norm(a, axis=0, keepdims=True)
    projected = jnp.einsum("...nd,ds->...ns", x, a, precision=jax.lax.Precision.HIGHEST)
    return jnp.mean(epps_pulley(projected, num_points=num_points, t_max=t_max))


def lejepa_loss(
    views: jax.Array,
    directions: jax.Array,
    *,
    num_global_views: int | None = None,
    lambda_: float = 0.02,
    num_points: int = 17,
    t_max: float = 3.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """LeJEPA's objective on projector outputs ``views`` [V, N, K], global views first.

    Returns float32 scalars (total, invariance, sigreg):
    centre = mean of the first G views (``num_global_views``; None: all V),
    invariance = mean over v, n, k of (centre - views[v])^2 over all V views,
    sigreg = ``sigreg(views, directions)`` (each view tested on its own N samples),
    total = lambda_ * sigreg + (1 - lambda_) * invariance. Nothing is detached.
    """
    views = jnp.asarray(views, jnp.float32)
    g = views.shape[0] if num_global_views is None else num_global_views
    if not 1 <= g <= views.shape[0]:
        raise ValueError(f"num_global_views={g}: must be in [1, {views.shape[0]}]")
    centre = jnp.mean(views[:g], axis=0)
    invariance = jnp.mean(jnp.square(centre - views))
    sig = sigreg(views, directions, num_points=num_points, t_max=t_max)
    total = lambda_ * sig + (1.0 - lambda_) * invariance
    return total, invariance, sig
