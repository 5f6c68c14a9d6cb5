"""MoCo v3 (Chen, Xie & He, 2021): momentum contrast without a queue, with a predictor.

- online network: backbone -> projector -> predictor
  (``jssl.models.siamese.ProjectorPredictor``); MoCo v3's ResNet MLPs: a
  2-layer projector and a 2-layer predictor, hidden 4096, output 256, bias-free
  Linear layers, BatchNorm after every layer (the last one without scale and
  shift: ``mocov3.last_bn``);
- momentum encoder: an EMA of the backbone and the projector only (not the
  predictor), parameters and BatchNorm statistics (``jssl.ema.ema_teacher``),
  momentum 0.99 -> 1 on a cosine over the run (``jssl.schedules.teacher_momentum``,
  as DINO's teacher), in the method state and advanced in ``after_update``;
- loss: ``moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1)`` (each CE(q k^T / T,
  diagonal) x 2T) with the keys of the whole global batch (under jit the batch
  axis is global: MoCo v3's concat_all_gather);
- views: BYOL's asymmetric pair (``asymmetric_views``: crop, flip, colour
  jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, blur 1.0 / 0.1 and
  solarisation 0 / 0.2 on views 1 / 2), as MoCo v3.

Forward passes: both views in one batch through the online network and one
through the momentum encoder (MoCo v3 runs each view separately; here the
BatchNorm statistics are those of the 2B crops of the global batch, as SimCLR's
single pass). The momentum encoder runs in training mode (batch statistics) as
MoCo v3's does; its updated running statistics are dropped (they follow the
online network's by EMA).

``method_state = {"teacher": EmaTeacherState(count, params, batch_stats)}``
holds the momentum encoder's ``{"backbone", "projector"}`` subtrees; it is in
every checkpoint, so resume is exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import augment, ema, losses
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.methods.mocov2 import momentum_schedule, std_collapse_warning
from jssl.models import create_model
from jssl.models.siamese import ProjectionMLP, ProjectorPredictor

ENCODER = ("backbone", "projector")  # the momentum encoder's parameter subtrees

# ----------------------------------------------------------------------------- model


def build_networks(config: ml_collections.ConfigDict, block: ml_collections.ConfigDict):
    """(online network with predictor, momentum encoder without) from a method block with
    proj_hidden_dims, proj_dim, pred_hidden_dims, last_bn, last_bn_scale."""
    dtype = jnp.dtype(config.model.dtype)

    def make(with_predictor: bool) -> ProjectorPredictor:
        backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
        projector = ProjectionMLP(
            hidden_dims=tuple(block.proj_hidden_dims),
            out_dim=block.proj_dim,
            last_bn=block.last_bn,
            last_bn_scale=block.last_bn_scale,
            dtype=dtype,
        )
        predictor = None
        if with_predictor:
            predictor = ProjectionMLP(
                hidden_dims=tuple(block.pred_hidden_dims),
                out_dim=block.proj_dim,
                last_bn=block.pred_last_bn,
                last_bn_scale=block.last_bn_scale,
                dtype=dtype,
            )
        return ProjectorPredictor(backbone=backbone, projector=projector, predictor=predictor)

    return make(True), make(False)


def encoder_part(tree) -> dict:
    """The momentum encoder's subtrees of a params / batch_stats tree ({} stays {})."""
    return {name: tree[name] for name in ENCODER if tree and name in tree}


def build_model(config: ml_collections.ConfigDict) -> ProjectorPredictor:
    return build_networks(config, config.mocov3)[0]


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Momentum encoder = copy of the online backbone and projector."""
    teacher = ema.ema_teacher(config.mocov3.momentum).init(
        encoder_part(params), encoder_part(batch_stats)
    )
    return {"teacher": teacher}


# ----------------------------------------------------------------------------- views


def asymmetric_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """BYOL's two views (view i gets augment.global_blur_p[i], augment.global_solarize_p[i]),
    made by ``augment.multi_crop`` with no local crops."""
    a = config.augment
    size = (a.crop_size, a.crop_size)
    crops, _ = augment.multi_crop(
        key,
        batch["image"],
        global_size=size,
        local_size=size,
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
    return crops[:, 0], crops[:, 1]


# ----------------------------------------------------------------------------- loss


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    m = config.mocov3
    _, key_encoder = build_networks(config, m)
    momentum = momentum_schedule(m, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # all randomness is in the views
        v1, v2 = views
        n = v1.shape[0]
        both = jnp.concatenate([v1, v2])
        q, aux, batch_stats = apply_train(model, params, batch_stats, both)
        teacher = jax.lax.stop_gradient(method_state["teacher"])
        k, _, _ = apply_train(key_encoder, teacher.params, teacher.batch_stats, both)
        k = jax.lax.stop_gradient(k)
        loss = losses.moco_v3_loss(q[:n], k[n:], temperature=m.temperature) + losses.moco_v3_loss(
            q[n:], k[:n], temperature=m.temperature
        )
        metrics = {
            "q_std": losses.embedding_std(q),
            "z_std": losses.embedding_std(aux["projection"]),
            "k_std": losses.embedding_std(k),
            "h_std": losses.embedding_std(aux["features"]),
            "key_momentum": momentum(teacher.count),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated backbone and projector into the momentum encoder."""
    del step  # the EMA state counts its own updates
    stats = encoder_part(batch_stats) if batch_stats else None
    teacher = ema.ema_teacher(momentum_schedule(config.mocov3, run)).update(
        encoder_part(params), method_state["teacher"], stats
    )
    return {**method_state, "teacher": teacher}


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return std_collapse_warning(metrics, "q_std", config.mocov3.proj_dim)


MOCOV3 = Method(
    name="mocov3",
    build_model=build_model,
    make_views=asymmetric_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
)
