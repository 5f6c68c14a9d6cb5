"""VICReg (Bardes et al., 2022): variance-invariance-covariance regularisation.

- views: BYOL's asymmetric policy (facebookresearch/vicreg ``augmentations.py``:
  blur p 1.0 / 0.1, solarisation p 0 / 0.2), ``parts.asymmetric_views``;
- model: backbone -> expander (``MLPHead(last_bias=False)``: Linear-BN-ReLU per hidden
  width, then Linear without bias, as facebookresearch/vicreg; the paper's
  8192-8192-8192), ``EncoderWithHead``;
- loss: ``vicreg_loss(z1, z2, sim_coeff, std_coeff, cov_coeff)`` on the global
  batch: invariance (MSE), variance (hinge of each dimension's std at 1,
  averaged over the two views as the official code) and covariance
  (off-diagonal covariance^2 / D, summed over the views); each term is logged.

Both views go through the network as one batch of 2N (global BatchNorm
statistics); under ``jax.jit`` with the batch sharded the loss's statistics are
global (the official code all-gathers the embeddings).

Collapse monitor: ``z_std`` (mean per-dimension std of the L2-normalised
expander outputs, warned below 0.1 / sqrt(D)), ``z_std_min`` (its smallest
dimension) and ``z_raw_std``, the mean per-dimension std of the raw outputs
(per view, averaged over the two), the quantity the variance hinge holds at 1
or more (VICReg's collapse sends it to 0 and the variance term to 1).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import NON_NEGATIVE
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    return parts.projection_network(config, config.vicreg, last_bias=False)


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    out = parts.std_warnings(metrics, {"z_std": config.vicreg.proj_dim})
    var = metrics.get("variance")
    if var is not None and var > 0.9:
        out.append(
            f"variance term {var:.3f} is near 1: most expander dimensions have a std near 0 "
            "(collapse); raise vicreg.std_coeff"
        )
    return out


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    v = config.vicreg

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key
        v1, v2 = views
        n = v1.shape[0]
        z, aux, batch_stats = apply_train(model, params, batch_stats, jnp.concatenate([v1, v2]))
        total, invariance, variance, covariance = losses.vicreg_loss(
            z[:n], z[n:], sim_coeff=v.sim_coeff, std_coeff=v.std_coeff, cov_coeff=v.cov_coeff
        )
        raw = z.astype(jnp.float32)
        raw_std = (jnp.mean(jnp.std(raw[:n], axis=0)) + jnp.mean(jnp.std(raw[n:], axis=0))) / 2
        metrics = {
            "invariance": invariance,
            "variance": variance,
            "covariance": covariance,
            "z_raw_std": raw_std,
            **parts.std_metrics(z, aux["features"]),
        }
        return total, (batch_stats, method_state, metrics)

    return loss_fn


def check(values: dict) -> list[str]:
    coeffs = [values.get(f"vicreg.{k}_coeff") for k in ("sim", "std", "cov")]
    if None not in coeffs and not any(coeffs):
        return [
            "vicreg.sim_coeff=0: with std_coeff and cov_coeff 0 too the loss is 0 "
            "and nothing is learned; use VICReg's 25, 25, 1"
        ]
    return []


VICREG = Method(
    name="vicreg",
    build_model=build_model,
    make_views=parts.asymmetric_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.ASYMMETRIC_VIEW_FIELDS,
        **parts.projection_fields("vicreg"),
        "vicreg.sim_coeff": NON_NEGATIVE,
        "vicreg.std_coeff": NON_NEGATIVE,
        "vicreg.cov_coeff": NON_NEGATIVE,
    },
    check=check,
)
