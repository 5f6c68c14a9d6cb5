"""Self-labelling (SCAN's third stage, Van Gansbeke et al., 2020).

Starts from a finished SCAN-stage run (``config.init_from`` with
``params=("backbone", "head")``; ``adapt_init`` keeps that run's lowest-loss
head) and trains with cross-entropy on the examples whose weak-view
confidence exceeds ``config.selflabel.threshold`` (0.99), evaluated on
strongly augmented views (``config.augment``) with class balancing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jssl import losses
from jssl.checks import boolean, pair, real
from jssl.errors import UserError
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    # One head: the SCAN stage's lowest-loss head.
    return parts.build_clustering_model(
        config, num_heads=1, num_clusters=config.selflabel.num_clusters
    )


def weak_policy(config: ml_collections.ConfigDict) -> dict:
    """Crop and flip only: the view whose confident predictions become labels."""
    return dict(parts.simclr_policy(config), scale=tuple(config.selflabel.weak_scale),
                jitter_p=0.0, gray_p=0.0, blur_p=0.0)  # fmt: skip


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    k1, k2 = jax.random.split(key)
    weak = parts.one_view(k1, batch["image"], **weak_policy(config))
    return weak, parts.one_view(k2, batch["image"], **parts.simclr_policy(config))


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run=None) -> dict:
    return {"head_loss": jnp.zeros((1,), jnp.float32)}


def adapt_init(parts: dict, method_state, config: ml_collections.ConfigDict) -> dict:
    """The SCAN run's backbone and its lowest-loss head (``method_state["head_loss"]``)."""
    head = parts.get("head")
    if head is None or "head_loss" not in method_state:
        raise UserError(
            "Self-labelling starts from a finished SCAN-stage run (method scan): set "
            "--config.init_from.workdir to one and keep --config.init_from.params="
            "\"('backbone', 'head')\"."
        )
    k = config.selflabel.num_clusters
    if head["kernel"].shape[-1] != k:
        raise UserError(
            f"The SCAN-stage run has {head['kernel'].shape[-1]} clusters; set "
            f"--config.selflabel.num_clusters={head['kernel'].shape[-1]} (now {k})."
        )
    best = int(np.argmin(jax.device_get(method_state["head_loss"])))
    logging.warning("Self-labelling from head %d of the SCAN-stage run", best)
    head = {"kernel": head["kernel"][best : best + 1], "bias": head["bias"][best : best + 1]}
    return {**parts, "head": head}


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    s = config.selflabel
    momentum = s.head_loss_momentum

    def selflabel_loss_fn(params, batch_stats, views, method_state, step, key):
        weak, strong = views
        b = weak.shape[0]
        x = jnp.concatenate([weak, strong])
        logits, aux, batch_stats = apply_train(model, params, batch_stats, x)  # [1, 2B, K]
        loss, confident = losses.selflabel_loss(
            logits[:, :b],
            logits[:, b:],
            threshold=s.threshold,
            class_balance=s.class_balance,
        )  # [1]
        method_state = parts.update_head_loss(method_state, loss, step, momentum)
        metrics = {
            **parts.head_metrics(logits[:, :b], loss),
            "confident_fraction": confident[0],
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss[0], (batch_stats, method_state, metrics)

    return selflabel_loss_fn


SELFLABEL = Method(
    name="selflabel",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    adapt_init=adapt_init,
    collapse_warnings=parts.cluster_collapse_warnings("selflabel"),
    evaluators=parts.CLUSTERING_EVALUATORS,
    fields={
        **parts.SIMCLR_VIEW_FIELDS,
        **parts.clustering_fields("selflabel"),
        "selflabel.threshold": real(0.0, 1.0, hi_open=True),
        "selflabel.class_balance": boolean,
        "selflabel.weak_scale": pair(),
    },
)
