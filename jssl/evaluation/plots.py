"""Clustering diagnostics: cluster-size histograms and a matched confusion-matrix PNG (Pillow).

Pillow is already a dependency; matplotlib is not, so the PNG is drawn by hand.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

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
    cell: int = 0,
) -> np.ndarray:
    """Writes the Hungarian-matched confusion matrix as a PNG (Pillow) and returns it.

    Rows are true classes, columns clusters (matched cluster of class c in
    column c, then unmatched clusters); each cell's shade is its share of the
    row, and counts are printed when the cells are large enough.

    Args:
      path: output .png file (its folder is created).
      y_true: [N] class labels.
      y_pred: [N] cluster labels.
      num_classes: C.
      num_clusters: K.
      class_names: optional C row labels.
      title: optional caption drawn above the matrix.
      cell: cell size in pixels; 0 picks one from the matrix size.

    Returns:
      The [C, K] matrix that was drawn.
    """
    from PIL import Image, ImageDraw, ImageFont

    matrix, order = matched_confusion_matrix(
        y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters
    )
    c, k = matrix.shape
    cell = cell or int(np.clip(600 // max(c, k), 4, 40))
    font = ImageFont.load_default()
    names = [str(n) for n in (class_names or range(c))]
    show_text = cell >= 24
    label_w = (max(len(n) for n in names) * 7 + 10) if show_text else 10
    top = 24 + (16 if title else 0) if show_text else 10
    width, height = label_w + k * cell + 10, top + c * cell + 10
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    if title and show_text:
        draw.text((4, 2), title, fill="black", font=font)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(c):
        y = top + i * cell
        if show_text:
            draw.text((4, y + cell // 2 - 6), names[i], fill="black", font=font)
        for j in range(k):
            x = label_w + j * cell
            shade = int(255 * (1.0 - shares[i, j]))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255))
            if show_text and matrix[i, j]:
                colour = "white" if shares[i, j] > 0.5 else "black"
                draw.text((x + 2, y + cell // 2 - 6), str(matrix[i, j]), fill=colour, font=font)
    if show_text:
        for j in range(k):
            draw.text((label_w + j * cell + 2, top - 14), str(order[j]), fill="gray", font=font)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    image.save(tmp)
    os.replace(tmp, path)
    return matrix
