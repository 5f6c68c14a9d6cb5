"""Schedules as pure functions of the step (jittable; ``step`` may be traced).

Each function takes the step first and its hyperparameters keyword-only;
bind them with ``functools.partial`` to get an ``optax.Schedule``. Values are
float32 and the endpoints are exact: the interpolation is written as
``(1 - w) * start + w * end`` with the weight ``w`` exactly 0 and 1 at the ends.

DINO's defaults: teacher momentum 0.996 -> 1 (cosine), teacher temperature
0.04 -> 0.07 (linear warm-up, then constant), weight decay 0.04 -> 0.4
(cosine), learning rate linear warm-up then cosine.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "bind",
    "cosine",
    "linear_warmup",
    "teacher_momentum",
    "teacher_temperature",
    "warmup_cosine",
    "weight_decay",
]

Step = int | jax.Array


def _progress(step: Step, start: int, length: int) -> jax.Array:
    """(step - start) / length clipped to [0, 1], float32; 1 when length <= 0."""
    if length <= 0:
        return jnp.where(jnp.asarray(step) >= start, 1.0, 0.0).astype(jnp.float32)
    t = (jnp.asarray(step, jnp.float32) - start) / float(length)
    return jnp.clip(t, 0.0, 1.0)


def _blend(start: float, end: float, w: jax.Array) -> jax.Array:
    return ((1.0 - w) * start + w * end).astype(jnp.float32)


def cosine(step: Step, *, start: float, end: float, total_steps: int) -> jax.Array:
    """Half-cosine from ``start`` at step 0 to ``end`` at ``total_steps`` (constant after)."""
    w = 0.5 * (1.0 - jnp.cos(jnp.pi * _progress(step, 0, total_steps)))
    return _blend(start, end, w)


def linear_warmup(step: Step, *, start: float, end: float, warmup_steps: int) -> jax.Array:
    """Linear from ``start`` at step 0 to ``end`` at ``warmup_steps``, then ``end``."""
    return _blend(start, end, _progress(step, 0, warmup_steps))


def teacher_momentum(
    step: Step, *, total_steps: int, base: float = 0.996, final: float = 1.0
) -> jax.Array:
    """DINO/BYOL EMA momentum: cosine from ``base`` at step 0 to ``final`` at the end."""
    return cosine(step, start=base, end=final, total_steps=total_steps)


def teacher_temperature(
    step: Step, *, warmup_steps: int, warmup_temp: float = 0.04, final_temp: float = 0.07
) -> jax.Array:
    """DINO teacher temperature: linear ``warmup_temp`` -> ``final_temp``, then constant.

    (DINO warms up per epoch; here the ramp is per step, same endpoints.)
    """
    return linear_warmup(step, start=warmup_temp, end=final_temp, warmup_steps=warmup_steps)


def weight_decay(
    step: Step, *, total_steps: int, base: float = 0.04, final: float = 0.4
) -> jax.Array:
    """DINO weight decay: cosine from ``base`` to ``final`` over the run."""
    return cosine(step, start=base, end=final, total_steps=total_steps)


def warmup_cosine(
    step: Step,
    *,
    peak: float,
    warmup_steps: int,
    total_steps: int,
    init: float = 0.0,
    end: float = 0.0,
) -> jax.Array:
    """Learning rate: linear ``init`` -> ``peak`` over ``warmup_steps``, cosine to ``end``.

    The cosine spans steps [warmup_steps, total_steps]; the value is ``end`` after.
    """
    warm = linear_warmup(step, start=init, end=peak, warmup_steps=warmup_steps)
    decay = cosine(
        jnp.asarray(step) - warmup_steps,
        start=peak,
        end=end,
        total_steps=max(total_steps - warmup_steps, 0),
    )
    return jnp.where(jnp.asarray(step) < warmup_steps, warm, decay)


def bind(fn, **hyperparameters) -> optax.Schedule:
    """``step -> fn(step, **hyperparameters)``: a schedule for optax or the loss."""
    return functools.partial(fn, **hyperparameters)
