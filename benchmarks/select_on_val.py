"""Choose a hyperparameter on the validation split, over seeds; then score the test split once.

    python benchmarks/select_on_val.py --root /tmp/scan_k \\
        --config configs/scan.py:digits --field scan.num_neighbors --values 5,20,35,50 \\
        --seeds 0,1,2 --metric head_acc --pretext configs/simclr.py:digits --test

For every value and seed, one train.py run of ``--config`` with ``--config.FIELD=value``,
``--config.seed=seed``, ``--config.data.val_fraction=F`` and ``--config.eval.split=val``:
trained on the training set less a stratified validation split (``jssl.data.carve_validation``,
the same images for every seed) and scored on that split. ``--pretext`` trains one pretext
run per seed on the same carved training set and starts every run of that seed from it
(``--config.init_from.workdir``), as SCAN's pretext does not depend on the neighbour count.
The value with the best mean ``--metric`` is chosen; with ``--test``, the chosen value is
then trained on the whole training set (val_fraction 0, a pretext of its own) for every seed
and scored on the test split: the figure to report, as mean ± std.

Runs that finished already (their final eval_<step>.json exists) are read, not rerun, so
an interrupted sweep continues. The summary goes to ROOT/selection.json and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def final_eval(workdir: str) -> dict | None:
    """The final evaluation of a finished run (its eval_<last step>.json), None before."""
    ckpt = os.path.join(workdir, "checkpoints")
    steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
    path = os.path.join(workdir, f"eval_{max(steps)}.json") if steps else ""
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def train(config: str, workdir: str, flags: list[str], log) -> dict:
    """Runs train.py (unless ``workdir`` holds a finished run); its final evaluation."""
    result = final_eval(workdir)
    if result is not None:
        return result
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), f"--config={config}"]
    cmd += [f"--workdir={workdir}", *flags]
    log(" ".join(cmd))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    result = final_eval(workdir)
    if result is None:
        sys.exit(f"error: {workdir} has no final evaluation after train.py ended")
    return result


def split_flags(seed: int, val_fraction: float, split: str) -> list[str]:
    flags = [f"--config.seed={seed}", f"--config.data.val_fraction={val_fraction}"]
    return flags + [f"--config.eval.split={split}"]


def run_seed(args, value, seed: int, split: str, log) -> float:
    """``--metric`` of one run of ``value`` on ``split`` ("val": carved training set)."""
    fraction = args.val_fraction if split == "val" else 0.0
    flags = split_flags(seed, fraction, split) + list(args.set)
    folder = os.path.join(args.root, split)
    if args.pretext:
        pretext = os.path.join(folder, f"pretext_seed{seed}")
        train(args.pretext, pretext, split_flags(seed, fraction, split) + args.pretext_set, log)
        flags.append(f"--config.init_from.workdir={pretext}")
    workdir = os.path.join(folder, f"{args.field}={value}_seed{seed}")
    result = train(args.config, workdir, [f"--config.{args.field}={value}", *flags], log)
    if args.metric not in result:
        sys.exit(f"error: {workdir}: no {args.metric!r} in its evaluation; have {sorted(result)}")
    return float(result[args.metric])


def summary(scores: dict[int, float]) -> dict:
    values = np.array(list(scores.values()), np.float64)
    return {
        "seeds": {str(s): v for s, v in scores.items()},
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
    }


def choose(by_value: dict[str, dict]) -> str:
    """The value with the best mean score (the first such one on a tie)."""
    return max(by_value, key=lambda v: by_value[v]["mean"])


def table(field: str, metric: str, by_value: dict[str, dict], chosen: str | None) -> str:
    lines = [f"| {field} | {metric} (mean ± std) | per seed |", "|---|---|---|"]
    for value, s in by_value.items():
        mark = " (chosen)" if value == chosen else ""
        per = ", ".join(f"{v:.3f}" for v in s["seeds"].values())
        lines.append(f"| {value}{mark} | {s['mean']:.3f} ± {s['std']:.3f} | {per} |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="folder of the runs and selection.json")
    p.add_argument("--config", default="configs/scan.py:digits", help="train.py --config")
    p.add_argument("--field", default="scan.num_neighbors", help="config field swept")
    p.add_argument("--values", default="5,20,35,50", help="comma-separated values of FIELD")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    p.add_argument("--metric", default="head_acc", help="eval_<step>.json key; higher is better")
    p.add_argument("--val_fraction", type=float, default=0.1, help="share of each class held out")
    p.add_argument("--pretext", default="", help="pretext config trained once per seed")
    p.add_argument("--set", action="append", default=[], help="extra train.py flag (repeat)")
    p.add_argument(
        "--pretext_set", action="append", default=[], help="extra flag of the pretext runs"
    )
    p.add_argument("--test", action="store_true", help="then score the chosen value on test")
    args = p.parse_args(argv)
    if not 0.0 < args.val_fraction < 1.0:
        p.error(f"--val_fraction={args.val_fraction}: use a share in (0, 1), e.g. 0.1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    values = [v.strip() for v in args.values.split(",") if v.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    os.makedirs(args.root, exist_ok=True)
    log = lambda line: print(line, file=sys.stderr, flush=True)
    by_value = {v: summary({s: run_seed(args, v, s, "val", log) for s in seeds}) for v in values}
    chosen = choose(by_value)
    out = {
        "field": args.field,
        "metric": args.metric,
        "config": args.config,
        "val_fraction": args.val_fraction,
        "validation": by_value,
        "chosen": chosen,
    }
    text = f"Validation split ({args.val_fraction:g} of each class):\n"
    text += table(args.field, args.metric, by_value, chosen)
    if args.test:
        out["test"] = summary({s: run_seed(args, chosen, s, "test", log) for s in seeds})
        t = out["test"]
        text += f"\n\nTest split, {args.field}={chosen} (chosen on validation), seeds {seeds}: "
        text += f"{args.metric} {t['mean']:.3f} ± {t['std']:.3f}"
    with open(os.path.join(args.root, "selection.json"), "w") as f:
        json.dump(out, f, indent=2)
    print(text, flush=True)
    return out


if __name__ == "__main__":
    main()
