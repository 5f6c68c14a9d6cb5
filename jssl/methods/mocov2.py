"""MoCo v2 (He et al., 2020; Chen, Fan, Girshick & He, 2020): momentum contrast with a queue.

- query encoder: backbone -> 2-layer MLP projector (Linear-ReLU-Linear, no BN,
  as MoCo v2's MLP head);
- key encoder: an EMA of the query encoder (backbone + projector, parameters
  and BatchNorm statistics; ``jssl.ema.ema_teacher``, momentum 0.999
  constant as the paper, or a cosine schedule ``mocov2.momentum`` ->
  ``mocov2.momentum_end`` over the run), kept in the method state and
  advanced in ``after_update``;
- loss: ``losses.infonce_with_queue(q, k, queue, temperature=0.2)`` with q the
  query of view 1 and k the key of view 2. The paper's loss is not
  symmetric (``mocov2.symmetric=False``, the default); ``True`` is
  solo-learn's "MoCo v2+": (L(q1, k2, queue_2) + L(q2, k1, queue_1)) / 2 with
  one queue per view;
- queue: ``method_state["queue"]`` [V, Q, D] of L2-normalised keys (V = 1, or
  2 when symmetric) and ``method_state["queue_ptr"]``. The queue starts as
  random unit vectors (as MoCo's ``randn`` buffer) drawn from ``config.seed``.
  Inside the loss, after the loss has read the queue, the global batch of keys
  is written at rows ptr, ptr + 1, ..., ptr + B - 1 (mod Q) and the pointer
  moves to (ptr + B) mod Q (FIFO; wraps around when Q is not a multiple of
  B). This is part of the jitted step and of every checkpoint, so 8 devices
  give the 1-device queue and resume is exact.

Forward passes: the query encoder runs in training mode on view 1 (both views
in one batch when symmetric); the key encoder runs in training mode on the
global batch of view 2, as MoCo's key encoder (which is in train mode) but
with global BatchNorm statistics instead of MoCo's per-GPU "shuffle BN"
(shuffling changes nothing for statistics over the whole batch). Its updated
running statistics are dropped: they follow the query encoder's by EMA.

The queue and the momentum encoder are ``jssl.methods.parts``'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jssl import losses
from jssl.checks import MAX_WIDTH, MOMENTUM, POSITIVE, boolean, integer
from jssl.methods import parts
from jssl.methods.base import Method, RunInfo, apply_train
from jssl.models import EncoderWithHead

# ----------------------------------------------------------------------------- model


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    m = config.mocov2
    parts.check_queue("mocov2", m.queue_size, config.batch_size)
    return parts.projection_network(config, m, use_bn=False)


def momentum_schedule(config: ml_collections.ConfigDict, run: RunInfo):
    return parts.momentum_schedule(config.mocov2.momentum, config.mocov2.momentum_end, run)


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Key encoder = copy of the query encoder; queue of random unit keys; pointer 0."""
    m = config.mocov2
    views = 2 if m.symmetric else 1
    return {
        "teacher": parts.init_momentum_encoder(params, batch_stats, m.momentum),
        "queue": parts.random_queue(config.seed, 2, (views, m.queue_size, m.proj_dim)),
        "queue_ptr": jnp.zeros((), jnp.int32),
    }


# ----------------------------------------------------------------------------- loss


def _top1(q: jax.Array, k: jax.Array, queue: jax.Array) -> jax.Array:
    """Share of unit queries whose positive key scores above all queued keys."""
    positive = jnp.sum(q * k, axis=-1)
    negatives = jnp.einsum("nd,qd->nq", q, losses.l2_normalize(queue), precision="highest")
    return jnp.mean((positive > jnp.max(negatives, axis=-1)).astype(jnp.float32))


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    m = config.mocov2
    momentum = momentum_schedule(config, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # all randomness is in the views
        v1, v2 = views
        n = v1.shape[0]
        teacher = method_state["teacher"]
        queue = method_state["queue"]
        if m.symmetric:
            both = jnp.concatenate([v1, v2])
            q, aux, batch_stats = apply_train(model, params, batch_stats, both)
            k = losses.l2_normalize(parts.apply_momentum_encoder(model, teacher, both))
            q1, q2, k1, k2 = q[:n], q[n:], k[:n], k[n:]
            loss = 0.5 * (
                losses.infonce_with_queue(q1, k2, queue[1], temperature=m.temperature)
                + losses.infonce_with_queue(q2, k1, queue[0], temperature=m.temperature)
            )
            keys = jnp.stack([k1, k2])
        else:
            q, aux, batch_stats = apply_train(model, params, batch_stats, v1)
            k = losses.l2_normalize(parts.apply_momentum_encoder(model, teacher, v2))
            loss = losses.infonce_with_queue(q, k, queue[0], temperature=m.temperature)
            keys = k[None]
        new_queue, new_ptr = parts.enqueue(queue, method_state["queue_ptr"], keys)
        qn = losses.l2_normalize(q[:n])
        metrics = {
            "q_std": losses.embedding_std(q),
            "k_std": losses.embedding_std(k),
            "h_std": losses.embedding_std(aux["features"]),
            # Cosine of each query with its positive key (1 = the two views agree).
            "positive_cosine": jnp.mean(jnp.sum(qn * (k[n:] if m.symmetric else k), axis=-1)),
            # Instance discrimination: the positive key above every queued key (chance 1/(Q+1)).
            "contrastive_top1": _top1(qn, k[n:] if m.symmetric else k, queue[-1]),
            "key_momentum": momentum(teacher.count),
        }
        new_state = {**method_state, "queue": new_queue, "queue_ptr": new_ptr}
        return loss, (batch_stats, new_state, metrics)

    return loss_fn


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated query encoder into the key encoder (params and BN statistics)."""
    del step  # the EMA state counts its own updates
    teacher = parts.update_momentum_encoder(
        params, batch_stats, method_state["teacher"], momentum_schedule(config, run)
    )
    return params, {**method_state, "teacher": teacher}


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return parts.std_warnings(metrics, {"q_std": config.mocov2.proj_dim})


MOCOV2 = Method(
    name="mocov2",
    build_model=build_model,
    # MoCo v2's "aug+" is SimCLR's policy (crop, jitter (0.4, 0.4, 0.4, 0.1) = strength
    # 0.5, grayscale, blur), so the views are SimCLR's two views.
    make_views=parts.two_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    # The key encoder is the whole network's EMA: its kNN is reported beside the query's.
    evaluators=("knn", "linear_probe", "kmeans", "teacher_knn"),
    teacher="teacher",
    fields={
        **parts.SIMCLR_VIEW_FIELDS,
        **parts.projection_fields("mocov2"),
        "mocov2.temperature": POSITIVE,
        "mocov2.momentum": MOMENTUM,
        "mocov2.momentum_end": MOMENTUM,
        "mocov2.queue_size": integer(1, MAX_WIDTH),
        "mocov2.symmetric": boolean,
    },
    check=lambda values: parts.queue_problems(values, "mocov2"),
)
