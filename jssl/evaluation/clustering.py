"""Clustering and its metrics: k-means, Hungarian accuracy, many-to-one accuracy, NMI, ARI.

The metrics are jnp functions of a contingency matrix, so they run under
``jax.jit``; the Hungarian matching calls ``scipy.optimize.linear_sum_assignment``
through ``jax.pure_callback``. Under ``jit`` the label counts (``num_classes``,
``num_clusters``) must be given, since they fix array shapes; on concrete
inputs they default to ``max(label) + 1``. Labels outside ``[0, count)`` are
rejected on concrete inputs and silently ignored under ``jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

ArrayLike = jax.Array | np.ndarray


def kmeans(
    features: ArrayLike, *, num_clusters: int, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """k-means (``sklearn.cluster.KMeans``, k-means++ init) on L2-normalised features.

    Args:
      features: [N, D] features.
      num_clusters: number of clusters K.
      seed: random state of the initialisations.
      n_init: number of initialisations; the one with the lowest inertia wins.

    Returns:
      [N] int32 numpy cluster assignments in [0, K).
    """
    import sklearn.cluster  # here: importing it is 40% of `import jssl`'s time

    x = np.asarray(features, np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    km = sklearn.cluster.KMeans(n_clusters=num_clusters, n_init=n_init, random_state=seed)
    return km.fit_predict(x).astype(np.int32)


def _resolve_count(labels: ArrayLike, count: int | None, name: str) -> int:
    """Returns ``count``, or max(labels) + 1 on concrete labels; checks the range."""
    if isinstance(labels, jax.core.Tracer):
        if count is None:
            raise ValueError(f"Under jax.jit, pass {name}= explicitly: it fixes array shapes.")
        return count
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError(f"Labels must be non-negative integers; got min {labels.min()}.")
    if count is None:
        return int(labels.max()) + 1 if labels.size else 1
    if labels.size and labels.max() >= count:
        raise ValueError(f"Got label {labels.max()} but {name}={count}; labels must be < {name}.")
    return count


def contingency_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, *, num_classes: int, num_clusters: int
) -> jax.Array:
    """counts[i, j] = number of examples with y_pred == i and y_true == j.

    Args:
      y_true: [N] class labels in [0, num_classes).
      y_pred: [N] cluster labels in [0, num_clusters).

    Returns:
      [num_clusters, num_classes] int32 counts.
    """
    y_true = jnp.asarray(y_true, jnp.int32)
    y_pred = jnp.asarray(y_pred, jnp.int32)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise ValueError(
            f"Expected [N] labels of one shape, got {y_true.shape} and {y_pred.shape}."
        )
    counts = jnp.zeros((num_clusters, num_classes), jnp.int32)
    return counts.at[y_pred, y_true].add(1, mode="drop")


def _hungarian_matched(counts: np.ndarray) -> np.ndarray:
    """Host side: the largest total count over one-to-one cluster-to-class matchings."""
    import scipy.optimize  # here, as sklearn in ``kmeans``: a third of `import jssl`'s time

    rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
    return np.asarray(counts[rows, cols].sum(), np.int32)


@functools.partial(jax.jit, static_argnames=("num_classes", "num_clusters"))
def _cluster_accuracy(y_true, y_pred, *, num_classes, num_clusters):
    counts = contingency_matrix(y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters)
    matched = jax.pure_callback(
        _hungarian_matched,
        jax.ShapeDtypeStruct((), jnp.int32),
        counts,
        vmap_method="sequential",
    )
    return matched.astype(jnp.float32) / jnp.maximum(y_true.size, 1)


def cluster_accuracy(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    num_classes: int,
    num_clusters: int | None = None,
) -> jax.Array:
    """Clustering accuracy under the best one-to-one matching of clusters to classes.

    acc = max over injective maps m of (1/N) sum_n [m(y_pred_n) == y_true_n], solved
    with the Hungarian algorithm (scipy, via ``jax.pure_callback``, so usable
    under ``jax.jit`` and ``jax.vmap``). With more clusters than classes the
    unmatched clusters count as wrong; with fewer, some classes stay unmatched.

    Args:
      y_true: [N] class labels in [0, num_classes).
      y_pred: [N] cluster labels in [0, num_clusters).
      num_classes: number of classes.
      num_clusters: number of clusters; defaults to ``num_classes``.

    Returns:
      float32 scalar in [0, 1].
    """
    num_clusters = num_classes if num_clusters is None else num_clusters
    _resolve_count(y_true, num_classes, "num_classes")
    _resolve_count(y_pred, num_clusters, "num_clusters")
    return _cluster_accuracy(
        jnp.asarray(y_true), jnp.asarray(y_pred), num_classes=num_classes, num_clusters=num_clusters
    )


def cluster_accuracy_many_to_one(
    y_true: ArrayLike, y_pred: ArrayLike, *, num_classes: int, num_clusters: int
) -> jax.Array:
    """Accuracy when every cluster predicts its majority class (the over-clustering figure).

    acc = (1/N) sum_i max_j counts[i, j]; several clusters may map to one class.

    Args:
      y_true: [N] class labels in [0, num_classes).
      y_pred: [N] cluster labels in [0, num_clusters).
      num_classes: number of classes.
      num_clusters: number of clusters.

    Returns:
      float32 scalar in [0, 1].
    """
    _resolve_count(y_true, num_classes, "num_classes")
    _resolve_count(y_pred, num_clusters, "num_clusters")
    counts = contingency_matrix(y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters)
    n = jnp.maximum(jnp.size(y_true), 1)
    return jnp.sum(jnp.max(counts, axis=1)).astype(jnp.float32) / n


def _entropy(p: jax.Array) -> jax.Array:
    """-sum p log p over all entries, with 0 log 0 = 0."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


@functools.partial(jax.jit, static_argnames=("num_classes", "num_clusters"))
def _nmi(y_true, y_pred, *, num_classes, num_clusters):
    counts = contingency_matrix(
        y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters
    ).astype(jnp.float32)
    p = counts / jnp.maximum(counts.sum(), 1.0)  # joint [K, C]
    p_pred = p.sum(axis=1, keepdims=True)
    p_true = p.sum(axis=0, keepdims=True)
    safe = lambda x: jnp.where(x > 0, x, 1.0)
    mi = jnp.sum(jnp.where(p > 0, p * (jnp.log(safe(p)) - jnp.log(safe(p_pred * p_true))), 0.0))
    normalizer = 0.5 * (_entropy(p_true) + _entropy(p_pred))
    # Both labelings constant (zero entropy): a perfect match, 1.0, as sklearn.
    return jnp.where(normalizer > 0, jnp.maximum(mi, 0.0) / safe(normalizer), 1.0)


def nmi(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    num_classes: int | None = None,
    num_clusters: int | None = None,
) -> jax.Array:
    """Normalised mutual information with the arithmetic-mean normaliser.

    NMI = I(true; pred) / ((H(true) + H(pred)) / 2), as sklearn's
    ``normalized_mutual_info_score`` default; 1.0 when both labelings are constant.
    Computed in float32 (agrees with sklearn's float64 to about 1e-6).

    Args:
      y_true: [N] class labels.
      y_pred: [N] cluster labels.
      num_classes: number of classes; defaults to max(y_true) + 1 (required under jit).
      num_clusters: number of clusters; defaults to max(y_pred) + 1 (required under jit).

    Returns:
      float32 scalar in [0, 1].
    """
    num_classes = _resolve_count(y_true, num_classes, "num_classes")
    num_clusters = _resolve_count(y_pred, num_clusters, "num_clusters")
    return _nmi(
        jnp.asarray(y_true), jnp.asarray(y_pred), num_classes=num_classes, num_clusters=num_clusters
    )


@functools.partial(jax.jit, static_argnames=("num_classes", "num_clusters"))
def _ari(y_true, y_pred, *, num_classes, num_clusters):
    counts = contingency_matrix(
        y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters
    ).astype(jnp.float32)
    pairs = lambda x: x * (x - 1.0) / 2.0
    # Pair counts as fractions of all pairs, so float32 keeps its precision for large N.
    total = jnp.maximum(pairs(counts.sum()), 1.0)
    index = jnp.sum(pairs(counts)) / total
    a = jnp.sum(pairs(counts.sum(axis=1))) / total
    b = jnp.sum(pairs(counts.sum(axis=0))) / total
    expected = a * b
    denom = 0.5 * (a + b) - expected
    # denom == 0 only for identical labelings (both constant or both all-singletons).
    return jnp.where(denom != 0, (index - expected) / jnp.where(denom != 0, denom, 1.0), 1.0)


def ari(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    num_classes: int | None = None,
    num_clusters: int | None = None,
) -> jax.Array:
    """Adjusted Rand index (Hubert and Arabie), as sklearn's ``adjusted_rand_score``.

    ARI = (index - expected) / (max_index - expected), with index = sum_ij C(n_ij, 2),
    max_index = (sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2 and expected =
    sum_i C(a_i, 2) sum_j C(b_j, 2) / C(N, 2). Computed in float32.

    Args:
      y_true: [N] class labels.
      y_pred: [N] cluster labels.
      num_classes: number of classes; defaults to max(y_true) + 1 (required under jit).
      num_clusters: number of clusters; defaults to max(y_pred) + 1 (required under jit).

    Returns:
      float32 scalar in [-1, 1]; 1.0 for identical labelings up to renaming.
    """
    num_classes = _resolve_count(y_true, num_classes, "num_classes")
    num_clusters = _resolve_count(y_pred, num_clusters, "num_clusters")
    return _ari(
        jnp.asarray(y_true), jnp.asarray(y_pred), num_classes=num_classes, num_clusters=num_clusters
    )
