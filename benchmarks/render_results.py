"""The budget table and kNN-against-minutes plot of docs/results.md, from budget_*.json.

    python benchmarks/render_results.py            # table to stdout, docs/images/budget_knn.svg

Reads every ``budget_*.json`` written by benchmarks/budget.py (jssl and the
PyTorch reference), prints a markdown table (one row per run) and writes an
plot (matplotlib, SVG or PNG by the file's extension) of kNN top-1 against
wall-clock training minutes: one line per run for its curve (kNN on the fixed
10k-train / 2k-test subset, circles) and a square for its final figure (kNN on
the full splits, as in the table). A run without a curve (written before
budget.py recorded one) is its square alone.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_RESULTS = os.path.join(ROOT, "benchmarks", "results")
DEFAULT_SVG = os.path.join(ROOT, "docs", "images", "budget_knn.svg")
FRAMEWORK_NAMES = {"jax": "jssl", "jssl": "jssl", "torch": "PyTorch"}
# Blues for jssl, oranges for PyTorch; runs of one framework cycle through its shades.
COLOURS = {
    "jssl": ("#1f5fbf", "#4a90e2", "#0b3c7a", "#7fb3f0"),
    "PyTorch": ("#d9661f", "#f2a03d", "#8f3b0b", "#f5c48a"),
}
DASHES = ("-", (0, (6, 3)), (0, (2, 3)), (0, (8, 3, 2, 3)))  # matplotlib line styles


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


def shown_command(run: dict) -> str:
    """The run's command as a reader reruns it: ``--data`` left out when it names the default
    CIFAR-10 archive, and an absolute ``--workdir`` in the temporary folder (a scratch
    folder: it changes no result) left out."""
    words, out = run.get("command", "").split(), []
    default = os.path.realpath(
        os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")
    )
    scratch = os.path.realpath(tempfile.gettempdir()) + os.sep
    i = 0
    while i < len(words):
        flag, value = words[i], words[i + 1] if i + 1 < len(words) else ""
        if (flag == "--data" and os.path.realpath(value) == default) or (
            flag == "--workdir"
            and os.path.isabs(value)
            and os.path.realpath(value).startswith(scratch)
        ):
            i += 2
            continue
        out.append(flag)
        i += 1
    return " ".join(out)


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
                    f"`{shown_command(r)}`",
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


def plot(runs: list[dict]):
    """A matplotlib figure of kNN top-1 (%) against training minutes: a line per run's curve
    (circles), a square per run's final figure, the raw-pixel floor dashed."""
    from jssl import plotting

    series = [(r, curve(r), final_point(r)) for r in runs]
    series = [(r, pts, fin) for r, pts, fin in series if pts or fin]
    floors = [100 * r["raw_pixel_knn_top1"] for r in runs if "raw_pixel_knn_top1" in r]
    fig = plotting.Figure(figsize=(8.0, 4.5 + 0.2 * len(series)), layout="constrained")
    ax = fig.subplots()
    seen: dict[str, int] = {}
    for run, pts, fin in series:
        fw = framework(run)
        k = seen[fw] = seen.get(fw, -1) + 1
        shades = COLOURS.get(fw, ("#444", "#888"))
        colour, dash = shades[k % len(shades)], DASHES[k % len(DASHES)]
        parts = [f"final {fin[1]:.1f}% at {fin[0]:.1f} min" if fin else ""]
        if pts:
            parts.append(f"subset {pts[-1][1]:.1f}%")
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=colour, linestyle=dash, marker="o", markersize=4, linewidth=2)
        text = f"{label(run)} ({str(run.get('date', ''))[:10]}): " + ", ".join(
            p for p in parts if p
        )
        if fin:
            ax.plot(*fin, marker="s", markersize=8, markerfacecolor="white", color=colour)
        # The legend entry: line style and square of the run.
        proxy = dict(color=colour, linestyle=dash, marker="s", markerfacecolor="white")
        ax.plot([], [], label=text, **proxy)
    if floors:
        floor = sum(floors) / len(floors)
        ax.axhline(floor, color="#777", linestyle=(0, (4, 4)), linewidth=1)
        ax.text(
            0.01,
            floor,
            f" raw pixels {floor:.1f}%",
            transform=ax.get_yaxis_transform(),
            va="bottom",
            color="#555",
            fontsize=9,
        )
    ax.set_xlim(left=0)
    ax.set_xlabel("wall-clock training minutes")
    ax.set_ylabel("kNN top-1 (%)")
    ax.grid(alpha=0.3)
    ax.set_title(
        "kNN top-1 on CIFAR-10 (JPEG copy) against wall-clock training minutes\n"
        "lines and circles: kNN on a fixed 10k train / 2k test subset during the run; "
        "squares: final kNN on the full splits",
        fontsize=9,
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), fontsize=8, frameon=False)
    return fig


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=DEFAULT_RESULTS, help="folder of budget_*.json")
    p.add_argument(
        "--svg", default=DEFAULT_SVG, help="plot path, .svg or .png by its extension ('' for none)"
    )
    args = p.parse_args(argv)
    runs = load_runs(args.results)
    if not runs:
        sys.exit(f"error: no budget_*.json in {args.results}")
    text = table(runs)
    print(text)
    if args.svg:
        from jssl import plotting

        plotting.save(plot(runs), args.svg)
        print(f"\nwrote {args.svg}", file=sys.stderr)
    return text


if __name__ == "__main__":
    main()
