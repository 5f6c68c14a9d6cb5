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
  (``ema.ema_teacher``; momentum 0.996 -> 1 on a cosine over the run,
  ``schedules.teacher_momentum`` bound with ``run.total_steps``).

The model is a ``SiameseNetwork`` with parameters {"backbone", "head" (the
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

This module also holds the pieces the other siamese methods share: the
asymmetric views (Barlow Twins and VICReg use BYOL's policy) and the
embedding-std collapse monitor (SimSiam, Barlow Twins, VICReg).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import augment, ema, losses, schedules
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import create_model
from jssl.models.siamese_heads import SiameseProjector

# The parameter subtrees the target network holds (the predictor stays out).
TARGET_PARTS = ("backbone", "head")

# ----------------------------------------------------------------------------- model


class SiameseNetwork(nn.Module):
    """backbone -> head (projector) -> predictor.

    ``__call__`` -> ``(z, {**backbone aux, "features": h, "prediction": p})``;
    ``project`` -> ``(z, {**backbone aux, "features": h})`` touches only the
    backbone and head (BYOL's target network, parameters {"backbone", "head"}).
    """

    backbone: nn.Module
    head: nn.Module
    predictor: nn.Module

    def project(self, x: jax.Array, *, train: bool):
        h, aux = self.backbone(x, train=train)
        z = self.head(h, train=train)
        return z, {**aux, "features": h}

    def __call__(self, x: jax.Array, *, train: bool):
        z, aux = self.project(x, train=train)
        p = self.predictor(z, train=train)
        return z, {**aux, "prediction": p}


def build_model(config: ml_collections.ConfigDict) -> SiameseNetwork:
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    b = config.byol
    # deepmind-research/byol: both MLPs are Linear-BN-ReLU-Linear, the last without bias.
    projector = SiameseProjector(
        hidden_dims=tuple(b.proj_hidden_dims), out_dim=b.proj_dim, use_bn=b.use_bn, dtype=dtype
    )
    predictor = SiameseProjector(
        hidden_dims=tuple(b.pred_hidden_dims), out_dim=b.proj_dim, use_bn=b.use_bn, dtype=dtype
    )
    return SiameseNetwork(backbone=backbone, head=projector, predictor=predictor)


def target_parts(tree):
    """The target's subtrees {"backbone", "head"} of a params or batch_stats tree."""
    return {k: tree[k] for k in TARGET_PARTS if tree and k in tree}


def apply_target(model: SiameseNetwork, target: ema.EmaTeacherState, x: jax.Array):
    """The target network (backbone + projector) on x in training mode, without gradient.

    Batch statistics are used and the updated running statistics dropped.
    Returns the projections [B, D] under ``stop_gradient``.
    """
    target = jax.lax.stop_gradient(target)
    variables = {"params": target.params}
    if target.batch_stats:
        variables["batch_stats"] = target.batch_stats
        (z, _), _ = model.apply(
            variables, x, train=True, method=SiameseNetwork.project, mutable=["batch_stats"]
        )
    else:
        z, _ = model.apply(variables, x, train=True, method=SiameseNetwork.project)
    return jax.lax.stop_gradient(z)


# ----------------------------------------------------------------------------- views


def asymmetric_view_kwargs(config: ml_collections.ConfigDict) -> dict:
    """``augment.multi_crop`` arguments for two views and no local crop (BYOL's policy).

    View i uses ``augment.global_blur_p[i]`` and ``augment.global_solarize_p[i]``
    (DINO's field names; the last entry repeats).
    """
    a = config.augment
    size = (a.crop_size, a.crop_size)
    return dict(
        global_size=size,
        local_size=size,  # unused: no local crops
        num_global=2,
        num_local=0,
        global_scale=tuple(a.scale),
        global_blur_p=tuple(a.global_blur_p),
        global_solarize_p=tuple(a.global_solarize_p),
        flip=a.flip,
        jitter=tuple(a.jitter),
        jitter_p=a.jitter_p,
        gray_p=a.gray_p,
        blur_sigma=tuple(a.blur_sigma),
    )


def asymmetric_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """(v1, v2), each float32 [B, h, w, C]: BYOL's two differently augmented views."""
    crops, _ = augment.multi_crop(key, batch["image"], **asymmetric_view_kwargs(config))
    return crops[:, 0], crops[:, 1]


# ----------------------------------------------------------------------------- collapse monitor


def std_floor(dim: int) -> float:
    """0.1 / sqrt(D): a tenth of the per-dimension std of well-spread L2-normalised embeddings."""
    return 0.1 / dim**0.5


def std_warnings(metrics: dict, names_and_dims: dict[str, int]) -> list[str]:
    """A warning for each logged embedding std (``losses.embedding_std``) below its floor."""
    out = []
    for name, dim in names_and_dims.items():
        value, floor = metrics.get(name), std_floor(dim)
        if value is not None and value < floor:
            out.append(
                f"{name} {value:.2e} < {floor:.2e} (0.1 / sqrt({dim})): the embeddings are "
                "collapsing to a constant"
            )
    return out


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    d = config.byol.proj_dim
    return std_warnings(metrics, {"z_std": d, "p_std": d})


# ----------------------------------------------------------------------------- target


def target_momentum_schedule(config, run: RunInfo) -> optax.Schedule:
    b = config.byol
    return schedules.bind(
        schedules.teacher_momentum,
        total_steps=run.total_steps,
        base=b.target_momentum,
        final=b.target_momentum_end,
    )


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """The target starts as a copy of the online backbone and projector (params and BN stats)."""
    teacher = ema.ema_teacher(config.byol.target_momentum)
    return {"target": teacher.init(target_parts(params), target_parts(batch_stats))}


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated online backbone and projector into the target."""
    del step  # the EMA state counts its own updates
    target = ema.ema_teacher(target_momentum_schedule(config, run)).update(
        target_parts(params),
        method_state["target"],
        target_parts(batch_stats) if batch_stats else None,
    )
    return {**method_state, "target": target}


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
        zt = apply_target(model, target, x)
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
    make_views=asymmetric_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
)
