"""Linear probe: a softmax classifier trained with optax on frozen features."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jssl.evaluation.knn import l2_normalize


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


@functools.partial(jax.jit, static_argnames=("num_classes", "epochs", "batch_size"))
def _train(x, y, key, learning_rate, weight_decay, *, num_classes, epochs, batch_size):
    """Minibatch training: an outer scan over epochs, an inner scan over steps."""
    n, d = x.shape
    steps = n // batch_size  # Each epoch drops a different random remainder.
    # Built inside jit from traced hyperparameters: one compilation across calls.
    schedule = optax.cosine_decay_schedule(learning_rate, max(epochs * steps, 1))
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}

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

    carry, _ = jax.lax.scan(epoch, (params, tx.init(params)), jnp.arange(epochs))
    return carry[0]


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
) -> dict[str, float]:
    """Trains a linear softmax classifier on frozen features and reports top-1 accuracy.

    Features are L2-normalised, then standardised per dimension with the train
    mean and std (see `standardize`). The classifier starts at zero and is
    trained with AdamW (cosine-decayed learning rate, decoupled weight decay)
    on the cross-entropy, in shuffled minibatches of ``min(batch_size, N_train)``
    (the last partial batch of each epoch is dropped). The whole run is one
    jitted function, deterministic given ``seed``.

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

    Returns:
      {'train_top1': float, 'test_top1': float}, accuracies in [0, 1].
    """
    n_train = len(train_labels)
    if n_train == 0 or len(test_labels) == 0:
        raise ValueError("linear_probe needs non-empty train and test sets.")
    x_train, x_test = standardize(train_features, test_features)
    y_train = jnp.asarray(train_labels, jnp.int32)
    y_test = jnp.asarray(test_labels, jnp.int32)
    params = _train(
        x_train,
        y_train,
        jax.random.key(seed),
        jnp.float32(learning_rate),
        jnp.float32(weight_decay),
        num_classes=num_classes,
        epochs=epochs,
        batch_size=min(batch_size, n_train),
    )
    return {
        "train_top1": float(_accuracy(params, x_train, y_train)),
        "test_top1": float(_accuracy(params, x_test, y_test)),
    }
