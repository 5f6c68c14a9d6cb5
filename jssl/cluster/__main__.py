"""``python -m jssl.cluster``: cluster frozen features without labels, then score and draw it.

    python -m jssl.features --workdir=W --split=train --out=train.npz
    python -m jssl.features --workdir=W --split=test --out=test.npz
    python -m jssl.cluster --features=train.npz --eval_features=test.npz --method=temi \\
        --k=10 --out=clusters/

Trains ``--method`` (kmeans, temi, turtle, scan, sela; ``--set name=value`` changes an
option, e.g. ``--set steps=500``) on the ``--features`` rows, never reading their labels,
then assigns the ``--eval_features`` rows (default: the same) and prints their ACC (Hungarian
when K equals the classes, many-to-one otherwise), NMI, ARI and AMI. Several files, comma
separated, are several representation spaces of the same images (TURTLE).

``--k=10,20,50`` sweeps K: each K is trained, scored by the label-free criteria on the
training rows (``jssl.cluster.select``), and the K that ``--criterion`` ranks first is the
answer; the labelled figures of every K are printed beside it, with the Spearman
correlation of each criterion with the Hungarian ACC over the sweep.

It also prints the RankMe of each training space (the effective number of directions it
uses, label-free: ``select.rankme``). ``--out`` gets assignments.npz (cluster, confidence
and probabilities of every evaluated row), metrics.json, and report.html with the matched
confusion matrix, the cluster sizes and each cluster's most confident images.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from jssl import cli


def _spaces(arg: str, what: str):
    from jssl import features
    from jssl.errors import UserError

    files = [features.load(p) for p in arg.split(",") if p]
    if not files:
        raise UserError(f"--{what}: give a feature file written by python -m jssl.features")
    first = files[0]
    for path, f in zip(arg.split(",")[1:], files[1:], strict=True):
        same = np.array_equal(f.indices, first.indices) and np.array_equal(f.labels, first.labels)
        if not same:
            raise UserError(
                f"--{what}: {path} holds other images than {arg.split(',')[0]} (another split "
                "or data set); give files of the same split, one per representation space"
            )
    return files


def _ks(text: str) -> list[int]:
    from jssl.errors import UserError

    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 2:
        raise UserError(f"--k={text}: give a number of clusters >= 2, or several: --k=10,20,50")
    return ks


def _overrides(pairs: list[str]) -> dict[str, str]:
    from jssl.errors import UserError

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--set {pair}: write name=value, e.g. --set steps=500")
        out[name.strip()] = value.strip()
    return out


def _line(method: str, k: int, num_classes: int, what: str, m: dict) -> str:
    from jssl.cluster.select import acc_kind

    kind = acc_kind(k, num_classes)
    return (
        f"{method} K={k} on {what}: ACC {m['acc']:.4f} ({kind}), NMI {m['nmi']:.4f}, "
        f"ARI {m['ari']:.4f}, AMI {m['ami']:.4f}"
    )


def run(
    train_arg: str,
    eval_arg: str | None,
    method: str,
    ks: list[int],
    *,
    out: str,
    seed: int = 0,
    overrides: dict[str, str] | None = None,
    criterion: str = "generalization",
    report: bool = True,
    log=print,
) -> dict:
    """Trains, scores and writes (see the module doc); returns the metrics.json content."""
    from jssl.cluster import methods, select
    from jssl.errors import UserError

    if criterion not in select.CRITERIA:
        raise UserError(f"--criterion={criterion}: use one of {', '.join(select.CRITERIA)}")
    opts = methods.options(method, overrides or {})
    train = _spaces(train_arg, "features")
    evals = _spaces(eval_arg, "eval_features") if eval_arg else train
    if len(evals) != len(train):
        raise UserError(
            f"--eval_features gives {len(evals)} spaces and --features {len(train)}; give one "
            "file per space in both, in the same order"
        )
    for f, g in zip(train, evals, strict=True):
        if f.features.shape[1] != g.features.shape[1]:
            raise UserError(
                f"--eval_features: {g.features.shape[1]}-dimensional features against "
                f"{f.features.shape[1]} for training; give files of the same network"
            )
    os.makedirs(out, exist_ok=True)
    ranks = [select.rankme(f.features, seed=seed) for f in train]
    log(
        "RankMe of the training features (label-free: the directions they use): "
        + ", ".join(f"{r:.1f} of {f.features.shape[1]}" for r, f in zip(ranks, train, strict=True))
    )
    num_classes = evals[0].num_classes
    what = f"{evals[0].meta['split']} ({len(evals[0].labels)} images)"
    rows, fitted = [], {}
    for k in ks:
        row, probs, fit = methods.fit_and_score(method, opts, train, evals, k, seed=seed)
        rows.append({"k": k, **row, "info": fit.info})
        fitted[k] = (probs, probs.argmax(-1))
        log(
            f"K={k}: " + ", ".join(f"{c} {row[c]:.4f}" for c in select.CRITERIA)
            + f" | ACC {row['acc']:.4f}, NMI {row['nmi']:.4f} ({row['seconds']:.1f} s)"
        )  # fmt: skip
    best = max(rows, key=lambda r: r[criterion])
    k = best["k"]
    probs, pred = fitted[k]
    result = {
        "method": method,
        "options": vars(opts),
        "seed": seed,
        "features": train_arg,
        "eval_features": eval_arg or train_arg,
        "num_classes": num_classes,
        "k": k,
        "criterion": criterion if len(ks) > 1 else None,
        "metrics": {
            n: best[n] for n in ("acc", "acc_hungarian", "acc_many_to_one", "nmi", "ari", "ami")
        },
        "criteria": {c: best[c] for c in select.CRITERIA},
        "rankme": ranks,
        "sweep": rows,
        "correlations": select.correlations(rows, target="acc_hungarian")
        if len(rows) > 1
        else None,
    }
    if len(ks) > 1:
        log(
            f"chosen K={k} by {criterion} (no labels); the data has {num_classes} classes; "
            "Spearman correlation with Hungarian ACC over the sweep: "
            + ", ".join(f"{c} {v:+.2f}" for c, v in result["correlations"].items())
        )  # fmt: skip
    log(_line(method, k, num_classes, what, result["metrics"]))
    np.savez(
        os.path.join(out, "assignments.npz"),
        cluster=pred.astype(np.int32),
        confidence=probs.max(axis=-1).astype(np.float32),
        probabilities=probs.astype(np.float32),
        indices=evals[0].indices,
    )
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    if report:
        result["report"] = _report(result, evals[0], pred, probs.max(axis=-1), out)
    return result


def _report(result: dict, ff, pred, confidence, out: str) -> str:
    """report.html beside the assignments: the clusters, and the sweep's table."""
    from jssl import features
    from jssl.report import html, pictures

    k, method = result["k"], result["method"]
    what = f"{method}, K={k}, seed {result['seed']}, trained on {result['features']}"
    sections = [
        pictures.cluster_section(
            pred,
            confidence,
            ff.labels,
            features.images(ff),
            num_clusters=k,
            class_names=ff.class_names,
            what=what,
            out=out,
            prefix="",
            split=ff.meta["split"],
        )  # fmt: skip
    ]
    if len(result["sweep"]) > 1:
        from jssl.cluster.select import CRITERIA

        header = ["K", *CRITERIA, "ACC", "NMI", "ARI"]
        rows = [
            [r["k"], *(r[c] for c in CRITERIA), r["acc"], r["nmi"], r["ari"]]
            for r in result["sweep"]
        ]
        body = html.table(header, rows) + (
            f'<p class="note">Chosen by {html.esc(result["criterion"])} (no labels): '
            f"K={k}; the data has {result['num_classes']} classes.</p>"
        )
        sections.append(html.Section("sweep", "The K sweep", body))
    page = html.page(f"jssl.cluster: {method}", sections, subtitle=what)
    return html.write(os.path.join(out, "report.html"), page)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 1 after one ``error:`` line for a user error."""
    from jssl.cluster import CRITERIA, METHODS

    parser = cli.ArgumentParser(
        prog="python -m jssl.cluster",
        description="Cluster frozen features (python -m jssl.features files) without labels.",
    )
    parser.add_argument(
        "--features", required=True, help="training feature file(s), comma separated"
    )
    parser.add_argument("--eval_features", default=None, help="the file(s) to assign and score")
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--k", required=True, help="clusters, or several to sweep: 10,20,50")
    parser.add_argument("--out", required=True, help="folder for assignments, metrics, report")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a method option"
    )
    parser.add_argument(
        "--criterion", default="generalization", choices=CRITERIA, help="picks K in a sweep"
    )
    parser.add_argument(
        "--no_report", action="store_true", help="skip report.html and its pictures"
    )
    parser.add_argument("--traceback", action="store_true", help="on an error, the traceback")
    args = parser.parse_args(argv)
    try:
        result = run(
            args.features, args.eval_features, args.method, _ks(args.k), out=args.out,
            seed=args.seed, overrides=_overrides(args.set), criterion=args.criterion,
            report=not args.no_report,
        )  # fmt: skip
    except cli.user_error_types() as e:
        if args.traceback:
            raise
        cli.print_error(e)
        return 1
    print(
        f"wrote {args.out}/metrics.json"
        + (f" and {result['report']}" if "report" in result else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
