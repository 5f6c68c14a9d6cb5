"""matplotlib drawing shared by the report, the picture commands and the benchmarks.

Headless: the Agg backend, figures created with ``matplotlib.figure.Figure`` (no
pyplot state, nothing shown) and written atomically by ``save``. Nothing here
knows about runs; callers pass arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib: no display is ever needed

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "Figure",
    "colorize",
    "confusion_matrix_figure",
    "curves_figure",
    "image_grid_figure",
    "save",
    "scatter_figure",
    "sizes_figure",
    "to_rgb",
]

GOOD, BAD = "#1a9641", "#d7191c"  # frames of a retrieved image: same label / another label


def save(fig: Figure, path: str, *, dpi: int = 100) -> str:
    """Writes ``fig`` to ``path`` (PNG, or SVG/PDF by the extension) atomically; returns path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{os.getpid()}{ext}"  # writers of the same picture never share it
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight", facecolor="white")
    os.replace(tmp, path)
    return path


def to_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 or float [H, W, C] (C = 1 or 3) -> float [H, W, 3] in [0, 1] for ``imshow``.

    Floats already in [0, 1] are kept; other floats (normalised or noisy views)
    are min-max scaled per image.
    """
    x = np.asarray(image)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    if x.ndim == 2:
        x = x[..., None]
    if x.min() < 0.0 or x.max() > 1.0:
        lo, hi = float(x.min()), float(x.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x[..., :3]


def colorize(m: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """[h, w] -> uint8 [h, w, 3] through a matplotlib colormap, after min-max scaling."""
    m = np.asarray(m, np.float32)
    lo, hi = float(m.min()), float(m.max())
    t = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    return np.rint(matplotlib.colormaps[cmap](t)[..., :3] * 255).astype(np.uint8)


def image_grid_figure(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    frames: Sequence[Sequence[str | None]] | None = None,
    cell: float = 1.0,
    title: str = "",
) -> Figure:
    """A grid of images: ``rows[r][c]`` is an [H, W, C] image (rows may differ in length and
    image size); ``frames[r][c]`` a colour for a thick frame around that cell (or None)."""
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    fig = Figure(figsize=(cell * n_cols + (1.2 if row_titles else 0.2), cell * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(rows[r]):
                ax.axis("off")
                continue
            ax.imshow(to_rgb(rows[r][c]), interpolation="nearest")
            colour = frames[r][c] if frames is not None and c < len(frames[r]) else None
            for spine in ax.spines.values():
                spine.set_visible(colour is not None)
                if colour is not None:
                    spine.set_edgecolor(colour)
                    spine.set_linewidth(3)
            if row_titles is not None and c == 0:
                ax.set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
            if col_titles is not None and r == 0 and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def curves_figure(
    panels: Sequence[tuple[str, Sequence[tuple[str, np.ndarray, np.ndarray]]]],
    *,
    cols: int = 3,
    panel_size: tuple[float, float] = (4.0, 2.8),
    colors: dict[str, str] | None = None,
    legend: bool = False,
) -> Figure:
    """One axes per panel ``(title, [(legend label, steps [n], values [n]), ...])``; several
    series in a panel are overlaid (runs compared), each with its own colour: ``colors``
    (label -> colour) keeps a label's colour the same in every panel. Panels with several
    series have a legend, and with ``legend`` every panel has one."""
    n = len(panels)
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, series) in zip(axes, panels, strict=False):
        for label, x, y in series:
            marker = "o" if len(x) <= 20 else None
            color = (colors or {}).get(label)
            ax.plot(x, y, label=label, marker=marker, markersize=3, linewidth=1.5, color=color)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if legend or len(series) > 1:
            ax.legend(fontsize=7)
    for ax in axes[n:]:
        ax.axis("off")
    return fig


def scatter_figure(
    points: np.ndarray, labels: np.ndarray, *, class_names: Sequence[str], title: str = ""
) -> Figure:
    """2-D points [N, 2] coloured by class label [N], with a legend of the class names."""
    fig = Figure(figsize=(6.0, 5.0), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            ax.scatter(*points[mask].T, s=8, color=cmap(c % cmap.N), label=str(name), alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    if len(class_names) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def confusion_matrix_figure(
    matrix: np.ndarray,
    *,
    row_names: Sequence[str],
    col_names: Sequence[str],
    title: str = "",
    xlabel: str = "cluster (matched to the row's class first)",
) -> Figure:
    """A [C, K] count matrix shaded by each cell's share of its row; counts printed when
    the matrix is small enough to read them."""
    c, k = matrix.shape
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = float(np.clip(0.45 * max(c, k), 3.0, 12.0))
    fig = Figure(figsize=(side * k / max(c, k) + 1.5, side * c / max(c, k) + 1.0))
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    if max(c, k) <= 30:
        for i in range(c):
            for j in range(k):
                if matrix[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=7
                    )
        ax.set_xticks(range(k), [str(n) for n in col_names], fontsize=7)
        ax.set_yticks(range(c), [str(n) for n in row_names], fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("class", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def sizes_figure(sizes: np.ndarray, *, names: Sequence[str], title: str = "") -> Figure:
    """A bar per cluster of its number of examples, with the balanced size as a line."""
    fig = Figure(figsize=(min(12.0, 1.5 + 0.35 * len(sizes)), 2.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(sizes)), sizes, color="#4a90e2")
    ax.axhline(sizes.sum() / max(len(sizes), 1), color="#777", linestyle="--", linewidth=1)
    if len(sizes) <= 30:
        ax.set_xticks(range(len(sizes)), [str(n) for n in names], fontsize=7)
    ax.set_xlabel("cluster", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig
