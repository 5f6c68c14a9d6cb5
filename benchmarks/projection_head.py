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

from jssl.experiment import restore_run  # noqa: E402

METRICS = ("knn_top1", "linear_top1", "cluster_acc", "nmi", "ari")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a finished run")
    parser.add_argument("--name", default=None, help="results file tag (default: workdir name)")
    parser.add_argument("--out", default="", help="JSON path (default under benchmarks/results/)")
    args = parser.parse_args(argv)
    run = restore_run(args.workdir)
    exp, state = run.experiment, run.state
    rows = {}
    for rep, label in (("features", "h (before the head)"), ("output", "z (after the head)")):
        exp.config.eval.representation = rep  # read by the evaluators at every evaluation
        results = exp.evaluate(state)  # {name: Metric}
        rows[label] = {k: results[k].value for k in METRICS}
        print(f"{label:<22} " + "  ".join(f"{k} {rows[label][k]:.4f}" for k in METRICS), flush=True)
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
    path = args.out or os.path.join(ROOT, "benchmarks", "results", f"projection_head_{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    print(path)
    return out


if __name__ == "__main__":
    main()
