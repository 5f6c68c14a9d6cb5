"""EMA teacher in optax's style: an ``(init, update)`` pair over an explicit NamedTuple state.

    teacher <- m * teacher + (1 - m) * student,   m = momentum(count)

for the parameters and, when given, the BatchNorm statistics (the same EMA).
DINO and BYOL use a cosine momentum 0.996 -> 1 (``jssl.schedules.teacher_momentum``).

This is not an ``optax.GradientTransformation`` on purpose: the teacher must
be an input of the loss, and the generic train step hands the loss the method
state, not the optimiser state. The state keeps its own update count, so the
schedule's position is saved in the checkpoint with the teacher.

The teacher never receives gradients: the student is read through
``stop_gradient``, and losses read the teacher through ``stop_gradient`` too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["EmaTeacher", "EmaTeacherState", "ema", "ema_teacher"]

PyTree = Any


class EmaTeacherState(NamedTuple):
    """count: int32 [] updates applied; params / batch_stats: the teacher's variables."""

    count: jax.Array
    params: PyTree
    batch_stats: PyTree


class EmaTeacher(NamedTuple):
    """``init(params, batch_stats={}) -> state``; ``update(params, state, batch_stats=None)``."""

    init: Callable[..., EmaTeacherState]
    update: Callable[..., EmaTeacherState]


def ema(teacher: PyTree, student: PyTree, momentum: float | jax.Array) -> PyTree:
    """Leafwise ``momentum * teacher + (1 - momentum) * student`` (student without gradient).

    Written as a weighted sum so that momentum 1 returns the teacher and
    momentum 0 the student exactly.
    """
    student = jax.lax.stop_gradient(student)
    return jax.tree.map(
        lambda t, s: (momentum * t + (1.0 - momentum) * s).astype(t.dtype), teacher, student
    )


def ema_teacher(momentum: float | optax.Schedule) -> EmaTeacher:
    """EMA teacher whose momentum is a constant or a schedule of the update count.

    Args:
      momentum: a float, or ``count -> momentum`` (e.g.
        ``schedules.bind(schedules.teacher_momentum, total_steps=T)``). The
        n-th update (count n, from 0) uses ``momentum(n)``.

    Returns:
      ``EmaTeacher(init, update)``:
      - ``init(params, batch_stats={})``: the teacher starts as a copy of the student.
      - ``update(params, state, batch_stats=None)``: one EMA step towards the
        student's (new) params and, if given, its batch statistics; the
        teacher's batch statistics are left as they are when ``batch_stats`` is None.
    """

    def momentum_at(count: jax.Array) -> jax.Array:
        m = momentum(count) if callable(momentum) else momentum
        return jnp.asarray(m, jnp.float32)

    def init_fn(params: PyTree, batch_stats: PyTree | None = None) -> EmaTeacherState:
        copy = lambda tree: jax.tree.map(jnp.array, jax.lax.stop_gradient(tree))
        return EmaTeacherState(
            count=jnp.zeros((), jnp.int32),
            params=copy(params),
            batch_stats=copy(batch_stats if batch_stats is not None else {}),
        )

    def update_fn(
        params: PyTree, state: EmaTeacherState, batch_stats: PyTree | None = None
    ) -> EmaTeacherState:
        m = momentum_at(state.count)
        return EmaTeacherState(
            count=optax.safe_increment(state.count),
            params=ema(state.params, params, m),
            batch_stats=(
                state.batch_stats if batch_stats is None else ema(state.batch_stats, batch_stats, m)
            ),
        )

    return EmaTeacher(init=init_fn, update=update_fn)
