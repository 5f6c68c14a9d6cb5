"""NNCLR (Dwibedi et al., 2021): nearest neighbours from a support queue as positives.

- network: backbone -> projector (the ``head``) -> predictor
  (``jssl.models.EncoderWithHead``; solo-learn's NNCLR: a 3-layer
  projector hidden 2048 ending in a BatchNorm, output 256, a 2-layer predictor
  hidden 4096; solo-learn's output BN is affine, here it has a scale but no
  shift, whose gradient is exactly zero: see ``jssl.models.MLPHead``); no
  momentum encoder;
- support set: ``method_state["queue"]`` [Q, D] of past L2-normalised
  projections of view 1 and ``method_state["queue_ptr"]``; it starts as random
  unit vectors drawn from ``config.seed`` (as solo-learn's ``randn`` buffer).
  After the loss has read it, the global batch of z1 is written at rows
  ptr .. ptr + B - 1 (mod Q) and the pointer moves on
  (``jssl.methods.parts.enqueue``): inside the jitted step, in every
  checkpoint;
- loss: (nnclr_loss(NN(z1), p2) + nnclr_loss(NN(z2), p1)) / 2 with NN the
  nearest neighbour in the support set (``losses.nearest_neighbors``, no
  gradient) and the predictions of the global batch as the negatives; the
  paper's temperature 0.1;
- views: BYOL's asymmetric pair (``parts.asymmetric_views``), as NNCLR
  (which uses BYOL's augmentations).

Both views go through the network as one batch (BatchNorm statistics of the
2B crops of the global batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import MAX_WIDTH, POSITIVE, boolean, integer
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import EncoderWithHead


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    parts.check_queue("nnclr", config.nnclr.queue_size, config.batch_size)
    return parts.output_bn_network(config, config.nnclr)


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    c = config.nnclr
    return {
        "queue": parts.random_queue(config.seed, 3, (c.queue_size, c.proj_dim)),
        "queue_ptr": jnp.zeros((), jnp.int32),
    }


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo = None):
    c = config.nnclr

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key
        v1, v2 = views
        n = v1.shape[0]
        z, aux, batch_stats = apply_train(model, params, batch_stats, jnp.concatenate([v1, v2]))
        p = aux["prediction"]
        z = losses.l2_normalize(z)
        z1, z2, p1, p2 = z[:n], z[n:], p[:n], p[n:]
        support = method_state["queue"]
        nn1 = losses.nearest_neighbors(z1, support)
        nn2 = losses.nearest_neighbors(z2, support)
        loss = 0.5 * (
            losses.nnclr_loss(nn1, p2, temperature=c.temperature)
            + losses.nnclr_loss(nn2, p1, temperature=c.temperature)
        )
        queue, ptr = parts.enqueue(support, method_state["queue_ptr"], z1)
        metrics = {
            "z_std": losses.embedding_std(z),
            "p_std": losses.embedding_std(p),
            "h_std": losses.embedding_std(aux["features"]),
            # Cosine of z1 with its nearest neighbour (1: the support holds the image itself).
            "nn_cosine": jnp.mean(jnp.sum(jax.lax.stop_gradient(z1) * nn1, axis=-1)),
        }
        return loss, (batch_stats, {"queue": queue, "queue_ptr": ptr}, metrics)

    return loss_fn


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return parts.std_warnings(metrics, {"z_std": config.nnclr.proj_dim})


NNCLR = Method(
    name="nnclr",
    build_model=build_model,
    make_views=parts.asymmetric_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    collapse_warnings=collapse_warnings,
    renamed=lambda config: parts.output_bn_renames(config.nnclr),
    fields={
        **parts.ASYMMETRIC_VIEW_FIELDS,
        **parts.projection_fields("nnclr", predictor=True),
        "nnclr.temperature": POSITIVE,
        "nnclr.queue_size": integer(1, MAX_WIDTH),
        "nnclr.last_bn": boolean,
        "nnclr.last_bn_scale": boolean,
        "nnclr.pred_last_bn": boolean,
    },
    check=lambda values: parts.queue_problems(values, "nnclr"),
)
