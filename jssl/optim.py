"""Optimisers (SGD, LARS, AdamW, DINO's AdamW): warm-up + cosine schedules, weight-decay masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jssl import schedules
from jssl.errors import UserError
from jssl.models import weight_decay_mask


def warmup_steps(config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> int:
    """The warm-up's length: ``optim.warmup_epochs`` of steps, at most ``total_steps - 1``."""
    asked = int(round(config.optim.warmup_epochs * steps_per_epoch))
    return min(asked, max(total_steps - 1, 0))


def warmup_warning(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> str | None:
    """A sentence when the run ends inside its warm-up (the learning rate only rises)."""
    asked = int(round(config.optim.warmup_epochs * steps_per_epoch))
    if total_steps < 2 or asked < total_steps:
        return None
    return (
        f"the run's {total_steps} steps end inside its {asked}-step warm-up "
        f"(optim.warmup_epochs={config.optim.warmup_epochs} at {steps_per_epoch} steps per "
        "epoch): the learning rate rises for the whole run and never decays; train longer or "
        "lower --config.optim.warmup_epochs"
    )


def learning_rate_schedule(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
    """Linear warm-up to ``lr * batch_size / 256`` then cosine decay to ``end_lr_factor * peak``."""
    oc = config.optim
    peak = (
        oc.learning_rate * config.batch_size / 256.0 if oc.scale_lr_by_batch else oc.learning_rate
    )
    warmup = warmup_steps(config, total_steps, steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=peak * oc.end_lr_factor,
    )


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns (optimizer, learning-rate schedule) for ``config.optim``."""
    oc = config.optim
    if oc.name == "dino_adamw":
        return dino_adamw(config, total_steps, steps_per_epoch)
    schedule = learning_rate_schedule(config, total_steps, steps_per_epoch)
    if oc.name == "sgd":
        tx = optax.chain(
            optax.add_decayed_weights(oc.weight_decay, mask=weight_decay_mask),
            optax.sgd(schedule, momentum=oc.momentum or None, nesterov=oc.nesterov),
        )
    elif oc.name == "lars":
        tx = optax.lars(
            schedule,
            weight_decay=oc.weight_decay,
            weight_decay_mask=weight_decay_mask,
            trust_ratio_mask=weight_decay_mask,
            momentum=oc.momentum,
        )
    elif oc.name == "adamw":
        tx = optax.adamw(
            schedule, b1=oc.b1, b2=oc.b2, weight_decay=oc.weight_decay, mask=weight_decay_mask
        )
    else:
        raise UserError(
            f"Unknown optimizer {oc.name!r}; valid: 'sgd', 'lars', 'adamw', 'dino_adamw'."
        )
    if oc.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(oc.grad_clip), tx)
    return tx, schedule


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


def dino_adamw(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """DINO's AdamW: per-tensor clipping, decoupled weight decay on a cosine schedule.

    lr: linear warm-up to ``learning_rate * batch_size / 256`` over
    ``optim.warmup_epochs``, cosine to ``end_lr_factor * peak``; weight decay:
    cosine ``optim.weight_decay`` -> ``optim.weight_decay_end`` (0.04 -> 0.4),
    masked as ``weight_decay_mask`` (no decay on biases, norms, pos_embed,
    cls_token); gradient clipping per tensor at ``optim.grad_clip`` (0: off).

    Returns (optimizer, learning-rate schedule), as ``optim.make_optimizer``.
    """
    oc = config.optim
    peak = (
        oc.learning_rate * config.batch_size / 256.0 if oc.scale_lr_by_batch else oc.learning_rate
    )
    warmup = warmup_steps(config, total_steps, steps_per_epoch)
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
        final=oc.weight_decay_end,
    )
    parts = [clip_by_leaf_norm(oc.grad_clip)] if oc.grad_clip > 0 else []
    parts += [
        optax.scale_by_adam(b1=oc.b1, b2=oc.b2),
        optax.add_decayed_weights(wd, mask=weight_decay_mask),
        optax.scale_by_learning_rate(lr),
    ]
    return optax.chain(*parts), lr
