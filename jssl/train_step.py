"""The one generic train step shared by every method.

A method contributes pure functions (views and loss); this step owns the
randomness, gradients, optimiser update, the non-finite guard and the cheap
health metrics (loss, grad norm, param norm, learning rate).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs, saved whole in every checkpoint.

    ``step`` is the number of updates applied; the checkpoint of step s holds
    the state after update s.
    """

    step: jax.Array  # int32 []
    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    method_state: PyTree  # e.g. DINO's centre and teacher, SeLa's labels
    rng: jax.Array  # uint32 [2]: base key; step keys are fold_in(rng, step)
    nonfinite_steps: jax.Array  # int32 []: updates skipped for a non-finite loss or gradient


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def step_views(state: TrainState, batch: dict[str, jax.Array], *, method, config):
    """The step's views of ``batch`` and the key its loss draws from: ``(views, loss_key)``.

    The per-step key is ``fold_in(state.rng, state.step)``, so the step's
    randomness depends only on (seed, step): resume is exact and the result
    does not depend on the number of devices.
    """
    step_key = jax.random.fold_in(state.rng, state.step)
    view_key, loss_key = jax.random.split(step_key)
    return method.make_views(view_key, batch, config), loss_key


def loss_and_grads(state: TrainState, views, loss_key: jax.Array, *, method, model, config, run):
    """``((loss, (batch_stats, method_state, metrics)), grads)`` of the method's loss at
    ``state.params`` on ``views`` (``step_views``): the train step's gradient, which
    ``jssl.check`` and the tests also compare with a float64 computation."""
    loss_fn = method.make_loss(model, config, run)

    def objective(params):
        return loss_fn(params, state.batch_stats, views, state.method_state, state.step, loss_key)

    return jax.value_and_grad(objective, has_aux=True)(state.params)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    method,
    model,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    config,
    run,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One update: views -> loss -> grads -> optimiser; ``(state, batch) -> (state, metrics)``.

    ``run`` (``jssl.methods.RunInfo``) is handed to the method's loss and
    after_update (schedules over the run's length).

    A step whose loss, gradients or new parameters are not finite is not applied (the state
    only counts it in ``nonfinite_steps``); the trainer decides whether to stop.
    """
    views, loss_key = step_views(state, batch, method=method, config=config)
    (loss, (batch_stats, method_state, metrics)), grads = loss_and_grads(
        state, views, loss_key, method=method, model=model, config=config, run=run
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if method.after_update is not None:
        params, method_state = method.after_update(
            params, batch_stats, method_state, state.step, config, run
        )

    # The new parameters too: a finite gradient can still give a non-finite update
    # (e.g. an infinite learning rate or an optimiser state that overflowed).
    finite = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params)
    new = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        method_state=method_state,
    )
    # Keep the old values for a non-finite step (but still advance the step so
    # the data order and randomness move on).
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state.replace(step=new.step))
    kept = kept.replace(nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))

    metrics = {
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(params),
        "learning_rate": schedule(state.step),
        "finite": finite.astype(jnp.float32),
        **metrics,
    }
    return kept, metrics
