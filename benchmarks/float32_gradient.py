"""How far XLA:CPU's float32 train step is from the same step in float64, per layout.

    python benchmarks/float32_gradient.py [--config configs/simclr.py:digits] [--config.x=y]
        [--out F.json]

For each of 1, 2, 4 and 8 CPU devices (one process, fake devices) and XLA:CPU's
YNNPACK fusions on (jaxlib 0.10.2's own set) and off
(``--xla_cpu_experimental_ynn_fusion_type=``, jssl's CPU default), a fresh process
computes the config's first train-step gradient in float32 on that mesh and the same
program in float64 (``jssl.reference``) on the same views, and prints the largest
per-leaf relative error (``jssl.check.leaf_errors``) and its leaf. Each row is its own
process because XLA reads its flags once.

What it showed on a 2-core AMD EPYC (jax 0.10.2; docs/results.md, "Numerics", quotes
it): on 2026-12-07, the SimCLR digits gradient within 4.7e-6 of float64 on every layout
with YNNPACK fusions and within 3.8e-6 without (jssl's default); on 2026-12-05, with
XLA's own convolution gradients (``conv_impl=xla``), 4e-6 with them and 5.4e-4 without.
A BatchNorm network's per-channel gradient sums run over batch x height x width
(131,072 terms at batch 512, 16 px) and nearly cancel, so float32 results depend on
the order of the sums, and float64 is the judge of which layout is closer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jssl.xla_cpu import YNN_FUSIONS  # noqa: E402

# jssl's CPU default (jssl.xla_cpu), and jaxlib 0.10.2's own set of YNNPACK fusions, which
# compiles to the same program as no flag (named, so that ``import jssl`` keeps it).
YNN = {False: f"--{YNN_FUSIONS}=", True: f"--{YNN_FUSIONS}=+individual_convolution"}

ONE = """
import json, sys, tempfile
sys.path.insert(0, {root!r})
import jax
from jssl import check, cli
from jssl.trainer import open_run
parsed = cli.parse_config_flags({argv!r}, usage="benchmarks/float32_gradient.py")
if parsed is None:
    sys.exit(1)
config = parsed[0]
with tempfile.TemporaryDirectory() as tmp:
    exp, _ = open_run(config, tmp, devices=jax.devices()[:{devices}])
    g = check.gradient_check(exp, exp.init_state(), exp.global_batch(0))
print(json.dumps({{"error": g["max_relative_error"], "leaf": g["worst_leaf"]}}))
"""


def one_layout(config_flags: list[str], devices: int, ynn: bool) -> dict:
    """The row of one layout; ``config_flags``: --config=FILE:PRESET and its overrides."""
    flags = f"--xla_force_host_platform_device_count={devices} {YNN[ynn]}"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    code = ONE.format(root=ROOT, argv=["float32_gradient", *config_flags], devices=devices)
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if run.returncode != 0:
        return {"error": None, "leaf": run.stderr.strip().splitlines()[-1]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/simclr.py:digits")
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args, overrides = parser.parse_known_args(argv)  # overrides: --config.x=y, as train.py
    config_flags = [f"--config={args.config}", *overrides]
    rows = []
    print(f"{args.config}: float32 gradient vs float64, largest per-leaf relative error")
    print(f"{'devices':>7}  {'YNNPACK':>7}  {'error':>8}  leaf")
    for devices in map(int, args.devices.split(",")):
        for ynn in (True, False):
            row = {"devices": devices, "ynn": ynn, **one_layout(config_flags, devices, ynn)}
            rows.append(row)
            err = "failed" if row["error"] is None else f"{row['error']:.1e}"
            print(f"{devices:>7}  {'on' if ynn else 'off':>7}  {err:>8}  {row['leaf']}", flush=True)
    if args.out:
        from benchmarks import common

        with open(args.out, "w") as f:
            json.dump(
                {"config": config_flags, "machine": common.machine(), "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()
