"""The networks that put heads on a backbone.

- ``EncoderWithHead``: backbone -> head -> optional predictor; the methods with a
  projection head (SimCLR, DINO, the clustering heads, BYOL, SimSiam, MoCo v2/v3,
  NNCLR, Barlow Twins, VICReg). ``project`` skips the predictor: it is the target or
  momentum encoder of BYOL, MoCo v3 and NNCLR, whose variables are the
  ``{"backbone", "head"}`` subtrees of the online network's.
- ``PrototypeNet``: SwAV's backbone -> projector -> L2 normalise -> K prototypes.

Both take one image batch or a tuple of crop groups of different sizes (multi-crop): the
backbone runs on each group, the head once on the concatenated features, so its
BatchNorm statistics are those of all crops together.

Every ``__call__(x, *, train)`` returns ``(outputs, aux)`` with ``aux["features"]``
the backbone's pooled output h (what evaluation uses).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.losses.contrastive import l2_normalize

__all__ = ["EncoderWithHead", "PrototypeNet", "unit_columns"]


def backbone_groups(backbone: nn.Module, x, *, train: bool) -> tuple[jax.Array, dict]:
    """(h, aux): the backbone's features of ``x``, an image batch or a tuple of crop groups
    (concatenated in order); ``aux`` is the backbone's own only for a single batch."""
    groups = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    outs = [backbone(g, train=train) for g in groups]
    if len(outs) == 1:
        return outs[0]
    return jnp.concatenate([h for h, _ in outs], axis=0), {}


class EncoderWithHead(nn.Module):
    """backbone -> head -> predictor (optional).

    ``__call__`` -> ``(z, {**backbone aux, "features": h})`` with z the head's output,
    plus ``"prediction"``: the predictor's p when there is a predictor.
    ``project`` -> the same without the predictor (it touches only the backbone and
    the head).
    """

    backbone: nn.Module
    head: nn.Module
    predictor: nn.Module | None = None

    def project(self, x, *, train: bool):
        h, aux = backbone_groups(self.backbone, x, train=train)
        z = self.head(h, train=train)
        return z, {**aux, "features": h}

    def __call__(self, x, *, train: bool):
        z, aux = self.project(x, train=train)
        if self.predictor is None:
            return z, aux
        return z, {**aux, "prediction": self.predictor(z, train=train)}


def unit_columns(base=None):
    """Initializer of a [D, K] kernel whose K columns have unit L2 norm (SwAV's prototypes):
    ``base`` (default LeCun normal) rescaled column by column."""
    base = nn.initializers.lecun_normal() if base is None else base

    def init(key, shape, dtype=jnp.float32):
        return l2_normalize(base(key, shape, dtype), axis=0).astype(dtype)

    return init


class PrototypeNet(nn.Module):
    """SwAV: backbone -> projector -> L2 normalise -> K prototypes (bias-free linear).

    ``x`` is an image batch [B, H, W, C] or a tuple of crop groups.

    Returns ``(scores [sum B, K] float32, aux)`` with ``aux["features"]`` h and
    ``aux["embedding"]`` the unit-norm z; scores are z . c_k for the prototype
    columns c_k of ``prototypes/kernel`` (kept at unit norm by the method).
    """

    backbone: nn.Module
    projector: nn.Module
    num_prototypes: int

    @nn.compact
    def __call__(self, x, *, train: bool):
        h, aux = backbone_groups(self.backbone, x, train=train)
        z = l2_normalize(self.projector(h, train=train).astype(jnp.float32))
        scores = nn.Dense(
            self.num_prototypes,
            use_bias=False,
            kernel_init=unit_columns(),
            param_dtype=jnp.float32,
            precision=jax.lax.Precision.HIGHEST,
            name="prototypes",
        )(z)
        return scores.astype(jnp.float32), {**aux, "features": h, "embedding": z}
