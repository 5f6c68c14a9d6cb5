"""Linear probe: a softmax classifier trained with optax on frozen features."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jssl.evaluation.knn import l2_normalize

PROGRESS_STEPS = 10  # the probe runs in this many jitted calls (or one per epoch, if fewer)


def standardize(
    train_features: jax.Array | np.ndarray, test_features: jax.Array | np.ndarray
) -> tuple[jax.Array, jax.Array]:
    """L2-normalises rows, then standardises each dimension with train mean and std.

    Normalising first puts every backbone on the cosine scale kNN uses; the
    per-dimension standardisation then makes one learning rate fit all
    backbones. Test features use the train statistics only.

    Returns:
      ([N_train, D], [N_test, D]) float32 arrays.
    """
    x_train = l2_normalize(jnp.asarray(train_features, jnp.float32))
    x_test = l2_normalize(jnp.asarray(test_features, jnp.float32))
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std = jnp.where(std > 1e-6, std, 1.0)  # Constant dimensions are only centred.
    return (x_train - mean) / std, (x_test - mean) / std


def _logits(params, x):
    return x @ params["w"] + params["b"]


def _optimizer(learning_rate, weight_decay, total_steps: int) -> optax.GradientTransformation:
    """AdamW with a cosine-decayed learning rate over the whole probe."""
    schedule = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    return optax.adamw(schedule, weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _init(x, *, num_classes):
    params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
    return params, _optimizer(0.0, 0.0, 1).init(params)  # AdamW's state: no lr inside


@functools.partial(jax.jit, static_argnames=("epochs", "batch_size"))
def _train_epochs(
    carry, x, y, key, learning_rate, weight_decay, epoch_indices, *, epochs, batch_size
):
    """The probe's epochs ``epoch_indices`` of ``epochs`` (a scan over epochs, each a scan
    over steps), from ``carry`` = (params, AdamW state)."""
    n = x.shape[0]
    steps = n // batch_size  # Each epoch drops a different random remainder.
    # Built inside jit from traced hyperparameters: one compilation across calls.
    tx = _optimizer(learning_rate, weight_decay, epochs * steps)

    def loss_fn(params, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(_logits(params, xb), yb).mean()

    def step(carry, idx):
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params, x[idx], y[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def epoch(carry, epoch_index):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch_index), n)
        batches = perm[: steps * batch_size].reshape(steps, batch_size)
        return jax.lax.scan(step, carry, batches)[0], None

    return jax.lax.scan(epoch, carry, epoch_indices)[0]


@jax.jit
def _accuracy(params, x, y):
    return jnp.mean(jnp.argmax(_logits(params, x), axis=-1) == y)


def linear_probe(
    train_features: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    test_features: jax.Array | np.ndarray,
    test_labels: jax.Array | np.ndarray,
    *,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 256,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Trains a linear softmax classifier on frozen features and reports top-1 accuracy.

    Features are L2-normalised, then standardised per dimension with the train
    mean and std (see `standardize`). The classifier starts at zero and is
    trained with AdamW (cosine-decayed learning rate, decoupled weight decay)
    on the cross-entropy, in shuffled minibatches of ``min(batch_size, N_train)``
    (the last partial batch of each epoch is dropped), in about ten jitted calls of
    several epochs, deterministic given ``seed``.

    Args:
      train_features: [N_train, D] features.
      train_labels: [N_train] integer labels in [0, num_classes).
      test_features: [N_test, D] features.
      test_labels: [N_test] integer labels in [0, num_classes).
      num_classes: number of classes.
      epochs: passes over the train set.
      batch_size: examples per step.
      learning_rate: peak AdamW learning rate.
      weight_decay: AdamW decoupled weight decay.
      seed: seed of the minibatch order.
      progress: called as (epochs done, epochs) about ten times during training.

    Returns:
      {'train_top1': float, 'test_top1': float}, accuracies in [0, 1].
    """
    n_train = len(train_labels)
    if n_train == 0 or len(test_labels) == 0:
        raise ValueError("linear_probe needs non-empty train and test sets.")
    x_train, x_test = standardize(train_features, test_features)
    y_train = jnp.asarray(train_labels, jnp.int32)
    y_test = jnp.asarray(test_labels, jnp.int32)
    carry = _init(x_train, num_classes=num_classes)
    chunk = -(-epochs // PROGRESS_STEPS)  # epochs per call: progress about 10 times
    for first in range(0, epochs, chunk):
        carry = _train_epochs(
            carry,
            x_train,
            y_train,
            jax.random.key(seed),
            jnp.float32(learning_rate),
            jnp.float32(weight_decay),
            jnp.arange(first, min(first + chunk, epochs)),
            epochs=epochs,
            batch_size=min(batch_size, n_train),
        )
        if progress is not None:
            jax.block_until_ready(carry)
            progress(min(first + chunk, epochs), epochs)
    params = carry[0]
    return {
        "train_top1": float(_accuracy(params, x_train, y_train)),
        "test_top1": float(_accuracy(params, x_test, y_test)),
    }
