"""MoCo v3 (Chen, Xie & He, 2021): momentum contrast without a queue, with a predictor.

- online network: backbone -> projector (the ``head``) -> predictor
  (``jssl.models.EncoderWithHead``); MoCo v3's ResNet MLPs: a
  2-layer projector and a 2-layer predictor, hidden 4096, output 256, bias-free
  Linear layers, BatchNorm after every layer (the last one without scale and
  shift: ``mocov3.last_bn``);
- momentum encoder: an EMA of the backbone and the projector only (not the
  predictor), parameters and BatchNorm statistics (``jssl.methods.parts``),
  momentum 0.99 -> 1 on a cosine over the run (``jssl.schedules.teacher_momentum``,
  as DINO's teacher), in the method state and advanced in ``after_update``;
- loss: ``moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1)`` (each CE(q k^T / T,
  diagonal) x 2T) with the keys of the whole global batch (under jit the batch
  axis is global: MoCo v3's concat_all_gather);
- views: BYOL's asymmetric pair (``parts.asymmetric_views``: crop, flip, colour
  jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale 0.2, blur 1.0 / 0.1 and
  solarisation 0 / 0.2 on views 1 / 2), as MoCo v3.

Forward passes: both views in one batch through the online network and one
through the momentum encoder (MoCo v3 runs each view separately; here the
BatchNorm statistics are those of the 2B crops of the global batch, as SimCLR's
single pass). The momentum encoder runs in training mode (batch statistics) as
MoCo v3's does; its updated running statistics are dropped (they follow the
online network's by EMA).

``method_state = {"teacher": EmaTeacherState(count, params, batch_stats)}``
holds the momentum encoder's ``{"backbone", "head"}`` subtrees; it is in
every checkpoint, so resume is exact. Checkpoints written before the projection
MLPs were merged (the projector named ``projector``, its output BatchNorm
``BatchNorm_<n>``) are read through ``renamed``.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import MOMENTUM, POSITIVE, boolean
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import EncoderWithHead

# ----------------------------------------------------------------------------- model


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    return parts.output_bn_network(config, config.mocov3)


def momentum_schedule(config: ml_collections.ConfigDict, run: RunInfo):
    return parts.momentum_schedule(config.mocov3.momentum, config.mocov3.momentum_end, run)


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Momentum encoder = copy of the online backbone and projector."""
    return {"teacher": parts.init_momentum_encoder(params, batch_stats, config.mocov3.momentum)}


# ----------------------------------------------------------------------------- loss


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    m = config.mocov3
    momentum = momentum_schedule(config, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # all randomness is in the views
        v1, v2 = views
        n = v1.shape[0]
        both = jnp.concatenate([v1, v2])
        z, aux, batch_stats = apply_train(model, params, batch_stats, both)
        q = aux["prediction"]
        teacher = method_state["teacher"]
        k = parts.apply_momentum_encoder(model, teacher, both)
        loss = losses.moco_v3_loss(q[:n], k[n:], temperature=m.temperature) + losses.moco_v3_loss(
            q[n:], k[:n], temperature=m.temperature
        )
        metrics = {
            "q_std": losses.embedding_std(q),
            "z_std": losses.embedding_std(z),
            "k_std": losses.embedding_std(k),
            "h_std": losses.embedding_std(aux["features"]),
            "key_momentum": momentum(teacher.count),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated backbone and projector into the momentum encoder."""
    del step  # the EMA state counts its own updates
    teacher = parts.update_momentum_encoder(
        params, batch_stats, method_state["teacher"], momentum_schedule(config, run)
    )
    return params, {**method_state, "teacher": teacher}


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return parts.std_warnings(metrics, {"q_std": config.mocov3.proj_dim})


MOCOV3 = Method(
    name="mocov3",
    build_model=build_model,
    make_views=parts.asymmetric_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    renamed=lambda config: parts.output_bn_renames(config.mocov3),
    teacher="teacher",
    fields={
        **parts.ASYMMETRIC_VIEW_FIELDS,
        **parts.projection_fields("mocov3", predictor=True),
        "mocov3.temperature": POSITIVE,
        "mocov3.momentum": MOMENTUM,
        "mocov3.momentum_end": MOMENTUM,
        "mocov3.last_bn": boolean,
        "mocov3.last_bn_scale": boolean,
        "mocov3.pred_last_bn": boolean,
    },
)
