"""Clustering diagnostics: cluster-size histograms and a matched confusion-matrix PNG."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jssl.evaluation.clustering import contingency_matrix

__all__ = [
    "cluster_size_summary",
    "cluster_sizes",
    "histogram_text",
    "matched_confusion_matrix",
    "save_confusion_matrix",
]


def cluster_sizes(y_pred: jax.Array | np.ndarray, *, num_clusters: int) -> jax.Array:
    """Examples per cluster: [N] int labels in [0, K) -> [K] int32 counts. Jittable."""
    y_pred = jnp.asarray(y_pred, jnp.int32)
    return jnp.zeros((num_clusters,), jnp.int32).at[y_pred].add(1, mode="drop")


def cluster_size_summary(counts: np.ndarray | jax.Array) -> dict[str, float]:
    """Collapse indicators of a cluster-size histogram [K].

    Returns:
      {'largest_share': share of the biggest cluster (1/K when balanced, 1 when
      collapsed), 'smallest_share', 'empty_clusters': clusters with no example,
      'effective_clusters': exp(entropy of the size distribution), K when balanced}.
    """
    counts = np.asarray(counts, np.float64)
    p = counts / max(counts.sum(), 1.0)
    nz = p[p > 0]
    return {
        "largest_share": float(p.max()) if p.size else 0.0,
        "smallest_share": float(p.min()) if p.size else 0.0,
        "empty_clusters": int(np.sum(counts == 0)),
        "effective_clusters": float(np.exp(-np.sum(nz * np.log(nz)))),
    }


def histogram_text(counts: np.ndarray | jax.Array, *, width: int = 40, max_rows: int = 50) -> str:
    """One text line per cluster, largest first: 'cluster   7   183 ( 12.7%) ########'."""
    counts = np.asarray(counts)
    total = max(int(counts.sum()), 1)
    order = np.argsort(-counts, kind="stable")
    peak = max(int(counts.max()) if counts.size else 1, 1)
    lines = []
    for i in order[:max_rows]:
        bar = "#" * int(round(width * counts[i] / peak))
        lines.append(f"cluster {i:>4} {counts[i]:>7} ({100 * counts[i] / total:5.1f}%) {bar}")
    if len(order) > max_rows:
        lines.append(f"... {len(order) - max_rows} smaller clusters")
    return "\n".join(lines)


def matched_confusion_matrix(
    y_true, y_pred, *, num_classes: int, num_clusters: int
) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrix with clusters reordered by the Hungarian matching.

    Returns:
      (matrix [num_classes, num_clusters] int64 with matrix[c, j] = examples of
      class c in the j-th reordered cluster, cluster_order [num_clusters]: the
      original cluster id of each column). Column c < min(C, K) holds the cluster
      matched to class c, so a perfect clustering is diagonal; unmatched clusters
      follow, largest first.
    """
    counts = np.asarray(
        contingency_matrix(y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters)
    ).T  # [C, K]
    import scipy.optimize  # here, as in clustering._hungarian_matched

    rows, cols = scipy.optimize.linear_sum_assignment(counts, maximize=True)
    matched = dict(zip(rows.tolist(), cols.tolist(), strict=True))
    order = [matched[c] for c in range(num_classes) if c in matched]
    used = set(order)
    rest = [j for j in np.argsort(-counts.sum(axis=0), kind="stable") if j not in used]
    order = np.asarray(order + rest, np.int64)
    return counts[:, order].astype(np.int64), order


def save_confusion_matrix(
    path: str,
    y_true,
    y_pred,
    *,
    num_classes: int,
    num_clusters: int,
    class_names: tuple[str, ...] | None = None,
    title: str = "",
) -> np.ndarray:
    """Writes the Hungarian-matched confusion matrix as a PNG (matplotlib) and returns it.

    Rows are true classes, columns clusters (matched cluster of class c in
    column c, then unmatched clusters, labelled with their cluster ids); each
    cell's shade is its share of the row, and counts are printed when the matrix
    is small enough to read them.

    Args:
      path: output .png file (its folder is created).
      y_true: [N] class labels.
      y_pred: [N] cluster labels.
      num_classes: C.
      num_clusters: K.
      class_names: optional C row labels.
      title: optional caption above the matrix.

    Returns:
      The [C, K] matrix that was drawn.
    """
    from jssl import plotting  # matplotlib: loaded when a picture is drawn

    matrix, order = matched_confusion_matrix(
        y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters
    )
    names = [str(n) for n in (class_names or range(num_classes))]
    fig = plotting.confusion_matrix_figure(
        matrix, row_names=names, col_names=[str(j) for j in order], title=title
    )
    plotting.save(fig, path)
    return matrix
