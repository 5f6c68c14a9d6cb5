"""SimCLR's projection-head finding: evaluate h (before the head) and z (after it) side by side.

    python -m benchmarks.projection_head --workdir runs/simclr_digits

Chen et al. (2020) found that the representation before the projection head,
h, is much better for downstream tasks than z = g(h), on which the contrastive
loss acts: the loss makes z invariant to the augmentations and throws away
information (colour, orientation) that h keeps. This restores the latest
checkpoint of a finished run of any method whose model output is a projection
(SimCLR, DINO's head) and runs the trainer's evaluation (kNN, linear probe,
k-means ACC / NMI / ARI on the test split) once on h
(``eval.representation=features``) and once on z (``output``). Writes a JSON
under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

from jssl.visualize import load_run  # noqa: E402

METRICS = ("knn_top1", "linear_top1", "cluster_acc", "nmi", "ari")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a finished run")
    parser.add_argument("--name", default=None, help="results file tag (default: workdir name)")
    args = parser.parse_args()
    exp, state = load_run(args.workdir)
    rows = {}
    for rep, label in (("features", "h (before the head)"), ("output", "z (after the head)")):
        exp.config.eval.representation = rep
        results = exp.evaluate(state)
        rows[label] = {k: results[k] for k in METRICS}
        print(f"{label:<22} " + "  ".join(f"{k} {results[k]:.4f}" for k in METRICS), flush=True)
    name = args.name or os.path.basename(os.path.normpath(args.workdir))
    out = {
        "command": f"python -m benchmarks.projection_head --workdir {args.workdir}",
        "method": exp.config.method,
        "data": exp.dataset.name,
        "step": int(jax.device_get(state.step)),
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "rows": rows,
    }
    path = os.path.join(ROOT, "benchmarks", "results", f"projection_head_{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    print(path)


if __name__ == "__main__":
    main()
