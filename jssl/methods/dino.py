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

Schedules need the run's length (teacher momentum over the whole run,
temperature warm-up and last-layer freezing in epochs), which only the
Experiment knows (dataset size). The ``prepare`` hook therefore swaps the
experiment's method for ``for_run(total_steps, steps_per_epoch)``, whose
loss and EMA update have the lengths bound; it runs before the step is built.

Forward passes: the student sees the global crops as one batch and the local
crops as another (two sizes: the ViT interpolates its position embeddings,
convolutional backbones pool globally); BatchNorm statistics are those of
each group over the global batch. The teacher runs in training mode (batch
statistics, as DINO's teacher) on the global crops; its own BatchNorm
statistics (used when it is applied in eval mode, e.g. for attention maps)
follow the same EMA as its parameters.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jssl import augment, data, ema, evaluation, losses, schedules, sharding
from jssl.methods.base import EncoderWithHead, Method, apply_train
from jssl.models import DINOHead, create_model, weight_decay_mask


@dataclasses.dataclass(frozen=True)
class RunLength:
    """The run's length in steps, which the schedules are defined over."""

    total_steps: int
    steps_per_epoch: int

    def epochs_to_steps(self, epochs: float) -> int:
        return int(round(epochs * self.steps_per_epoch))


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


def _initial_batch_stats(config: ml_collections.ConfigDict):
    """The model's BatchNorm statistics at initialisation (means 0, variances 1).

    ``init_method_state`` only receives the params, so the structure comes
    from an abstract init; BatchNorm state shapes do not depend on the input
    channels or size.
    """
    model = build_model(config)
    size = config.augment.crop_size
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False)
    )

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name not in ("mean", "var"):
            raise ValueError(f"unexpected BatchNorm statistic {jax.tree_util.keystr(path)}")
        return (jnp.zeros if name == "mean" else jnp.ones)(leaf.shape, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes.get("batch_stats", {}))


def init_method_state(params, config: ml_collections.ConfigDict) -> dict:
    """Teacher = copy of the student (params and BatchNorm statistics); centre = 0."""
    teacher = ema.ema_teacher(config.dino.teacher_momentum).init(
        params, _initial_batch_stats(config)
    )
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


def teacher_momentum_schedule(config, run: RunLength) -> optax.Schedule:
    d = config.dino
    return schedules.bind(
        schedules.teacher_momentum,
        total_steps=run.total_steps,
        base=d.teacher_momentum,
        final=d.teacher_momentum_end,
    )


def teacher_temp_schedule(config, run: RunLength) -> optax.Schedule:
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


def make_loss(model, config: ml_collections.ConfigDict, *, run: RunLength | None = None):
    if run is None:
        raise ValueError(
            "DINO's schedules need the run length: build the step through "
            "trainer.Experiment (its prepare hook binds it) or use "
            "jssl.methods.dino.for_run(total_steps, steps_per_epoch)."
        )
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


def after_update(params, batch_stats, method_state, step, config, *, run: RunLength | None = None):
    """EMA of the updated student into the teacher (params and BatchNorm statistics)."""
    del step  # the EMA state counts its own updates
    if run is None:
        raise ValueError("DINO's after_update needs the run length; see make_loss.")
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


# ----------------------------------------------------------------------------- evaluation


def extra_eval(experiment, state) -> dict[str, float]:
    """kNN top-1 of the EMA teacher's features, beside the trainer's figures for the student.

    DINO evaluates the teacher, which is usually the better network.
    """
    config = experiment.config
    teacher = state.method_state["teacher"]
    variables = {"params": teacher.params}
    if teacher.batch_stats:
        variables["batch_stats"] = teacher.batch_stats
    size = (config.augment.crop_size, config.augment.crop_size)
    data_sharding = sharding.data_sharded(experiment.mesh)

    @jax.jit
    def features(variables, images):
        x = augment.eval_view(images, size=size)
        return experiment.model.apply(variables, x, train=False)[1]["features"]

    def apply_fn(images):
        return features(variables, jax.device_put(images, data_sharding))

    train, test = experiment.dataset.train, experiment.dataset.test
    cap = config.eval.max_train_examples
    if cap and cap < len(train.labels):  # the same subset as Experiment.evaluate
        keep = np.sort(np.random.default_rng(config.seed).permutation(len(train.labels))[:cap])
        train = data.Split(images=train.images[keep], labels=train.labels[keep])
    batch_size = config.eval.batch_size
    knn = evaluation.knn_accuracy(
        evaluation.extract_features(apply_fn, train.images, batch_size=batch_size),
        train.labels,
        evaluation.extract_features(apply_fn, test.images, batch_size=batch_size),
        test.labels,
        num_classes=experiment.dataset.num_classes,
        k=config.eval.knn_k,
        temperature=config.eval.knn_temperature,
    )
    return {"teacher_knn_top1": float(knn)}


# ----------------------------------------------------------------------------- optimiser


def clip_by_leaf_norm(max_norm: float) -> optax.GradientTransformation:
    """Scales each leaf g to norm at most ``max_norm``: g * min(1, max_norm / (||g|| + 1e-6)).

    DINO's ``clip_gradients`` clips every parameter tensor separately, not the
    global norm.
    """

    def update_fn(updates, state, params=None):
        del params

        def clip(g):
            norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
            return (g * jnp.minimum(1.0, max_norm / (norm + 1e-6))).astype(g.dtype)

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def make_dino_optimizer(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """DINO's AdamW: per-tensor clipping, decoupled weight decay on a cosine schedule.

    lr: linear warm-up to ``learning_rate * batch_size / 256`` over
    ``optim.warmup_epochs``, cosine to ``end_lr_factor * peak``; weight decay:
    cosine ``optim.weight_decay`` -> ``dino.weight_decay_end`` (0.04 -> 0.4),
    masked as ``weight_decay_mask`` (no decay on biases, norms, pos_embed,
    cls_token); gradient clipping per tensor at ``optim.grad_clip`` (0: off).

    Returns (optimizer, learning-rate schedule), as ``optim.make_optimizer``.
    """
    oc, d = config.optim, config.dino
    run = RunLength(total_steps, steps_per_epoch)
    peak = (
        oc.learning_rate * config.batch_size / 256.0 if oc.scale_lr_by_batch else oc.learning_rate
    )
    warmup = min(run.epochs_to_steps(oc.warmup_epochs), max(total_steps - 1, 0))
    lr = schedules.bind(
        schedules.warmup_cosine,
        peak=peak,
        warmup_steps=warmup,
        total_steps=total_steps,
        end=peak * oc.end_lr_factor,
    )
    wd = schedules.bind(
        schedules.weight_decay,
        total_steps=total_steps,
        base=oc.weight_decay,
        final=d.weight_decay_end,
    )
    parts = [clip_by_leaf_norm(oc.grad_clip)] if oc.grad_clip > 0 else []
    parts += [
        optax.scale_by_adam(b1=oc.b1, b2=oc.b2),
        optax.add_decayed_weights(wd, mask=weight_decay_mask),
        optax.scale_by_learning_rate(lr),
    ]
    return optax.chain(*parts), lr


# ----------------------------------------------------------------------------- method


def for_run(total_steps: int, steps_per_epoch: int) -> Method:
    """DINO with its schedules bound to a run of ``total_steps`` steps."""
    run = RunLength(int(total_steps), int(steps_per_epoch))
    return dataclasses.replace(
        DINO,
        make_loss=lambda model, config: make_loss(model, config, run=run),
        after_update=lambda *args: after_update(*args, run=run),
        prepare=None,
    )


def prepare(experiment) -> None:
    """Binds the experiment's run length into the method (runs before the step is built)."""
    experiment.method = for_run(experiment.total_steps, experiment.steps_per_epoch)


DINO = Method(
    name="dino",
    build_model=build_model,
    make_views=make_views,
    make_loss=make_loss,
    init_method_state=init_method_state,
    after_update=after_update,
    prepare=prepare,
    collapse_warnings=collapse_warnings,
    make_optimizer=make_dino_optimizer,
    extra_eval=extra_eval,
)
