"""Streamed training in bounded memory, killed and resumed bit-exact.

    python benchmarks/stream_resume.py [--data DIR|ARCHIVE] [--image_size 224] [--steps 300]

1. Prepares the image folder (default: the CIFAR-10 JPEG copy, 60,000 images) as
   ArrayRecord shards (``python -m jssl.data.prepare``).
2. Trains SimCLR on it streamed at ``--image_size`` (every image decoded and
   upscaled to that size on the host; 32 px crops on the device), once without
   interruption and once SIGKILLed at two checkpoints and restarted, both through
   train.py in subprocesses; records each process's peak resident memory
   (``ru_maxrss`` from ``wait4``).
3. Checks that the interrupted run ends bit-identical to the uninterrupted one
   (parameters, optimiser state, evaluation) and writes the figures, with the
   decoded size of the training split (N x H x W x 3 bytes) against the peak RSS,
   to benchmarks/results/stream_resume_<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import DEFAULT_ARCHIVE, ROOT, image_folder, loadavg, machine  # noqa: E402


def _run(argv, *, kill_after_checkpoint=None, workdir=None, env=None):
    """Runs argv to its end (or SIGKILLs it once checkpoint ``kill_after_checkpoint`` of
    ``workdir`` exists); returns (exit status, peak RSS in MiB)."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024
        if kill_after_checkpoint is not None and os.path.isdir(
            os.path.join(workdir, "checkpoints", str(kill_after_checkpoint))
        ):
            proc.send_signal(signal.SIGKILL)
            kill_after_checkpoint = None
        time.sleep(0.02)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=DEFAULT_ARCHIVE, help="image folder or .tar.gz of one")
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--eval_train_examples", type=int, default=10000)
    args = p.parse_args(argv)

    folder = image_folder(args.data)
    out = args.out or tempfile.mkdtemp(prefix="jssl-stream-resume-")
    prepared = os.path.join(out, "prepared")
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "jssl.data.prepare", f"--source={folder}", f"--out={prepared}"],
        cwd=ROOT,
        check=True,
    )
    prepare_seconds = time.perf_counter() - t0
    with open(os.path.join(prepared, "meta.json")) as f:
        meta = json.load(f)
    n_train = meta["splits"]["train"]["num_examples"]
    every = args.steps // 6
    flags = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config=configs/simclr.py:digits",
        "--config.data.name=arrayrecord",
        f"--config.data.path={prepared}",
        f"--config.data.image_size={args.image_size}",
        "--config.data.num_threads=4",
        f"--config.batch_size={args.batch_size}",
        f"--config.num_steps={args.steps}",
        f"--config.checkpoint_every={every}",
        f"--config.log_every={every}",
        "--config.augment.crop_size=32",
        "--config.augment.flip=True",
        "--config.eval.untrained=False",
        f"--config.eval.max_train_examples={args.eval_train_examples}",
    ]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    whole, killed = os.path.join(out, "whole"), os.path.join(out, "killed")
    t0 = time.perf_counter()
    status, rss_whole = _run([*flags, f"--workdir={whole}"], env=env)
    whole_seconds = time.perf_counter() - t0
    assert status == 0, f"the uninterrupted run failed ({status})"
    rss_killed = []
    for kill_at in (every * 2, every * 4, None):
        status, rss = _run(
            [*flags, f"--workdir={killed}"], kill_after_checkpoint=kill_at, workdir=killed, env=env
        )
        rss_killed.append(rss)
        expected = 0 if kill_at is None else -signal.SIGKILL
        assert status == expected, f"run with kill at {kill_at}: status {status}"

    compare = (
        "import json, jax, numpy as np, sys\n"
        "from jssl.experiment import restore_run\n"
        "a, b = restore_run(sys.argv[1]).state, restore_run(sys.argv[2]).state\n"
        "same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip("
        "jax.tree.leaves((a.params, a.opt_state, a.batch_stats)), "
        "jax.tree.leaves((b.params, b.opt_state, b.batch_stats)), strict=True))\n"
        "print(json.dumps({'identical_state': bool(same), 'step': int(a.step)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", compare, whole, killed],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    state = json.loads(result.stdout.strip().splitlines()[-1])
    evals = []
    for w in (whole, killed):
        with open(os.path.join(w, f"eval_{args.steps}.json")) as f:
            e = json.load(f)
        e.pop("eval_seconds", None)
        evals.append(e)
    decoded = n_train * args.image_size * args.image_size * 3
    peak = max(rss_whole, *rss_killed)
    report = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "loadavg_at_end": loadavg(),
        "train_images": n_train,
        "image_size": args.image_size,
        "decoded_train_split_mib": decoded / 2**20,
        "peak_rss_mib": {"uninterrupted": rss_whole, "killed_runs": rss_killed},
        "decoded_over_peak_rss": decoded / 2**20 / peak,
        "identical_state": state["identical_state"],
        "identical_eval": evals[0] == evals[1],
        "eval": evals[0],
        "prepare_seconds": prepare_seconds,
        "uninterrupted_seconds": whole_seconds,
        "steps": args.steps,
        "killed_at_checkpoints": [every * 2, every * 4],
        "command": " ".join(flags[1:]),
    }
    path = os.path.join(ROOT, "benchmarks", "results", f"stream_resume_{report['date']}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    ok = report["identical_state"] and report["identical_eval"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
