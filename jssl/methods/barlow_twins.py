"""Barlow Twins (Zbontar et al., 2021): redundancy reduction on the cross-correlation.

- views: BYOL's asymmetric policy (the paper's: blur p 1.0 / 0.1, solarisation
  p 0 / 0.2 on the two views), ``parts.asymmetric_views``;
- model: backbone -> projector (``MLPHead(last_bias=False)``: Linear-BN-ReLU per hidden
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
from jssl.checks import NON_NEGATIVE, POSITIVE
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    return parts.projection_network(config, config.barlow_twins, last_bias=False)


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return parts.std_warnings(metrics, {"z_std": config.barlow_twins.proj_dim})


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    b = config.barlow_twins

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key
        v1, v2 = views
        n = v1.shape[0]
        z, aux, batch_stats = apply_train(model, params, batch_stats, jnp.concatenate([v1, v2]))
        loss = b.scale_loss * losses.barlow_twins_loss(z[:n], z[n:], lambda_=b.lambda_)
        return loss, (batch_stats, method_state, parts.std_metrics(z, aux["features"]))

    return loss_fn


BARLOW_TWINS = Method(
    name="barlow_twins",
    build_model=build_model,
    make_views=parts.asymmetric_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.ASYMMETRIC_VIEW_FIELDS,
        **parts.projection_fields("barlow_twins"),
        "barlow_twins.lambda_": NON_NEGATIVE,
        "barlow_twins.scale_loss": POSITIVE,
    },
)
