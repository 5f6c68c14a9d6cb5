"""Clustering heads on frozen features, settings chosen on a validation split, test over seeds.

    python train.py --config=configs/simclr.py:digits --config.data.val_fraction=0.1 --workdir=W
    for s in train val test; do
        python -m jssl.features --workdir=W --split=$s --out=F/$s.npz
    done
    python benchmarks/cluster_heads.py --features=F --out=results.json

For every method of ``jssl.cluster``: each setting of its small grid (GRIDS) is trained on the
train rows with seed 0 and scored on the val rows (labels of the validation split, carved
from the training set, never of the test split); the setting of best val ACC is then trained
with seeds 0, 1, 2 and scored on the test rows (mean +- std). Then over-clustering
(K = 20, 50: many-to-one ACC, the setting chosen again on val for each K) and a label-free K
sweep of the method of best val ACC, with the correlation of each label-free criterion with
the labelled ACC over the sweep, and over every (method, setting) of the grids (label-free
model selection). ``--second=G`` (another run's files of the same images) adds TURTLE on each
space and on both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jssl import features  # noqa: E402
from jssl.cluster import methods, select  # noqa: E402

# The settings tried on the validation split; the first of each is the official default
# (TEMI's with linear heads: its 512-wide MLP heads take minutes a fit on a 2-core CPU).
GRIDS: dict[str, list[dict]] = {
    "kmeans": [{}],
    "scan": [
        {},
        {"learning_rate": 1e-3},
        {"learning_rate": 1e-2},
        {"learning_rate": 1e-2, "neighbours": 10},
    ],
    "sela": [{}, {"learning_rate": 1e-2}],
    "temi": [
        {"hidden": 0, "learning_rate": 1e-2},
        {"hidden": 0, "learning_rate": 1e-2, "teacher_momentum": 0.99},
        {"hidden": 0, "learning_rate": 1e-2, "teacher_momentum": 0.9},
        {"hidden": 0, "learning_rate": 1e-2, "teacher_momentum": 0.9, "neighbours": 20},
        {"hidden": 0, "learning_rate": 1e-2, "teacher_momentum": 0.9, "neighbours": 10},
    ],
    "turtle": [
        {"outer_steps": 2000},
        {"outer_steps": 2000, "standardize": True},
        {"outer_steps": 2000, "standardize": True, "inner_learning_rate": 1e-2},
    ],
}
SEEDS = (0, 1, 2)


def score(method, setting, train, held, k, seed):
    opts = methods.options(method, {n: str(v) for n, v in setting.items()})
    return methods.fit_and_score(method, opts, [train], [held], k, seed=seed)[0]


def choose_and_test(method, train, val, test, k) -> dict:
    """Every setting of the method's grid on the val rows (seed 0), then the setting of best
    val ACC on the test rows with each seed: {val, chosen, test, summary (mean, std)}."""
    tried = []
    for setting in GRIDS[method]:
        r = score(method, setting, train, val, k, 0)
        tried.append({"setting": setting, **r})
        print(f"{method} K={k} {setting}: val ACC {r['acc']:.4f} ({r['seconds']:.1f} s)")
    chosen = max(tried, key=lambda r: r["acc"])["setting"]
    runs = [score(method, chosen, train, test, k, s) for s in SEEDS]
    summary = {
        name: (float(np.mean([r[name] for r in runs])), float(np.std([r[name] for r in runs])))
        for name in ("acc", "nmi", "ari")
    }
    print(
        f"{method} K={k} {chosen}: test ACC {summary['acc'][0]:.4f} +- {summary['acc'][1]:.4f} "
        f"({select.acc_kind(k, test.num_classes)}), NMI {summary['nmi'][0]:.4f}, ARI "
        f"{summary['ari'][0]:.4f}",
        flush=True,
    )
    return {"val": tried, "chosen": chosen, "test": runs, "summary": summary}


def turtle_spaces(args, setting) -> dict:
    """TURTLE with the chosen setting on the first run's space, the second's, and both:
    test ACC over the seeds (the second run's files must hold the same images)."""
    opts = methods.options("turtle", {n: str(v) for n, v in setting.items()})
    first = [features.load(os.path.join(args.features, f"{s}.npz")) for s in ("train", "test")]
    second = [features.load(os.path.join(args.second, f"{s}.npz")) for s in ("train", "test")]
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(first, second, strict=True))
    out = {}
    for name, spaces in (("first", [first]), ("second", [second]), ("both", [first, second])):
        runs = []
        for seed in SEEDS:
            test = spaces[0][1]
            c = test.num_classes
            fit = methods.fit("turtle", [sp[0].features for sp in spaces], c, opts, seed=seed)
            pred = fit.predict([sp[1].features for sp in spaces]).argmax(-1)
            runs.append(select.metrics(test.labels, pred, num_classes=c, num_clusters=c))
        acc = [r["acc"] for r in runs]
        out[name] = {"runs": runs, "acc": (float(np.mean(acc)), float(np.std(acc)))}
        print(f"turtle on {name}: test ACC {np.mean(acc):.4f} +- {np.std(acc):.4f}", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="folder with train/val/test.npz")
    parser.add_argument("--out", required=True)
    parser.add_argument("--methods", default=",".join(GRIDS))
    parser.add_argument(
        "--second", default="", help="folder of a second run's train/val/test.npz: TURTLE on both"
    )
    args = parser.parse_args()
    load = lambda s: features.load(os.path.join(args.features, f"{s}.npz"))  # noqa: E731
    train, val, test = load("train"), load("val"), load("test")
    c = test.num_classes
    out = {"features": os.path.abspath(args.features), "meta": train.meta, "methods": {}}
    for method in args.methods.split(","):
        out["methods"][method] = choose_and_test(method, train, val, test, c)
    # Label-free model selection: over every (method, setting) tried on the validation split,
    # how each criterion ranks them against the validation ACC, and what it would pick.
    tried = [{"method": m, **r} for m, v in out["methods"].items() for r in v["val"]]
    picks = {n: max(tried, key=lambda r: r[n]) for n in select.CRITERIA}
    out["model_selection"] = {
        "correlations": select.correlations(tried),
        "picks": {n: {"method": r["method"], "setting": r["setting"], "val_acc": r["acc"]}
                  for n, r in picks.items()},
        "best_val_acc": max(r["acc"] for r in tried),
    }  # fmt: skip
    print(
        "model selection over the grid, Spearman with val ACC: "
        + ", ".join(f"{n} {v:+.2f}" for n, v in out["model_selection"]["correlations"].items())
    )
    for n, r in picks.items():
        print(f"  {n} picks {r['method']} {r['setting']}: val ACC {r['acc']:.4f}")
    # The method of best validation ACC (its chosen setting) over-clusters and sweeps K.
    best = max(out["methods"], key=lambda m: max(r["acc"] for r in out["methods"][m]["val"]))
    chosen = out["methods"][best]["chosen"]
    # Over-clustering: for each K, the method's grid again on the validation split (a setting
    # good for K = 10 may not be for 50), then the test rows over the seeds.
    over = {k: choose_and_test(best, train, val, test, k) for k in (20, 50)}
    out["overclustering"] = {"method": best, "by_k": over}
    sweep = [{"k": k, **score(best, chosen, train, val, k, 0)} for k in (5, 8, 10, 12, 15, 20)]
    corr = select.correlations(sweep, target="acc_hungarian")
    picks = {name: max(sweep, key=lambda r: r[name])["k"] for name in select.CRITERIA}
    out["k_sweep"] = {"method": best, "rows": sweep, "correlations": corr, "chosen_k": picks}
    print(f"K sweep on val ({best}): chosen K by criterion {picks}; true {c}", flush=True)
    print("Spearman with val Hungarian ACC: " + ", ".join(f"{n} {v:+.2f}" for n, v in corr.items()))
    if args.second and "turtle" in out["methods"]:
        out["turtle_spaces"] = turtle_spaces(args, out["methods"]["turtle"]["chosen"])
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
