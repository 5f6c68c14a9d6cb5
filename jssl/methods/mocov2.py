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

The queue helpers (``random_queue``, ``enqueue``) and the momentum schedule
are shared with MoCo v3, NNCLR and SwAV.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import augment, ema, losses, schedules
from jssl.errors import UserError
from jssl.methods.base import EncoderWithHead, Method, RunInfo, apply_train
from jssl.methods.simclr import policy_kwargs
from jssl.models import MLPHead, create_model

# ----------------------------------------------------------------------------- queues


def random_queue(seed: int, salt: int, shape: tuple[int, ...]) -> jax.Array:
    """[..., Q, D] float32 rows of random unit vectors, a function of (seed, salt)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), salt)
    return losses.l2_normalize(jax.random.normal(key, shape, jnp.float32))


def enqueue(queue: jax.Array, ptr: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """FIFO write of ``rows`` [..., B, D] into ``queue`` [..., Q, D] at the pointer.

    Row b goes to queue row (ptr + b) mod Q, so the write wraps around the end;
    returns (new queue, (ptr + B) mod Q). Needs B <= Q (a batch never
    overwrites itself). ``rows`` are taken without gradient.
    """
    b, q = rows.shape[-2], queue.shape[-2]
    if b > q:
        raise ValueError(f"cannot enqueue {b} rows into a queue of {q}: the queue must hold B")
    idx = (ptr + jnp.arange(b, dtype=jnp.int32)) % q
    rows = jax.lax.stop_gradient(rows).astype(queue.dtype)
    new = queue.at[..., idx, :].set(rows, unique_indices=True, indices_are_sorted=False)
    return new, jnp.asarray((ptr + b) % q, jnp.int32)


def check_queue(name: str, queue_size: int, batch_size: int) -> None:
    """A queue of Q rows must hold the global batch B (Q >= B)."""
    if queue_size < batch_size:
        raise UserError(
            f"config.{name}.queue_size={queue_size} is smaller than the global batch "
            f"batch_size={batch_size}; the queue receives a whole batch every step: use a "
            f"queue of at least {batch_size} rows (a multiple of it keeps the FIFO aligned)."
        )


def momentum_schedule(block: ml_collections.ConfigDict, run: RunInfo) -> optax.Schedule:
    """Key-encoder momentum: cosine ``block.momentum`` -> ``block.momentum_end`` over the run
    (constant when the two are equal)."""
    if block.momentum == block.momentum_end:
        return lambda count: jnp.float32(block.momentum)
    return schedules.bind(
        schedules.teacher_momentum,
        total_steps=run.total_steps,
        base=block.momentum,
        final=block.momentum_end,
    )


def std_collapse_warning(metrics: dict, key: str, dim: int) -> list[str]:
    """The embedding-std collapse monitor: about 1/sqrt(D) when spread, 0 when collapsed."""
    floor = 0.1 / dim**0.5
    value = metrics.get(key)
    if value is not None and value < floor:
        return [f"embedding std {key}={value:.2e} < {floor:.2e}: the embeddings are collapsing"]
    return []


# ----------------------------------------------------------------------------- model


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    m = config.mocov2
    check_queue("mocov2", m.queue_size, config.batch_size)
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    head = MLPHead(
        hidden_dims=tuple(m.proj_hidden_dims), out_dim=m.proj_dim, use_bn=False, dtype=dtype
    )
    return EncoderWithHead(backbone=backbone, head=head)


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Key encoder = copy of the query encoder; queue of random unit keys; pointer 0."""
    m = config.mocov2
    views = 2 if m.symmetric else 1
    return {
        "teacher": ema.ema_teacher(m.momentum).init(params, batch_stats),
        "queue": random_queue(config.seed, 2, (views, m.queue_size, m.proj_dim)),
        "queue_ptr": jnp.zeros((), jnp.int32),
    }


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict):
    """MoCo v2's "aug+" is SimCLR's policy (crop, jitter (0.4, 0.4, 0.4, 0.1) = strength 0.5,
    grayscale, blur), so the views are SimCLR's two views."""
    return augment.two_views(key, batch["image"], **policy_kwargs(config))


# ----------------------------------------------------------------------------- loss


def _top1(q: jax.Array, k: jax.Array, queue: jax.Array) -> jax.Array:
    """Share of unit queries whose positive key scores above all queued keys."""
    positive = jnp.sum(q * k, axis=-1)
    negatives = jnp.einsum("nd,qd->nq", q, losses.l2_normalize(queue), precision="highest")
    return jnp.mean((positive > jnp.max(negatives, axis=-1)).astype(jnp.float32))


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    m = config.mocov2
    momentum = momentum_schedule(m, run)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del step, key  # all randomness is in the views
        v1, v2 = views
        n = v1.shape[0]
        teacher = jax.lax.stop_gradient(method_state["teacher"])
        queue = method_state["queue"]
        if m.symmetric:
            both = jnp.concatenate([v1, v2])
            q, aux, batch_stats = apply_train(model, params, batch_stats, both)
            k, _, _ = apply_train(model, teacher.params, teacher.batch_stats, both)
            k = losses.l2_normalize(jax.lax.stop_gradient(k))
            q1, q2, k1, k2 = q[:n], q[n:], k[:n], k[n:]
            loss = 0.5 * (
                losses.infonce_with_queue(q1, k2, queue[1], temperature=m.temperature)
                + losses.infonce_with_queue(q2, k1, queue[0], temperature=m.temperature)
            )
            keys = jnp.stack([k1, k2])
        else:
            q, aux, batch_stats = apply_train(model, params, batch_stats, v1)
            k, _, _ = apply_train(model, teacher.params, teacher.batch_stats, v2)
            k = losses.l2_normalize(jax.lax.stop_gradient(k))
            loss = losses.infonce_with_queue(q, k, queue[0], temperature=m.temperature)
            keys = k[None]
        new_queue, new_ptr = enqueue(queue, method_state["queue_ptr"], keys)
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
    teacher = ema.ema_teacher(momentum_schedule(config.mocov2, run)).update(
        params, method_state["teacher"], batch_stats if batch_stats else None
    )
    return {**method_state, "teacher": teacher}


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    return std_collapse_warning(metrics, "q_std", config.mocov2.proj_dim)


MOCOV2 = Method(
    name="mocov2",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    # The key encoder is the whole network's EMA: its kNN is reported beside the query's.
    evaluators=("knn", "linear_probe", "kmeans", "teacher_knn"),
)
