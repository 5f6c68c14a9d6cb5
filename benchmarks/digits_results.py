"""Every method's digits config through train.py, and the docs/results.md table of them.

    python -m benchmarks.digits_results --methods rotation,jigsaw   # train + record
    python -m benchmarks.digits_results --render                     # markdown table

For each method runs ``python train.py --config=configs/M.py:digits
--workdir=runs/digits/M`` from scratch (``--reuse`` evaluates a finished run
again instead), times the whole command, and writes
``benchmarks/results/digits_M.json``: the command, wall-clock seconds, the
machine (CPU count, load average before and after: these machines are
shared), date, jax version, and the untrained and trained evaluations (kNN
top-1, linear-probe top-1, k-means ACC / NMI / ARI on the 360 test images).
``--render`` prints one table row per JSON, SimCLR first.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
METRICS = ("knn_top1", "linear_top1", "cluster_acc", "nmi", "ari")


def run(method: str, workdir_root: str, reuse: bool) -> dict:
    workdir = os.path.join(workdir_root, method)
    if not reuse and os.path.exists(workdir):
        shutil.rmtree(workdir)
    cmd = [
        sys.executable,
        "train.py",
        f"--config=configs/{method}.py:digits",
        f"--workdir={workdir}",
    ]
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    evals = sorted(
        glob.glob(os.path.join(workdir, "eval_[0-9]*.json")),
        key=lambda p: int(p.rsplit("_", 1)[1][:-5]),
    )
    untrained_path = os.path.join(workdir, "eval_untrained.json")
    return {
        "method": method,
        "command": f"python train.py --config=configs/{method}.py:digits",
        "wall_seconds": round(seconds, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "date": datetime.date.today().isoformat(),
        "jax": __import__("jax").__version__,
        "step": int(evals[-1].rsplit("_", 1)[1][:-5]),
        "eval": json.load(open(evals[-1])),
        "untrained": json.load(open(untrained_path)) if os.path.exists(untrained_path) else None,
    }


def render() -> str:
    """One markdown row per results JSON: trained figures, the same network untrained, time."""
    rows = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(RESULTS, "digits_*.json")))]
    rows.sort(key=lambda r: (r["method"] != "simclr", r["method"]))
    lines = [
        "| method | kNN | linear | k-means ACC | NMI | ARI | untrained kNN / linear / ACC "
        "| wall time (load) | command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = " | ".join(f"{r['eval'][k]:.3f}" for k in METRICS)
        u = r.get("untrained") or {}
        before = " / ".join(f"{u[k]:.3f}" if k in u else "–" for k in METRICS[:3])
        minutes = f"{r['wall_seconds'] / 60:.1f} min ({r['machine']['load_before'][0]:.1f})"
        lines.append(f"| {r['method']} | {cells} | {before} | {minutes} | `{r['command']}` |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="", help="comma-separated config names")
    parser.add_argument("--workdir-root", default=os.path.join(ROOT, "runs", "digits"))
    parser.add_argument(
        "--reuse", action="store_true", help="evaluate finished runs again instead of retraining"
    )
    parser.add_argument("--render", action="store_true", help="print the markdown table")
    args = parser.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    for method in filter(None, args.methods.split(",")):
        result = run(method, args.workdir_root, args.reuse)
        with open(os.path.join(RESULTS, f"digits_{method}.json"), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
        ev = result["eval"]
        print(
            f"{method}: {result['wall_seconds'] / 60:.1f} min  "
            + "  ".join(f"{k} {ev[k]:.4f}" for k in METRICS),
            flush=True,
        )
    if args.render:
        print(render())


if __name__ == "__main__":
    main()
