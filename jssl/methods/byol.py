"""BYOL (Grill et al., 2020): bootstrap your own latent, no negatives.

An online network (backbone -> projector -> predictor) regresses, for each
pair of views of an image, the projection of the other view by a target
network (backbone -> projector) that is an exponential moving average of the
online backbone and projector:

- views: two views per image with BYOL's asymmetric policy (colour jitter
  0.4/0.4/0.2/0.1 with p 0.8, grayscale 0.2; Gaussian blur p 1.0 on the first
  view and 0.1 on the second, solarisation p 0 and 0.2), made on device by
  ``augment.multi_crop`` with two global crops and no local crop;
- loss: ``byol_loss(p1, z2') + byol_loss(p2, z1')`` (symmetrised), p the
  online predictions, z' the target projections (no gradient);
- after each optimiser update the target follows the online network
  (``parts.update_momentum_encoder``; momentum 0.996 -> 1 on a cosine over the
  run, ``schedules.teacher_momentum`` bound with ``run.total_steps``).

The model is an ``EncoderWithHead`` with parameters {"backbone", "head" (the
projector), "predictor"}. Its ``__call__`` returns the projection z with
``aux["prediction"]`` = p and ``aux["features"]`` = the backbone's h (what
evaluation uses); its ``project`` method applies only backbone and head, which
is all the target is: ``method_state = {"target": EmaTeacherState(count,
params={"backbone", "head"}, batch_stats)}``. The predictor never enters the
target. The method state is part of the TrainState, so the checkpoint holds
the target and the EMA count (the schedule's position); resume is exact.

Forward passes: the online network sees both views as one batch of 2N (its
BatchNorm statistics are those of the global batch, as with SyncBN); the
target sees the same 2N images in training mode (batch statistics, as in
deepmind-research/byol) and its updated running statistics are dropped (they
follow the online network's by EMA in ``after_update``).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import MOMENTUM, boolean
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import EncoderWithHead

# ----------------------------------------------------------------------------- model


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    # deepmind-research/byol: both MLPs are Linear-BN-ReLU-Linear, the last without bias.
    mlp = dict(use_bn=config.byol.use_bn, last_bias=False)
    return parts.projection_network(config, config.byol, predictor=mlp, **mlp)


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    d = config.byol.proj_dim
    return parts.std_warnings(metrics, {"z_std": d, "p_std": d})


# ----------------------------------------------------------------------------- target


def target_momentum_schedule(config, run: RunInfo):
    return parts.momentum_schedule(
        config.byol.target_momentum, config.byol.target_momentum_end, run
    )


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """The target starts as a copy of the online backbone and projector (params and BN stats)."""
    return {"target": parts.init_momentum_encoder(params, batch_stats, config.byol.target_momentum)}


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated online backbone and projector into the target."""
    del step  # the EMA state counts its own updates
    target = parts.update_momentum_encoder(
        params, batch_stats, method_state["target"], target_momentum_schedule(config, run)
    )
    return params, {**method_state, "target": target}


# ----------------------------------------------------------------------------- loss


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    momentum = target_momentum_schedule(config, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # all randomness is in the views
        v1, v2 = views
        n = v1.shape[0]
        x = jnp.concatenate([v1, v2])
        z, aux, batch_stats = apply_train(model, params, batch_stats, x)
        p = aux["prediction"]
        target = method_state["target"]
        zt = parts.apply_momentum_encoder(model, target, x)
        loss = losses.byol_loss(p[:n], zt[n:]) + losses.byol_loss(p[n:], zt[:n])
        metrics = {
            "z_std": losses.embedding_std(z),
            "p_std": losses.embedding_std(p),
            "h_std": losses.embedding_std(aux["features"]),
            "target_momentum": momentum(target.count),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


BYOL = Method(
    name="byol",
    build_model=build_model,
    make_views=parts.asymmetric_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    teacher="target",
    fields={
        **parts.ASYMMETRIC_VIEW_FIELDS,
        **parts.projection_fields("byol", predictor=True),
        "byol.target_momentum": MOMENTUM,
        "byol.target_momentum_end": MOMENTUM,
        "byol.use_bn": boolean,
    },
)
