"""Networks of the momentum-encoder and prototype methods (MoCo v2/v3, NNCLR, SwAV).

- ``ProjectionMLP``: Linear-BN-ReLU blocks, a final Linear and optionally a
  BatchNorm on the output (MoCo v3's projector ends in BN without scale and
  shift, NNCLR's in a BN with a learned scale). Linear layers followed by BN
  have no bias (BN's shift replaces it), and the output BN has no shift: the
  methods L2-normalise z or feed it to a predictor whose first Linear is
  followed by BN, both blind to a constant shift, so such a parameter only gets
  rounding-noise gradients, which Adam blows up to whole steps.
- ``ProjectorPredictor``: backbone -> projector -> optional predictor. Built
  without the predictor it is the momentum (key) encoder, whose parameter tree
  ``{"backbone", "projector"}`` is that subtree of the online network's.
- ``PrototypeNet``: SwAV's backbone -> projector -> L2 normalise -> bias-free
  linear layer of K prototypes (``prototypes``, kernel [D, K] with unit-norm
  columns at initialisation). It takes one batch or a tuple of batches of
  different sizes (multi-crop): the backbone runs once per group, the
  projector once on all of them, as SwAV does.

Every ``__call__(x, *, train)`` returns ``(outputs, aux)`` with
``aux["features"]`` the backbone's pooled output h (what evaluation uses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.models.layers import batch_norm

Dtype = Any

__all__ = ["PrototypeNet", "ProjectionMLP", "ProjectorPredictor", "unit_columns"]


def _l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
    return x / jnp.maximum(norm, eps)


class ProjectionMLP(nn.Module):
    """Linear-(BN)-ReLU per hidden width, a final Linear, optionally a BN on the output.

    Attributes:
      hidden_dims: width of each hidden layer; () gives a single Linear.
      out_dim: output width.
      use_bn: BatchNorm after each hidden Linear.
      last_bn: BatchNorm on the output (MoCo v3, NNCLR).
      last_bn_scale: False drops the output BN's scale (MoCo v3); it never has a shift.
      dtype: compute dtype; parameters are always float32.

    Call: ``x [B, D]``, ``train`` -> ``[B, out_dim]`` float32.
    """

    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True
    last_bn: bool = False
    last_bn_scale: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = x.astype(self.dtype)
        for width in self.hidden_dims:
            x = nn.Dense(
                width, use_bias=not self.use_bn, dtype=self.dtype, param_dtype=jnp.float32
            )(x)
            if self.use_bn:
                x = batch_norm(train, dtype=self.dtype)(x)
            x = nn.relu(x)
        x = nn.Dense(
            self.out_dim, use_bias=not self.last_bn, dtype=self.dtype, param_dtype=jnp.float32
        )(x)
        if self.last_bn:
            # No shift: what follows (L2 normalisation, or a predictor whose first Linear
            # feeds a BN) removes a constant shift, so its gradient is rounding noise only.
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-5,
                use_scale=self.last_bn_scale,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=jnp.float32,
            )(x)
        return x.astype(jnp.float32)


class ProjectorPredictor(nn.Module):
    """backbone -> projector -> predictor (optional).

    Returns ``(p, aux)``: p the predictor's output (the projection z when there
    is no predictor), ``aux["features"]`` the backbone's h and
    ``aux["projection"]`` z.
    """

    backbone: nn.Module
    projector: nn.Module
    predictor: nn.Module | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool):
        h, aux = self.backbone(x, train=train)
        z = self.projector(h, train=train)
        p = z if self.predictor is None else self.predictor(z, train=train)
        return p, {**aux, "features": h, "projection": z}


def unit_columns(base=None):
    """Initializer of a [D, K] kernel whose K columns have unit L2 norm (SwAV's prototypes):
    ``base`` (default LeCun normal) rescaled column by column."""
    base = nn.initializers.lecun_normal() if base is None else base

    def init(key, shape, dtype=jnp.float32):
        return _l2_normalize(base(key, shape, dtype), axis=0).astype(dtype)

    return init


class PrototypeNet(nn.Module):
    """SwAV: backbone -> projector -> L2 normalise -> K prototypes (bias-free linear).

    ``x`` is an image batch [B, H, W, C] or a tuple of batches (crop groups of
    different sizes): the backbone runs on each group, the projector and the
    prototypes once on the concatenated features, so the projector's
    BatchNorm statistics are those of all crops together.

    Returns ``(scores [sum B, K] float32, aux)`` with ``aux["features"]`` h and
    ``aux["embedding"]`` the unit-norm z; scores are z . c_k for the prototype
    columns c_k of ``prototypes/kernel`` (kept at unit norm by the method).
    """

    backbone: nn.Module
    projector: nn.Module
    num_prototypes: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        groups = tuple(x) if isinstance(x, (tuple, list)) else (x,)
        outs = [self.backbone(g, train=train) for g in groups]
        h = jnp.concatenate([o[0] for o in outs], axis=0)
        aux = dict(outs[0][1]) if len(groups) == 1 else {}
        z = _l2_normalize(self.projector(h, train=train).astype(jnp.float32))
        scores = nn.Dense(
            self.num_prototypes,
            use_bias=False,
            kernel_init=unit_columns(),
            param_dtype=jnp.float32,
            precision=jax.lax.Precision.HIGHEST,
            name="prototypes",
        )(z)
        return scores.astype(jnp.float32), {**aux, "features": h, "embedding": z}
