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

DINO's teacher is an input of its loss, and the generic train step hands the
loss the method state, not the optimiser state. So DINO keeps the teacher in
its method state, an ``EmaTeacherState(count, params, batch_stats)``, and
advances it after each optimiser update through ``ema_teacher(momentum)``, a
wrapper over the same transformation: the teacher's variables
``{"params", "batch_stats"}`` are tracked by ``track_ema``, and each wrapper
update is a ``track_ema`` update with zero updates and the student's new
variables as ``params``. The state keeps its own update count, so the
schedule's position is saved in the checkpoint with the teacher.

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


def track_ema(momentum: float | optax.Schedule) -> optax.GradientTransformation:
    """Gradient transformation that keeps an EMA teacher of the parameters.

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

    def momentum_at(count: jax.Array) -> jax.Array:
        m = momentum(count) if callable(momentum) else momentum
        return jnp.asarray(m, jnp.float32)

    def init_fn(params: PyTree) -> TrackEmaState:
        teacher = jax.tree.map(jnp.array, jax.lax.stop_gradient(params))
        return TrackEmaState(count=jnp.zeros((), jnp.int32), teacher=teacher)

    def update_fn(
        updates: PyTree, state: TrackEmaState, params: PyTree | None = None
    ) -> tuple[PyTree, TrackEmaState]:
        if params is None:
            raise ValueError(
                "track_ema needs the parameters: call update(updates, state, params) "
                "(in optax.chain, pass params to the chain's update)."
            )
        student = optax.apply_updates(params, updates)
        teacher = ema(state.teacher, student, momentum_at(state.count))
        return updates, TrackEmaState(count=optax.safe_increment(state.count), teacher=teacher)

    return optax.GradientTransformation(init_fn, update_fn)


def _no_updates(tree: PyTree) -> PyTree:
    """Zero updates, written as -0.0: ``x + (-0.0)`` is ``x`` bit for bit (also for x = -0.0)."""
    return jax.tree.map(lambda x: jnp.full_like(x, -0.0), tree)


def ema_teacher(momentum: float | optax.Schedule) -> EmaTeacher:
    """EMA teacher whose momentum is a constant or a schedule of the update count.

    A wrapper over ``track_ema(momentum)`` that tracks the variables
    ``{"params": ..., "batch_stats": ...}`` and keeps them in an ``EmaTeacherState``.

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
    tx = track_ema(momentum)

    def init_fn(params: PyTree, batch_stats: PyTree | None = None) -> EmaTeacherState:
        variables = {
            "params": params,
            "batch_stats": batch_stats if batch_stats is not None else {},
        }
        state = tx.init(variables)
        return EmaTeacherState(state.count, state.teacher["params"], state.teacher["batch_stats"])

    def update_fn(
        params: PyTree, state: EmaTeacherState, batch_stats: PyTree | None = None
    ) -> EmaTeacherState:
        variables, teacher = {"params": params}, {"params": state.params}
        if batch_stats is not None:
            variables["batch_stats"], teacher["batch_stats"] = batch_stats, state.batch_stats
        _, new = tx.update(_no_updates(variables), TrackEmaState(state.count, teacher), variables)
        return EmaTeacherState(
            count=new.count,
            params=new.teacher["params"],
            batch_stats=new.teacher.get("batch_stats", state.batch_stats),
        )

    return EmaTeacher(init=init_fn, update=update_fn)
