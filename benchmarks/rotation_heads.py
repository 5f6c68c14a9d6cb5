"""The GAP trap: rotation prediction with a spatial, an attention-pooling and a GAP head.

    python -m benchmarks.rotation_heads [--preset digits] [--heads spatial,gap,attention]
        [--workdir-root runs/rotation_heads]

Trains ``configs/rotation.py:PRESET`` once per head with everything else equal
(same seed, budget, data order), or reuses a finished run in
``WORKDIR_ROOT/<head>``, then reports for each head the rotation accuracy on
the *test* images (all four rotations of each, whole images, no augmentation)
and the trainer's evaluation of the backbone's pooled features (kNN k=20
T=0.07, linear probe, k-means ACC). Writes a JSON under benchmarks/results/.
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from configs import rotation as rotation_config  # noqa: E402
from jssl import evaluation, pretext, trainer  # noqa: E402


def rotation_hits(model, variables, x) -> jax.Array:
    """[b, 4]: 1 where the head names the rotation (0, 90, 180, 270 degrees) of each view.

    A ``Predictor`` selector: ``x`` is the eval view of a batch (resize + centre crop).
    """
    rotated, labels = pretext.all_rotations(x)  # example-major: row 4i + k
    logits, _ = model.apply(variables, rotated, train=False)
    return (jnp.argmax(logits, -1) == labels).reshape(x.shape[0], 4)


def heldout_rotation_accuracy(exp: trainer.Experiment, state) -> float:
    """Rotation accuracy over all four rotations of every test image."""
    variables = evaluation.model_variables(state.params, state.batch_stats)
    hits = exp.predict(variables, exp.dataset.test, rotation_hits)
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="digits")
    parser.add_argument("--heads", default="spatial,gap,attention")
    parser.add_argument("--workdir-root", default=os.path.join(ROOT, "runs", "rotation_heads"))
    args = parser.parse_args()
    rows = []
    for head in args.heads.split(","):
        config = rotation_config.get_config(args.preset)
        config.rotation.head = head
        workdir = os.path.join(args.workdir_root, head)
        out = trainer.train_and_evaluate(config, workdir, show_progress=False)
        exp = trainer.Experiment(config)
        rot = heldout_rotation_accuracy(exp, out["state"])
        rows.append({"head": head, "test_rotation_acc": rot, **out["eval"]})
    print(f"{'head':<10} {'test rot acc':>12} {'kNN':>7} {'linear':>7} {'k-means':>8}")
    for r in rows:
        print(
            f"{r['head']:<10} {r['test_rotation_acc']:>12.4f} {r['knn_top1']:>7.4f} "
            f"{r['linear_top1']:>7.4f} {r['cluster_acc']:>8.4f}"
        )
    os.makedirs(os.path.join(ROOT, "benchmarks", "results"), exist_ok=True)
    stamp = datetime.date.today().isoformat()
    path = os.path.join(ROOT, "benchmarks", "results", f"rotation_heads_{args.preset}_{stamp}.json")
    with open(path, "w") as f:
        json.dump({"preset": args.preset, "jax": jax.__version__, "rows": rows}, f, indent=2)
    print(path)


if __name__ == "__main__":
    main()
