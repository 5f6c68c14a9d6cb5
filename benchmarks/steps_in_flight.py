"""The step rate with at most k train steps in flight (``config.steps_in_flight``).

    python benchmarks/steps_in_flight.py [--config configs/simclr.py:digits] [--steps 60]

For k = 1, 2, 4 and 0 (no bound) it runs train.py for ``--steps`` steps, logging twice,
and reads the images/s of the second half from metrics.jsonl (the first half pays for
compilation), then prints them against k = 0 measured in the same run, with the load
and the CPU other processes took. k bounds how far the host's loop (progress, deadline,
signals) may run ahead of the device; a bound that costs throughput would show here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402


def rate(config: str, steps: int, k: int) -> float:
    """images/s of the second half of a ``steps``-step train.py run with bound k."""
    with tempfile.TemporaryDirectory() as workdir:
        args = [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            f"--config={config}",
            f"--workdir={workdir}",
            f"--config.num_steps={steps}",
            f"--config.log_every={steps // 2}",
            f"--config.checkpoint_every={steps}",
            f"--config.steps_in_flight={k}",
            "--config.eval.untrained=False",
            "--config.eval.probe_epochs=1",
        ]
        run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"error: train.py failed: {run.stderr.strip().splitlines()[-1]}")
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            train = [r for r in map(json.loads, f) if r["kind"] == "train"]
        return train[-1]["images_per_sec"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/simclr.py:digits")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--bounds", default="0,1,2,4")
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = []
    sampler = common.CpuSampler()
    for k in map(int, args.bounds.split(",")):
        with sampler.phase() as cpu:
            images_per_sec = rate(args.config, args.steps, k)
        # The run is a child process: the machine's busy cores during it, the run included.
        busy = cpu["own_cores"] + cpu["others_cores"]
        rows.append({"steps_in_flight": k, "images_per_sec": images_per_sec, "busy_cores": busy})
        print(f"k={k}: {images_per_sec:.0f} img/s, {busy:.2f} cores busy", flush=True)
    base = next((r["images_per_sec"] for r in rows if r["steps_in_flight"] == 0), None)
    print(f"\n{args.config}, {args.steps} steps, second half timed")
    print(f"{'k':>9}  {'img/s':>8}  {'vs no bound':>11}  {'busy cores':>10}")
    for r in rows:
        k = r["steps_in_flight"] or "no bound"
        ratio = f"{r['images_per_sec'] / base:.2f}x" if base else "-"
        print(f"{k:>9}  {r['images_per_sec']:>8.0f}  {ratio:>11}  {r['busy_cores']:>10.2f}")
    machine = {**common.machine(), "loadavg": common.loadavg()}
    print(f"machine: {machine['description']}, load {machine['loadavg']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": args.config, "rows": rows, "machine": machine}, f, indent=2)


if __name__ == "__main__":
    main()
