"""EMA teacher updates as an optax transformation.

    teacher <- m * teacher + (1 - m) * student,   m = momentum(count)

``track_ema(momentum)`` is an ``optax.GradientTransformation``. Its state
holds the teacher (a copy of the parameters at ``init``) and an update count;
``update(updates, state, params)`` moves the teacher towards the parameters
after this update, ``optax.apply_updates(params, updates)``, with momentum
``momentum(count)`` (count from 0), and returns the updates unchanged. Put it
last in a chain so that it sees the final updates::

    tx = optax.chain(optax.sgd(lr), track_ema(0.99))
    updates, opt_state = tx.update(grads, opt_state, params)  # params required
    params = optax.apply_updates(params, updates)
    teacher = opt_state[-1].teacher

DINO and BYOL use a cosine momentum 0.996 -> 1 (``jssl.schedules.teacher_momentum``).

Both this transformation and ``ema_teacher`` are the plain leafwise ``ema``.
DINO's teacher is an input of its loss, and the generic train step hands the
loss the method state, not the optimiser state. So DINO (and the momentum
encoders) keep the teacher in the method state, an ``EmaTeacherState(count,
params, batch_stats)``, and advance it after each optimiser update through
``ema_teacher(momentum)``: the same ``ema`` step of the teacher's params and
BatchNorm statistics towards the student's new ones. The state keeps its own
update count, so the schedule's position is saved in the checkpoint with the
teacher.

The teacher never receives gradients: the student is read through
``stop_gradient``, and losses read the teacher through ``stop_gradient`` too.
Each teacher leaf keeps its dtype (float32 or bfloat16); momentum 1 returns
the teacher and momentum 0 the student exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["EmaTeacher", "EmaTeacherState", "TrackEmaState", "ema", "ema_teacher", "track_ema"]

PyTree = Any


class TrackEmaState(NamedTuple):
    """State of ``track_ema``: count, int32 [] updates applied; teacher, the EMA of the params."""

    count: jax.Array
    teacher: PyTree


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
    momentum 0 the student exactly. Each result leaf has the teacher leaf's dtype.
    """
    student = jax.lax.stop_gradient(student)
    return jax.tree.map(
        lambda t, s: (momentum * t + (1.0 - momentum) * s).astype(t.dtype), teacher, student
    )


def _momentum_at(momentum: float | optax.Schedule, count: jax.Array) -> jax.Array:
    return jnp.asarray(momentum(count) if callable(momentum) else momentum, jnp.float32)


def _copy(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.array, jax.lax.stop_gradient(tree))


def track_ema(momentum: float | optax.Schedule) -> optax.GradientTransformation:
    """Gradient transformation that keeps an EMA teacher of the parameters (``ema`` as optax).

    Args:
      momentum: a float, or ``count -> momentum`` (e.g.
        ``schedules.bind(schedules.teacher_momentum, total_steps=T)``). The
        n-th update (count n, from 0) uses ``momentum(n)``.

    Returns:
      ``optax.GradientTransformation(init, update)``:
      - ``init(params) -> TrackEmaState(count=0, teacher=copy of params)``.
      - ``update(updates, state, params) -> (updates, state)``: one EMA step of
        the teacher towards ``optax.apply_updates(params, updates)``; the
        updates are returned unchanged. ``params`` is required.
    """

    def init_fn(params: PyTree) -> TrackEmaState:
        return TrackEmaState(count=jnp.zeros((), jnp.int32), teacher=_copy(params))

    def update_fn(
        updates: PyTree, state: TrackEmaState, params: PyTree | None = None
    ) -> tuple[PyTree, TrackEmaState]:
        if params is None:
            raise ValueError(
                "track_ema needs the parameters: call update(updates, state, params) "
                "(in optax.chain, pass params to the chain's update)."
            )
        student = optax.apply_updates(params, updates)
        teacher = ema(state.teacher, student, _momentum_at(momentum, state.count))
        return updates, TrackEmaState(count=optax.safe_increment(state.count), teacher=teacher)

    return optax.GradientTransformation(init_fn, update_fn)


def ema_teacher(momentum: float | optax.Schedule) -> EmaTeacher:
    """EMA teacher of a network's variables, momentum a constant or a schedule of the count.

    The same step as ``track_ema`` (``ema`` at ``momentum(count)``), on the variables
    ``params`` and ``batch_stats`` kept in an ``EmaTeacherState``: the methods advance
    it after the optimiser's update, from the student's new variables.

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

    def init_fn(params: PyTree, batch_stats: PyTree | None = None) -> EmaTeacherState:
        stats = batch_stats if batch_stats is not None else {}
        return EmaTeacherState(jnp.zeros((), jnp.int32), _copy(params), _copy(stats))

    def update_fn(
        params: PyTree, state: EmaTeacherState, batch_stats: PyTree | None = None
    ) -> EmaTeacherState:
        m = _momentum_at(momentum, state.count)
        stats = state.batch_stats if batch_stats is None else ema(state.batch_stats, batch_stats, m)
        return EmaTeacherState(
            count=optax.safe_increment(state.count),
            params=ema(state.params, params, m),
            batch_stats=stats,
        )

    return EmaTeacher(init=init_fn, update=update_fn)
