"""Weighted k-nearest-neighbour classification on frozen features (DINO-style)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jssl.losses.contrastive import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "temperature", "num_classes"))
def _knn_predict_chunk(
    test_chunk: jax.Array,
    train_features: jax.Array,
    train_labels: jax.Array,
    *,
    k: int,
    temperature: float,
    num_classes: int,
) -> jax.Array:
    """Predicted classes [c] of test features [c, D]; train features already normalised."""
    test_chunk = l2_normalize(test_chunk.astype(jnp.float32))
    # HIGHEST: full float32 similarities on accelerators whose default matmul is TF32.
    sim = jnp.matmul(test_chunk, train_features.T, precision=jax.lax.Precision.HIGHEST)
    top_sim, top_idx = jax.lax.top_k(sim, k)  # [c, k]
    weights = jnp.exp(top_sim / temperature)
    onehot = jax.nn.one_hot(train_labels[top_idx], num_classes)  # [c, k, num_classes]
    votes = jnp.einsum("ck,ckn->cn", weights, onehot)
    return jnp.argmax(votes, axis=-1)


def knn_accuracy(
    train_features: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    test_features: jax.Array | np.ndarray,
    test_labels: jax.Array | np.ndarray,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of a temperature-weighted kNN classifier on cosine similarity.

    As in DINO's ``eval_knn.py``: features are L2-normalised; each test example
    takes its ``k`` most similar train examples; neighbour j votes for its class
    with weight exp(sim_j / temperature); the class with the largest summed
    weight is the prediction (ties go to the lowest class index).

    Memory is bounded: test features go through one jitted function in chunks of
    ``min(chunk_size, N_test)`` rows, the last one zero-padded, so a call
    compiles once and holds one [chunk, N_train] similarity matrix at a time
    (DINO's ``n_test // 100`` chunking breaks below 100 test examples).

    Args:
      train_features: [N_train, D] features of the labelled reference set.
      train_labels: [N_train] integer labels in [0, num_classes).
      test_features: [N_test, D] features to classify.
      test_labels: [N_test] integer labels in [0, num_classes).
      num_classes: number of classes.
      k: number of neighbours; clamped to N_train.
      temperature: temperature of the vote weights.
      chunk_size: test examples per compiled chunk.

    Returns:
      Top-1 accuracy in [0, 1] as a Python float.
    """
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    n_train, n_test = len(train_labels), len(test_labels)
    if n_train == 0 or n_test == 0:
        raise ValueError(f"knn_accuracy needs non-empty sets, got {n_train=} and {n_test=}.")
    if len(train_features) != n_train or len(test_features) != n_test:
        raise ValueError(
            f"Features and labels differ in length: train {len(train_features)} vs {n_train}, "
            f"test {len(test_features)} vs {n_test}."
        )
    if chunk_size < 1 or k < 1:
        raise ValueError(f"knn_accuracy needs chunk_size >= 1 and k >= 1, got {chunk_size=}, {k=}.")
    k = min(k, n_train)
    chunk = min(chunk_size, n_test)
    train = l2_normalize(jnp.asarray(train_features, jnp.float32))
    train_y = jnp.asarray(train_labels, jnp.int32)
    test_features = np.asarray(test_features, np.float32)
    correct = 0
    for start in range(0, n_test, chunk):
        x = test_features[start : start + chunk]
        n_valid = len(x)
        if n_valid < chunk:  # Pad the last chunk: one compiled shape for all chunks.
            x = np.pad(x, ((0, chunk - n_valid), (0, 0)))
        pred = _knn_predict_chunk(
            jnp.asarray(x), train, train_y, k=k, temperature=temperature, num_classes=num_classes
        )
        correct += int(np.sum(np.asarray(pred)[:n_valid] == test_labels[start : start + n_valid]))
    return correct / n_test
