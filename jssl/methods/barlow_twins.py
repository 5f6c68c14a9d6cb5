"""Barlow Twins (Zbontar et al., 2021): redundancy reduction on the cross-correlation.

- views: BYOL's asymmetric policy (the paper's: blur p 1.0 / 0.1, solarisation
  p 0 / 0.2 on the two views), ``byol.asymmetric_views``;
- model: backbone -> projector (``SiameseProjector``: Linear-BN-ReLU per hidden
  width, then Linear without bias; the paper's 8192-8192-8192), ``EncoderWithHead``;
- loss: ``barlow_scale * barlow_twins_loss(z1, z2, lambda_)``: each view's z
  standardised per dimension over the global batch (BatchNorm1d(affine=False)),
  c = z1_n^T z2_n / N, sum_i (1 - c_ii)^2 + lambda * sum_{i != j} c_ij^2.
  ``barlow_twins.scale_loss`` multiplies it (1 in the paper's final code;
  solo-learn's CIFAR recipe uses 0.1).

Both views go through the network as one batch of 2N (global BatchNorm
statistics); the loss's statistics are those of the global batch of each view
under ``jax.jit`` with the batch sharded (the official code all-reduces c).

Collapse monitor: ``z_std``, the mean per-dimension std of the L2-normalised
projections (about 1/sqrt(D) when spread, 0 collapsed; warned below
0.1 / sqrt(D)), and ``z_std_min``, its smallest dimension (dimensional collapse).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.losses.contrastive import l2_normalize
from jssl.methods import byol
from jssl.methods.base import EncoderWithHead, Method, apply_train
from jssl.models import create_model
from jssl.models.siamese_heads import SiameseProjector


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    b = config.barlow_twins
    head = SiameseProjector(hidden_dims=tuple(b.proj_hidden_dims), out_dim=b.proj_dim, dtype=dtype)
    return EncoderWithHead(backbone=backbone, head=head)


def dimension_stds(z: jnp.ndarray) -> jnp.ndarray:
    """[D] per-dimension std over the batch of the L2-normalised embeddings z [N, D]."""
    return jnp.std(l2_normalize(z.astype(jnp.float32)), axis=0)


def std_metrics(z: jnp.ndarray, h: jnp.ndarray) -> dict:
    stds = dimension_stds(z)
    return {
        "z_std": jnp.mean(stds),
        "z_std_min": jnp.min(stds),
        "h_std": losses.embedding_std(h),
    }


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return byol.std_warnings(metrics, {"z_std": config.barlow_twins.proj_dim})


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    b = config.barlow_twins

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key
        v1, v2 = views
        n = v1.shape[0]
        z, aux, batch_stats = apply_train(model, params, batch_stats, jnp.concatenate([v1, v2]))
        loss = b.scale_loss * losses.barlow_twins_loss(z[:n], z[n:], lambda_=b.lambda_)
        return loss, (batch_stats, method_state, std_metrics(z, aux["features"]))

    return loss_fn


BARLOW_TWINS = Method(
    name="barlow_twins",
    build_model=build_model,
    make_views=byol.asymmetric_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
)
