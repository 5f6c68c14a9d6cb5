"""The README's budget table and kNN-against-minutes plot, from benchmarks/results/budget_*.json.

    python benchmarks/render_results.py            # table to stdout, docs/images/budget_knn.svg

Reads every ``budget_*.json`` written by benchmarks/budget.py (jssl and the
PyTorch reference), prints a markdown table (one row per run) and writes an
SVG plot of kNN top-1 against wall-clock training minutes: one line per run
for its curve (kNN on the fixed 10k-train / 2k-test subset, circles) and a
square for its final figure (kNN on the full splits, as in the table). A run
without a curve (written before budget.py recorded one) is its square alone.
The SVG is written by hand: no plotting dependency.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from xml.sax.saxutils import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RESULTS = os.path.join(ROOT, "benchmarks", "results")
DEFAULT_SVG = os.path.join(ROOT, "docs", "images", "budget_knn.svg")
FRAMEWORK_NAMES = {"jax": "jssl", "jssl": "jssl", "torch": "PyTorch"}
# Blues for jssl, oranges for PyTorch; runs of one framework cycle through its shades.
COLOURS = {
    "jssl": ("#1f5fbf", "#4a90e2", "#0b3c7a", "#7fb3f0"),
    "PyTorch": ("#d9661f", "#f2a03d", "#8f3b0b", "#f5c48a"),
}
DASHES = ("", "6 3", "2 3", "8 3 2 3")


def load_runs(results_dir: str) -> list[dict]:
    runs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "budget_*.json"))):
        with open(path) as f:
            run = json.load(f)
        run["_file"] = os.path.basename(path)
        runs.append(run)
    return sorted(
        runs, key=lambda r: (r.get("minutes_budget", 0), framework(r) != "jssl", r.get("date", ""))
    )


def framework(run: dict) -> str:
    name = run.get("framework", "jssl")
    return FRAMEWORK_NAMES.get(name, name)


def final_minutes(run: dict) -> float:
    """Minutes trained: measured, or the budget for results that did not record it."""
    if run.get("train_seconds") is not None:
        return run["train_seconds"] / 60
    return float(run.get("minutes_budget", 0.0))


def curve(run: dict) -> list[tuple[float, float]]:
    """(minutes, subset kNN top-1 in %) points of the run's curve; [] for a run without one."""
    return sorted((p["minutes"], 100 * p["knn_top1"]) for p in run.get("curve") or [])


def final_point(run: dict) -> tuple[float, float] | None:
    """(minutes trained, full-split kNN top-1 in %): the run's final figure."""
    if run.get("knn_top1") is None:
        return None
    return final_minutes(run), 100 * run["knn_top1"]


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _load(run: dict) -> str:
    """1-min load average before -> after training, and the cores other processes took."""
    before, after = run.get("loadavg_1_5_15_before"), run.get("loadavg_1_5_15_after")
    text = f"{before[0]:.1f} → {after[0]:.1f}" if before and after else "–"
    cpu = run.get("cpu_during_train")
    if cpu:
        text += f" (others {cpu['others_cores']:.2f} cores)"
    return text


def label(run: dict) -> str:
    return f"{framework(run)} {run.get('method', '?')}, {run.get('minutes_budget', 0):g} min"


def table(runs: list[dict]) -> str:
    head = (
        "| framework | method | minutes | steps | epochs | kNN | linear | k-means ACC "
        "| load | date | command |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in runs:
        epochs = r.get("epochs")
        cluster = "–" if r.get("cluster_acc") is None else f"{r['cluster_acc']:.3f}"
        if r.get("head_acc") is not None:  # clustering methods: their own head, Hungarian-matched
            cluster += f" (head {r['head_acc']:.3f})"
        lines.append(
            "| "
            + " | ".join(
                [
                    framework(r),
                    r.get("method", "?"),
                    f"{r.get('minutes_budget', 0):g}"
                    + (f" (trained {final_minutes(r):.1f})" if "train_seconds" in r else ""),
                    str(r.get("steps", "–")),
                    "–" if epochs is None else f"{epochs:.2f}",
                    _pct(r.get("knn_top1")),
                    _pct(r.get("linear_top1")),
                    cluster,
                    _load(r),
                    str(r.get("date", "–"))[:10],
                    f"`{r.get('command', '')}`",
                ]
            )
            + " |"
        )
    floors = sorted(
        {round(100 * r["raw_pixel_knn_top1"], 1) for r in runs if "raw_pixel_knn_top1" in r}
    )
    if floors:
        lines.append("")
        lines.append(
            "Raw-pixel kNN floor (same kNN on centred pixels, measured in each run): "
            + ", ".join(f"{v:.1f}%" for v in floors)
            + "."
        )
    kmeans = [r["raw_pixel_kmeans_test"] for r in runs if "raw_pixel_kmeans_test" in r]
    if kmeans:
        k = kmeans[-1]
        lines.append(
            f"Raw-pixel k-means floor (test split, Hungarian-matched): ACC {k['acc']:.3f}, "
            f"NMI {k['nmi']:.3f}, ARI {k['ari']:.3f}."
        )
    return "\n".join(lines)


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = max(span, 1e-9) / ticks
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _ticks(lo: float, hi: float) -> tuple[float, float, list[float]]:
    step = _nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    if hi <= lo:
        hi = lo + step
    n = int(round((hi - lo) / step))
    return lo, hi, [lo + i * step for i in range(n + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) > 1e-9 else str(int(round(v)))


def _square(x: float, y: float, colour: str, r: float = 4.5) -> str:
    return (
        f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" '
        f'fill="white" stroke="{colour}" stroke-width="2"/>'
    )


def svg(runs: list[dict], width: int = 720, height: int = 420) -> str:
    """An SVG plot of kNN top-1 (%) against training minutes: a polyline per run's curve."""
    series = [(r, curve(r), final_point(r)) for r in runs]
    series = [(r, pts, fin) for r, pts, fin in series if pts or fin]
    floors = [100 * r["raw_pixel_knn_top1"] for r in runs if "raw_pixel_knn_top1" in r]
    floor = sum(floors) / len(floors) if floors else None
    every = [xy for _, pts, fin in series for xy in pts + ([fin] if fin else [])]
    xs = [x for x, _ in every] or [0.0, 1.0]
    ys = [y for _, y in every] + ([floor] if floor is not None else [])
    ys = ys or [0.0, 100.0]
    x_lo, x_hi, x_ticks = _ticks(0.0, max(max(xs), 1e-3))
    y_lo, y_hi, y_ticks = _ticks(max(0.0, min(ys) - 2), min(100.0, max(ys) + 2))

    left, right, top, bottom = 60, 20, 40, 50
    legend_h = 18 * len(series)
    plot_w, plot_h = width - left - right, height - top - bottom
    total_h = height + legend_h + 10

    def px(x):
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y):
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" '
        f'viewBox="0 0 {width} {total_h}" font-family="sans-serif" font-size="12">',
        f'<rect x="0" y="0" width="{width}" height="{total_h}" fill="white"/>',
        f'<text x="{width / 2:.0f}" y="22" text-anchor="middle" font-size="14">'
        "kNN top-1 on CIFAR-10 (JPEG copy) against wall-clock training minutes</text>",
        f'<text x="{width / 2:.0f}" y="{top - 6}" text-anchor="middle" font-size="11" '
        'fill="#555">lines and circles: kNN on a fixed 10k train / 2k test subset during the '
        "run; squares: final kNN on the full splits</text>",
    ]
    for t in y_ticks:
        y = py(t)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}%</text>')
    for t in x_ticks:
        x = px(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{top + plot_h}" x2="{x:.1f}" y2="{top + plot_h + 5}" '
            'stroke="black"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">{_fmt(t)}</text>'
        )
    out += [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="black"/>',
        f'<text x="{left + plot_w / 2:.0f}" y="{top + plot_h + 36}" text-anchor="middle">'
        "wall-clock training minutes</text>",
        f'<text x="16" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2:.0f})">kNN top-1</text>',
    ]
    if floor is not None:
        y = py(floor)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#777" '
            'stroke-dasharray="4 4"/>'
        )
        out.append(
            f'<text x="{left + 4}" y="{y - 4:.1f}" fill="#555">raw pixels {floor:.1f}%</text>'
        )
    seen: dict[str, int] = {}
    for i, (run, pts, fin) in enumerate(series):
        fw = framework(run)
        k = seen[fw] = seen.get(fw, -1) + 1
        colour = COLOURS.get(fw, ("#444", "#888"))[k % len(COLOURS.get(fw, ("#444", "#888")))]
        dash = DASHES[k % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        if pts:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"'
                f"{dash_attr}/>"
            )
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        if fin:
            out.append(_square(px(fin[0]), py(fin[1]), colour))
        ly = height + 4 + 18 * i
        if pts:
            out.append(
                f'<line x1="{left}" y1="{ly:.0f}" x2="{left + 28}" y2="{ly:.0f}" '
                f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
            )
        out.append(_square(left + 14, ly, colour))
        parts = [f"final {fin[1]:.1f}% at {fin[0]:.1f} min" if fin else ""]
        if pts:
            parts.append(f"subset {pts[-1][1]:.1f}%")
        text = f"{label(run)} ({str(run.get('date', ''))[:10]}): " + ", ".join(
            p for p in parts if p
        )
        out.append(f'<text x="{left + 36}" y="{ly + 4:.0f}">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=DEFAULT_RESULTS, help="folder of budget_*.json")
    p.add_argument("--svg", default=DEFAULT_SVG, help="plot path ('' for none)")
    args = p.parse_args(argv)
    runs = load_runs(args.results)
    if not runs:
        sys.exit(f"error: no budget_*.json in {args.results}")
    text = table(runs)
    print(text)
    if args.svg:
        os.makedirs(os.path.dirname(os.path.abspath(args.svg)), exist_ok=True)
        with open(args.svg, "w") as f:
            f.write(svg(runs))
        print(f"\nwrote {args.svg}", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
