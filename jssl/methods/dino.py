"""DINO (Caron et al., 2021): self-distillation with no labels.

A student (backbone -> DINOHead) is trained to match, on every pair of
different crops, the centred and sharpened output of a teacher that is an
exponential moving average of the student:

- views: G global crops (seen by teacher and student) and L smaller local
  crops (student only), made on device (``augment.multi_crop``);
- loss: ``losses.dino_loss`` with the running centre in the method state,
  updated by ``losses.update_center`` on the teacher logits of the global batch;
- after each optimiser update the teacher follows the student
  (``ema.ema_teacher``, momentum 0.996 -> 1 on a cosine).

``method_state = {"teacher": EmaTeacherState(count, params, batch_stats),
"center": [K]}`` is part of the TrainState, so the checkpoint holds the
teacher, the centre and the EMA count (the schedules' position); resume is
exact.

The schedules (teacher momentum over the whole run, temperature warm-up and
last-layer freezing in epochs) are bound from the ``RunInfo`` the step hands
``make_loss`` and ``after_update``. The optimiser is ``config.optim.name =
"dino_adamw"`` (``jssl.optim``: per-tensor clipping, cosine weight decay).

Forward passes: the student sees the global crops as one batch and the local
crops as another (two sizes: the ViT interpolates its position embeddings,
convolutional backbones pool globally); BatchNorm statistics are those of
each group over the global batch. The teacher runs in training mode (batch
statistics, as DINO's teacher) on the global crops; its own BatchNorm
statistics (used when it is applied in eval mode, e.g. for attention maps)
follow the same EMA as its parameters.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import augment, ema, losses, schedules
from jssl.methods.base import EncoderWithHead, Method, RunInfo, apply_train
from jssl.models import DINOHead, create_model

# ----------------------------------------------------------------------------- model


def build_model(config: ml_collections.ConfigDict) -> EncoderWithHead:
    dtype = jnp.dtype(config.model.dtype)
    backbone = create_model(config.model.name, dtype=dtype, **config.model.kwargs)
    d = config.dino
    head = DINOHead(
        out_dim=d.out_dim,
        hidden_dim=d.hidden_dim,
        bottleneck_dim=d.bottleneck_dim,
        num_layers=d.num_layers,
        use_bn=d.head_use_bn,
        norm_last_layer=d.norm_last_layer,
        dtype=dtype,
    )
    return EncoderWithHead(backbone=backbone, head=head)


def init_method_state(params, batch_stats, config: ml_collections.ConfigDict, run) -> dict:
    """Teacher = copy of the student (params and BatchNorm statistics); centre = 0."""
    teacher = ema.ema_teacher(config.dino.teacher_momentum).init(params, batch_stats)
    return {"teacher": teacher, "center": jnp.zeros((config.dino.out_dim,), jnp.float32)}


# ----------------------------------------------------------------------------- views


def multi_crop_kwargs(config: ml_collections.ConfigDict) -> dict:
    a = config.augment
    return dict(
        global_size=(a.crop_size, a.crop_size),
        local_size=(a.local_crop_size, a.local_crop_size),
        num_global=a.num_global_crops,
        num_local=a.num_local_crops,
        global_scale=tuple(a.scale),
        local_scale=tuple(a.local_scale),
        global_blur_p=tuple(a.global_blur_p),
        global_solarize_p=tuple(a.global_solarize_p),
        local_blur_p=a.local_blur_p,
        flip=a.flip,
        jitter=tuple(a.jitter),
        jitter_p=a.jitter_p,
        gray_p=a.gray_p,
        blur_sigma=tuple(a.blur_sigma),
    )


def make_views(key: jax.Array, batch: dict, config: ml_collections.ConfigDict) -> dict:
    """{"global": [B, G, g, g, C], "local": [B, L, l, l, C] (absent when L = 0)}."""
    globals_, locals_ = augment.multi_crop(key, batch["image"], **multi_crop_kwargs(config))
    return {"global": globals_} if locals_ is None else {"global": globals_, "local": locals_}


# ----------------------------------------------------------------------------- schedules


def teacher_momentum_schedule(config, run: RunInfo) -> optax.Schedule:
    d = config.dino
    return schedules.bind(
        schedules.teacher_momentum,
        total_steps=run.total_steps,
        base=d.teacher_momentum,
        final=d.teacher_momentum_end,
    )


def teacher_temp_schedule(config, run: RunInfo) -> optax.Schedule:
    d = config.dino
    return schedules.bind(
        schedules.teacher_temperature,
        warmup_steps=run.epochs_to_steps(d.warmup_teacher_temp_epochs),
        warmup_temp=d.warmup_teacher_temp,
        final_temp=d.teacher_temp,
    )


def freeze_last_layer(params, frozen: jax.Array):
    """The head's last layer behind ``stop_gradient`` where ``frozen`` (a traced bool).

    d/dp where(frozen, stop_gradient(p), p) = where(frozen, 0, 1): the gradient
    of the last layer is exactly zero while frozen, so Adam's moments stay 0
    and the layer does not move (decoupled weight decay only rescales the
    weight-normalised kernel, which leaves the outputs unchanged).
    """

    def maybe_stop(path, leaf):
        names = {str(getattr(p, "key", p)) for p in path}
        if "last_layer" in names:
            return jnp.where(frozen, jax.lax.stop_gradient(leaf), leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(maybe_stop, params)


# ----------------------------------------------------------------------------- loss


def _flatten_crops(x: jax.Array) -> jax.Array:
    """[B, n, h, w, C] -> [B * n, h, w, C], batch-major so the data sharding is kept."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def _crops_first(z: jax.Array, batch: int) -> jax.Array:
    """[B * n, K] (batch-major) -> [n, B, K]."""
    return jnp.swapaxes(z.reshape(batch, -1, z.shape[-1]), 0, 1)


def make_loss(model, config: ml_collections.ConfigDict, run: RunInfo):
    d = config.dino
    teacher_temp = teacher_temp_schedule(config, run)
    momentum = teacher_momentum_schedule(config, run)
    freeze_steps = run.epochs_to_steps(d.freeze_last_layer_epochs)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        del key  # all randomness is in the views
        if freeze_steps > 0:
            params = freeze_last_layer(params, step < freeze_steps)
        g = views["global"]
        b = g.shape[0]
        # Student: globals and locals as two batches (two resolutions).
        z, _, batch_stats = apply_train(model, params, batch_stats, _flatten_crops(g))
        student = [_crops_first(z, b)]
        if "local" in views:
            z, _, batch_stats = apply_train(
                model, params, batch_stats, _flatten_crops(views["local"])
            )
            student.append(_crops_first(z, b))
        student = jnp.concatenate(student, axis=0)  # [S, B, K], globals first

        # Teacher: global crops only, no gradient; its BatchNorm runs on batch
        # statistics and the updated running statistics are dropped (they
        # follow the student's by EMA in after_update).
        teacher_state = jax.lax.stop_gradient(method_state["teacher"])
        z_t, _, _ = apply_train(
            model, teacher_state.params, teacher_state.batch_stats, _flatten_crops(g)
        )
        teacher = jax.lax.stop_gradient(_crops_first(z_t, b))  # [T, B, K]

        center = method_state["center"]
        temp = teacher_temp(step)
        loss = losses.dino_loss(
            student, teacher, center, student_temp=d.student_temp, teacher_temp=temp
        )
        new_center = losses.update_center(center, teacher, momentum=d.center_momentum)
        metrics = {
            **losses.dino_monitor(
                student, teacher, center, student_temp=d.student_temp, teacher_temp=temp
            ),
            "center_norm": jnp.linalg.norm(new_center),
            "teacher_temp": temp,
            "teacher_momentum": momentum(teacher_state.count),
        }
        return loss, (batch_stats, {**method_state, "center": new_center}, metrics)

    return loss_fn


def after_update(params, batch_stats, method_state, step, config, run: RunInfo):
    """EMA of the updated student into the teacher (params and BatchNorm statistics)."""
    del step  # the EMA state counts its own updates
    teacher = ema.ema_teacher(teacher_momentum_schedule(config, run)).update(
        params, method_state["teacher"], batch_stats if batch_stats else None
    )
    return {**method_state, "teacher": teacher}


# ----------------------------------------------------------------------------- monitor


def collapse_warnings(metrics: dict, config: ml_collections.ConfigDict) -> list[str]:
    """DINO's collapse signatures (REFERENCE.md): loss or teacher entropy at ln K, or entropy ~0."""
    log_k = math.log(config.dino.out_dim)
    out = []
    loss = metrics.get("loss")
    if loss is not None and abs(loss - log_k) < 0.02 * log_k:
        out.append(
            f"loss {loss:.4f} sits at ln(K) = {log_k:.4f}: teacher and student outputs are "
            "uniform (collapse); check the teacher temperature (sharpening)."
        )
    h = metrics.get("teacher_entropy")
    if h is not None and h > 0.95 * log_k:
        out.append(
            f"teacher entropy {h:.4f} is near ln(K) = {log_k:.4f}: the teacher is uniform "
            "(collapse to uniform); lower dino.teacher_temp."
        )
    hb = metrics.get("teacher_batch_entropy")
    if hb is not None and hb < 0.05 * log_k:
        out.append(
            f"entropy of the batch-mean teacher distribution {hb:.4f} is near 0 (ln(K) = "
            f"{log_k:.4f}): every image goes to the same dimension (collapse to a constant); "
            "check the centring (dino.center_momentum)."
        )
    return out


DINO = Method(
    name="dino",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    collapse_warnings=collapse_warnings,
    # DINO evaluates the teacher, usually the better network, beside the student.
    evaluators=("knn", "linear_probe", "kmeans", "teacher_knn"),
)
