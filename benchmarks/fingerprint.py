"""Every method's state after a few real train steps, to prove a refactor changed no result.

    python -m benchmarks.fingerprint --out before.npz          # on the old code
    python -m benchmarks.fingerprint --compare before.npz      # on the new code

For every registered method with a ``digits,smoke`` preset that trains from scratch
(SCAN and self-labelling start from another run and are left out), this builds the
run as ``train.py`` does (``jssl.experiment.Experiment``: the digits data, the model,
the optimiser, the compiled step), applies ``--steps`` updates and records every leaf
of the TrainState and the last step's metrics. ``--compare`` reads a file written
before and reports, per method, the leaves that are not bit-identical. Leaves are
recorded under the names of the oldest checkpoints (``Method.renamed`` undone), so
files written before and after a rename compare leaf by leaf.

A renamed parameter is initialised from another random key (flax derives each
parameter's key from its path), so a renamed method's fresh runs differ; for those,
``--start_from before.npz`` starts from the initial state recorded in that file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jssl import checkpoint, methods  # noqa: E402
from jssl.experiment import Experiment  # noqa: E402

FROM_ANOTHER_RUN = ("scan", "selflabel")  # their smoke presets start from a pretext run
TINY = {"augment.crop_size": 8, "model.kwargs.widths": (8, 16), "eval.untrained": False}


def _set(config, path: str, value) -> None:
    *head, last = path.split(".")
    node = config
    for p in head:
        node = node[p]
    node[last] = value


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {f"{prefix}{jax.tree_util.keystr(p)}": np.asarray(jax.device_get(v)) for p, v in leaves}


def _old_names(exp, state):
    rename = getattr(checkpoint, "rename", None)  # absent from code older than the renames
    return rename(state, checkpoint.inverse(exp.renamed)) if rename else state


def _start_from(exp, state, name: str, recorded: dict[str, np.ndarray]):
    """``state`` with every leaf replaced by the initial state recorded under ``name``."""
    old = _old_names(exp, state)
    paths, treedef = jax.tree_util.tree_flatten_with_path(old)
    leaves = [recorded[f"{name}|init{jax.tree_util.keystr(p)}"] for p, _ in paths]
    old = jax.tree_util.tree_unflatten(treedef, leaves)
    return jax.device_put(checkpoint.rename(old, exp.renamed), exp.state_sharding)


def fingerprint(name: str, steps: int, start_from=None) -> dict[str, np.ndarray]:
    config = importlib.import_module(f"configs.{name}").get_config("digits,smoke")
    for path, value in TINY.items():
        if path != "model.kwargs.widths" or "widths" in config.model.kwargs:
            _set(config, path, value)
    exp = Experiment(config)
    state = exp.init_state()
    if start_from is not None and any(k.startswith(f"{name}|init") for k in start_from):
        state = _start_from(exp, state, name, start_from)
    init = _flat(_old_names(exp, state), f"{name}|init")
    exp.prepare_host()
    metrics = {}
    for step, batch in zip(range(steps), exp.batches(0, steps), strict=True):
        state, metrics = exp.train_step(state, batch)
        state = exp.host.update(state, step + 1)
    state = _old_names(exp, state)
    return {**init, **_flat(state, f"{name}|state"), **_flat(metrics, f"{name}|metrics")}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| relative to the largest |a| (inf where the shapes differ)."""
    if a.shape != b.shape:
        return float("inf")
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.max(np.abs(a - b), initial=0.0) / max(np.max(np.abs(a), initial=0.0), 1e-30))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the fingerprints to this .npz")
    parser.add_argument("--compare", help="compare with the fingerprints in this .npz")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--start_from", help="start renamed methods from this file's states")
    parser.add_argument("--methods", default="", help="comma-separated (default: all)")
    args = parser.parse_args(argv)
    names = [m for m in (args.methods.split(",") if args.methods else sorted(methods.METHODS))]
    names = [m for m in names if m not in FROM_ANOTHER_RUN]
    start = dict(np.load(args.start_from)) if args.start_from else None
    found: dict[str, np.ndarray] = {}
    for name in names:
        found.update(fingerprint(name, args.steps, start))
        print(f"{name}: {sum(k.startswith(name + '|') for k in found)} leaves", flush=True)
    if args.out:
        np.savez(args.out, **found)
    if not args.compare:
        return 0
    before = dict(np.load(args.compare))
    failed = 0
    for name in names:
        old = {k: v for k, v in before.items() if k.startswith(name + "|")}
        new = {k: v for k, v in found.items() if k.startswith(name + "|")}
        missing, extra = sorted(set(old) - set(new)), sorted(set(new) - set(old))
        differ = [k for k in sorted(set(old) & set(new)) if not np.array_equal(old[k], new[k])]
        ok = not (missing or extra or differ)
        failed += not ok
        print(
            f"{name:14s} {'identical' if ok else 'DIFFERENT'}: {len(new)} leaves"
            + (f", missing {missing[:3]}" if missing else "")
            + (f", new {extra[:3]}" if extra else "")
            + "".join(f", {k} differs by {_relative(old[k], new[k]):.1e}" for k in differ[:3])
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
