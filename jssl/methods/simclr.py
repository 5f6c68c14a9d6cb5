"""SimCLR (Chen et al., 2020): two augmented views, projection head, NT-Xent.

NT-Xent runs on the global batch: under jit over the mesh every anchor sees
the 2N - 2 negatives of all devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import augment, losses
from jssl.methods.base import EncoderWithHead, Method, apply_train
from jssl.models import MLPHead, create_model


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    sc = config.simclr
    hidden = tuple(sc.proj_hidden_dims)
    head = MLPHead(hidden_dims=hidden, out_dim=sc.proj_dim, use_bn=sc.proj_use_bn, dtype=dtype)
    return EncoderWithHead(backbone=backbone, head=head)


def policy_kwargs(config: ml_collections.ConfigDict) -> dict:
    a = config.augment
    return dict(
        size=(a.crop_size, a.crop_size),
        scale=tuple(a.scale),
        strength=a.strength,
        jitter_p=a.jitter_p,
        gray_p=a.gray_p,
        blur_p=a.blur_p,
        flip=a.flip,
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    return augment.two_views(key, batch["image"], **policy_kwargs(config))


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    # Healthy L2-normalised embeddings have a per-dimension std near 1/sqrt(D).
    floor = 0.1 / config.simclr.proj_dim**0.5
    if metrics.get("z_std", 1.0) < floor:
        return [
            f"embedding std {metrics['z_std']:.2e} < {floor:.2e}: the projections are collapsing"
        ]
    return []


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
    make_views=make_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
)
