"""KoLeo: the Kozachenko-Leonenko entropy regulariser that spreads embeddings (DINOv2).

From Sablayrolles et al. (2019), "Spreading vectors for similarity search":
the Kozachenko-Leonenko estimator of differential entropy is, up to
constants, the mean log distance of each point to its nearest neighbour, so
minimising -mean log rho_i spreads the L2-normalised embeddings over the
sphere. DINOv2 adds it (weight 0.1) on the class tokens of each global crop.

DINOv2 computes it on each GPU's local batch; here it is a function of the
array it is given, so under ``jax.jit`` on a sharded global batch the
neighbours come from the global batch. Computations are float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jssl.losses.contrastive import l2_normalize

__all__ = ["koleo_loss"]

# einsum precision: no TF32/bf16 passes on accelerators for a float32 loss.
_HIGHEST = jax.lax.Precision.HIGHEST
_EPS = 1e-8  # DINOv2: F.normalize(eps=1e-8), PairwiseDistance(eps=1e-8), log(d + 1e-8)


def koleo_loss(x: jax.Array) -> jax.Array:
    """KoLeo loss: -mean_i log(||x_i - x_nn(i)|| + 1e-8) of the L2-normalised rows.

    x is L2-normalised (norms floored at 1e-8); nn(i) is the other row with the
    largest inner product with row i (the nearest one on the sphere). As in
    DINOv2, the neighbour is chosen without gradient and the distance is
    torch's PairwiseDistance(eps=1e-8), ||x_i - x_nn(i) + 1e-8||: the 1e-8 added
    to every component keeps the distance, and its gradient, finite for
    duplicate rows (it moves the loss by about 1e-8 otherwise).

    Args:
      x: [N, D] embeddings, N >= 2.

    Returns:
      Scalar float32 loss.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo_loss expects x [N, D] with N >= 2, got {x.shape}")
    x = l2_normalize(x.astype(jnp.float32), eps=_EPS)
    dots = jnp.einsum("nd,md->nm", x, x, precision=_HIGHEST)
    # A row is never its own neighbour (DINOv2 fills the diagonal with -1).
    dots = jnp.where(jnp.eye(x.shape[0], dtype=bool), -jnp.inf, jax.lax.stop_gradient(dots))
    neighbours = jnp.take(x, jnp.argmax(dots, axis=1), axis=0)
    distances = jnp.sqrt(jnp.sum(jnp.square(x - neighbours + _EPS), axis=-1))
    return -jnp.mean(jnp.log(distances + _EPS))
