"""LeJEPA (Balestriero & LeCun, 2025): multi-view invariance plus SIGReg, the sliced
Epps-Pulley test that the embeddings are an isotropic Gaussian. No teacher, no
stop-gradient, no predictor: one network and one hyperparameter (``lejepa.lambda_``).

- views: G global and L local crops (``augment.multi_crop``), every crop with the same
  colour policy: the authors' README (rbalestr-lab/lejepa) has 2 global crops of 30-100%
  and 6 local crops of 5-30%, jitter (0.4, 0.4, 0.2, 0.1) p 0.8, grey 0.2, blur 0.5 and
  solarisation 0.2 on all of them;
- network: backbone -> projector (Linear-BN-ReLU per hidden width, then Linear; MINIMAL.md's
  ``MLP(512, [2048, 2048, proj_dim], norm_layer=BatchNorm1d)``), ``EncoderWithHead``. The
  backbone runs on the globals and on the locals as two batches (two resolutions), the
  projector once on all crops (stable-pretraining's ``LeJEPA.forward``);
- loss: ``losses.lejepa_loss`` on the projections [V, N, K], globals first: the mean of the
  global views is every view's target (invariance, MSE), SIGReg per view along
  ``lejepa.num_slices`` directions drawn afresh every step from the step's key (the same
  on every device and process, as the authors' step-seeded generator), total
  ``lambda * sigreg + (1 - lambda) * invariance`` (MINIMAL.md). Written on the global
  batch: the ECF means are global (the official all-reduce), so the loss and its gradient
  do not depend on the number of devices.

Collapse monitor: ``rankme``, the effective rank (``jssl.evaluation.rankme``) of the
backbone features of the first global crop, logged every step; the method state keeps
its value at the first step, and a value under ``lejepa.rankme_warn_fraction`` of it is
warned. Also ``z_std`` / ``h_std``. The evaluation adds RankMe of the test features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import MAX_WIDTH, POSITIVE, PROBABILITY, integer, real
from jssl.evaluation.rank import rankme
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    return parts.projection_network(config, config.lejepa)


def init_method_state(params, batch_stats, config, run) -> dict:
    """RankMe of the first step's features (0 until that step has run)."""
    return {"rankme_start": jnp.zeros((), jnp.float32)}


def slice_directions(key: jax.Array, config: ml_collections.ConfigDict) -> jax.Array:
    """[K, S] Gaussian directions of this step (``sigreg`` normalises the columns)."""
    return jax.random.normal(key, (config.lejepa.proj_dim, config.lejepa.num_slices))


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    c = config.lejepa

    def loss_fn(params, batch_stats, views, method_state, step, key):
        z, aux, batch_stats = apply_train(model, params, batch_stats, parts.crop_groups(views))
        projections = parts.per_crop(z, views)  # [G + L, B, K], globals first
        num_global = views["global"].shape[1]
        total, invariance, sigreg = losses.lejepa_loss(
            projections,
            slice_directions(key, config),
            num_global_views=num_global,
            lambda_=c.lambda_,
            num_points=c.num_points,
            t_max=c.t_max,
        )
        h = aux["features"]
        rank = rankme(jax.lax.stop_gradient(parts.per_crop(h, views)[0]))
        start = jnp.where(step == 0, rank, method_state["rankme_start"])
        metrics = {
            "invariance": invariance,
            "sigreg": sigreg,
            "rankme": rank,
            "rankme_start": start,
            "z_std": losses.embedding_std(z),
            "h_std": losses.embedding_std(h),
        }
        return total, (batch_stats, {"rankme_start": start}, metrics)

    return loss_fn


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    out = parts.std_warnings(metrics, {"z_std": config.lejepa.proj_dim})
    rank, start = metrics.get("rankme"), metrics.get("rankme_start")
    fraction = config.lejepa.rankme_warn_fraction
    if rank is not None and start and rank < fraction * start:
        out.append(
            f"RankMe {rank:.2f} fell under {fraction:g} of its value at the first step "
            f"({start:.2f}): the features are collapsing onto a few directions; raise "
            "lejepa.lambda_ or lower the learning rate"
        )
    return out


def check(values: dict) -> list[str]:
    problems = parts.multi_crop_problems(values, "LeJEPA")
    points = values.get("lejepa.num_points")
    if points is not None and points % 2 == 0:
        problems.append(
            f"lejepa.num_points={points}: the trapezoid quadrature needs an odd number of "
            "knots (the authors assert it); use 17"
        )
    return problems


LEJEPA = Method(
    name="lejepa",
    build_model=build_model,
    make_views=parts.multi_crop_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    collapse_warnings=collapse_warnings,
    evaluators=("knn", "linear_probe", "kmeans", "rankme", "lidar"),
    fields={
        **parts.MULTI_CROP_FIELDS,
        "augment.local_solarize_p": PROBABILITY,
        **parts.projection_fields("lejepa"),
        "lejepa.lambda_": real(0.0, 1.0),
        "lejepa.num_slices": integer(1, MAX_WIDTH),
        "lejepa.num_points": integer(3, 1025),
        "lejepa.t_max": POSITIVE,
        "lejepa.rankme_warn_fraction": PROBABILITY,
    },
    check=check,
)
