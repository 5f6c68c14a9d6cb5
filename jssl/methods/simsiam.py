"""SimSiam (Chen & He, 2021): a siamese network with a predictor and a stop-gradient.

One network, no momentum encoder, no negatives:

- views: two views per image with the SimCLR policy (``parts.two_views``:
  random resized crop, flip, colour jitter with strength 0.5 = brightness,
  contrast, saturation 0.4 and hue 0.1 with p 0.8, grayscale 0.2, blur), which
  is SimSiam's (MoCo v2's) symmetric policy when ``augment.strength = 0.5``
  and ``augment.blur_p = 0.5``;
- model: backbone -> projector (``MLPHead(out_bn=True)``: Linear-BN-ReLU
  per hidden width, then Linear -> BatchNorm without affine, as the paper) ->
  predictor (``MLPHead``: Linear-BN-ReLU to a bottleneck, then Linear);
  parameters {"backbone", "head" (projector), "predictor"} (``jssl.models.EncoderWithHead``);
- loss: ``simsiam_loss(p1, z2) / 2 + simsiam_loss(p2, z1) / 2`` with z under
  stop-gradient inside the loss (the stop-gradient is what prevents collapse).

Both views go through the network as one batch of 2N, so the BatchNorm
statistics (the projector's output BN included) are those of the global batch.

Not reproduced: the paper keeps the predictor's learning rate constant while
the rest follows the cosine schedule (``jssl.optim`` has one schedule for all
parameters).

Collapse (SimSiam's section 4.1): the per-dimension std of the L2-normalised
projections goes to 0 (healthy: about 1/sqrt(D)); logged as ``z_std`` and
``p_std``, warned below 0.1 / sqrt(D).
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.methods import parts
from jssl.methods.base import Method, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    return parts.projection_network(config, config.simsiam, predictor={}, out_bn=True)


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    d = config.simsiam.proj_dim
    return parts.std_warnings(metrics, {"z_std": d, "p_std": d})


def make_loss(model, config: ml_collections.ConfigDict, run=None):
    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key
        v1, v2 = views
        n = v1.shape[0]
        z, aux, batch_stats = apply_train(model, params, batch_stats, jnp.concatenate([v1, v2]))
        p = aux["prediction"]
        loss = losses.simsiam_loss(p[:n], z[n:]) / 2 + losses.simsiam_loss(p[n:], z[:n]) / 2
        metrics = {
            "z_std": losses.embedding_std(z),
            "p_std": losses.embedding_std(p),
            "h_std": losses.embedding_std(aux["features"]),
        }
        return loss, (batch_stats, method_state, metrics)

    return loss_fn


SIMSIAM = Method(
    name="simsiam",
    build_model=build_model,
    make_views=parts.two_views,
    make_loss=make_loss,
    collapse_warnings=collapse_warnings,
    fields={
        **parts.SIMCLR_VIEW_FIELDS,
        **parts.projection_fields("simsiam", predictor=True),
    },
)
