"""Optimisers (SGD, LARS, AdamW) with warm-up + cosine schedule and weight-decay masks."""

from __future__ import annotations

import ml_collections
import optax

from jssl.errors import UserError
from jssl.models import weight_decay_mask


def learning_rate_schedule(
    config: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
) -> optax.Schedule:
    """Linear warm-up to ``lr * batch_size / 256`` then cosine decay to ``end_lr_factor * peak``."""
    oc = config.optim
    peak = (
        oc.learning_rate * config.batch_size / 256.0 if oc.scale_lr_by_batch else oc.learning_rate
    )
    warmup = min(int(round(oc.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
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
        raise UserError(f"Unknown optimizer {oc.name!r}; valid: 'sgd', 'lars', 'adamw'.")
    if oc.grad_clip > 0:
        tx = optax.chain(optax.clip_by_global_norm(oc.grad_clip), tx)
    return tx, schedule
