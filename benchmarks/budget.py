"""Accuracy under a wall-clock budget on the CIFAR-10 JPEG copy.

    python benchmarks/budget.py --method simclr --minutes 20

Trains for about ``--minutes`` of wall clock (the number of steps is set from
the throughput measured in a short warm-up, so the learning-rate schedule
ends with the budget; ``max_train_seconds`` stops it in any case), then
reports kNN top-1 (k=20, T=0.07), linear-probe top-1 and k-means clustering
ACC/NMI/ARI on the test split, beside the raw-pixel kNN floor computed in the
same run (45.8% on this copy). Writes a JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.throughput import load_config  # noqa: E402
from jssl import evaluation, trainer  # noqa: E402

DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")


def image_folder(path: str) -> str:
    """An image-folder root: ``path`` itself, or a .tar.gz unpacked once under the temp folder."""
    if os.path.isdir(path):
        return path
    if not os.path.exists(path):
        sys.exit(
            f"error: {path} not found; pass --data DIR (train/<class>/*.jpg, test/<class>/*.jpg)."
        )
    target = os.path.join(tempfile.gettempdir(), "jssl-" + os.path.basename(path).split(".")[0])
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        print(f"unpacking {path} -> {target}", flush=True)
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
        open(marker, "w").close()
    roots = [d for d in os.listdir(target) if os.path.isdir(os.path.join(target, d, "train"))]
    return os.path.join(target, roots[0]) if roots else target


def budget_config(method: str, data_path: str, batch_size: int) -> ml_collections.ConfigDict:
    config = load_config(f"configs/{method}.py:cifar10_folder")
    config.data.path = data_path
    config.batch_size = batch_size
    # A CPU-sized ResNet (one basic block per stage, width 16), as in PERF-NOTES.md.
    config.model.kwargs = ml_collections.ConfigDict(
        {"stem": "cifar", "width": 16, "stage_sizes": (1, 1, 1, 1)}
    )
    if method == "simclr":
        config.simclr.proj_hidden_dims = (128,)
        config.augment.scale = (0.2, 1.0)
    config.optim.warmup_epochs = 0.5
    config.eval.untrained = False
    config.log_every = 10
    config.checkpoint_every = 200
    return config


def raw_pixel_knn(dataset) -> float:
    def flat(split):
        x = split.images.reshape(len(split.images), -1).astype(np.float32) / 255.0
        return x

    train, test = flat(dataset.train), flat(dataset.test)
    mean = train.mean(0)
    return evaluation.knn_accuracy(
        train - mean, dataset.train.labels, test - mean, dataset.test.labels, num_classes=10
    )


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--method", default="simclr")
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--data", default=DEFAULT_ARCHIVE, help="image folder or .tar.gz of one")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--workdir", default="")
    p.add_argument("--max_eval_train", type=int, default=0, help="cap train features for eval")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)

    config = budget_config(args.method, image_folder(args.data), args.batch_size)
    config.eval.max_train_examples = args.max_eval_train
    exp = trainer.Experiment(config)
    state = exp.init_state()
    state, m = exp.train_step(state, exp.global_batch(0))  # compile
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for step in range(1, 6):
        state, m = exp.train_step(state, exp.global_batch(step))
    jax.block_until_ready(m)
    steps_per_sec = 5 / (time.perf_counter() - t0)
    budget_s = args.minutes * 60
    config.num_steps = max(10, int(budget_s * steps_per_sec))
    config.max_train_seconds = budget_s
    print(
        f"{steps_per_sec * config.batch_size:.0f} img/s in warm-up -> {config.num_steps} steps",
        flush=True,
    )

    workdir = args.workdir or tempfile.mkdtemp(prefix=f"jssl-budget-{args.method}-")
    t0 = time.perf_counter()
    out = trainer.train_and_evaluate(config, workdir, stop_at_step=None)
    train_eval_s = time.perf_counter() - t0
    if out["eval"] is None:  # stopped by the clock before num_steps: evaluate what we have
        out["eval"] = exp.evaluate(out["state"])
    steps = int(out["state"].step)
    result = {
        "method": args.method,
        "framework": "jax",
        "minutes_budget": args.minutes,
        "steps": steps,
        "epochs": steps / exp.steps_per_epoch,
        "batch_size": config.batch_size,
        "model": f"{config.model.name} {dict(config.model.kwargs)}",
        "train_and_eval_seconds": train_eval_s,
        **{k: v for k, v in out["eval"].items()},
        "raw_pixel_knn_top1": raw_pixel_knn(exp.dataset),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/budget.py " + " ".join(argv or sys.argv[1:]),
        "workdir": workdir,
    }
    print(json.dumps(result, indent=2, default=str))
    path = args.out or os.path.join(
        ROOT,
        "benchmarks",
        "results",
        f"budget_{args.method}_{args.minutes:g}min_{result['date']}.json",
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
