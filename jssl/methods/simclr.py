"""SimCLR (Chen et al., 2020): two augmented views, projection head, NT-Xent.

NT-Xent runs on the global batch: under jit over the mesh every anchor sees
the 2N - 2 negatives of all devices.
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    return parts.projection_network(config, config.simclr, use_bn=config.simclr.proj_use_bn)


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return parts.std_warnings(metrics, {"z_std": config.simclr.proj_dim})


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    temperature = config.simclr.temperature

    def loss_fn(params, batch_stats, views, method_state, step, key):
        v1, v2 = views
        n = v1.shape[0]
        # One forward pass over both views: BatchNorm statistics are those of
        # the whole 2N global batch.
        z, aux, batch_stats = apply_train(model, params, batch_stats, jnp.concatenate([v1, v2]))
        loss = losses.nt_xent(z[:n], z[n:], temperature=temperature)
        metrics = {
            "z_std": losses.embedding_std(z),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


SIMCLR = Method(
    name="simclr",
    build_model=build_model,
    make_views=parts.two_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
    fields={**parts.SIMCLR_VIEW_FIELDS, **parts.SIMCLR_FIELDS},
)
