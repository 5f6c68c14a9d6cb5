"""Shared helpers for the pretext-method tests (no tests here)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from jssl import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def set_fields(config, **overrides):
    """config with dotted-path overrides, e.g. set_fields(c, **{"model.kwargs.widths": (8,)})."""
    for k, v in overrides.items():
        node = config
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return config


def one_step_on(config, devices):
    exp = trainer.Experiment(config, devices)
    state = exp.init_state()
    state, metrics = exp.train_step(state, exp.global_batch(0))
    return jax.device_get((state.params, state.batch_stats, state.method_state, metrics))


def assert_one_step_8_devices_equals_1(config, rtol=1e-4, atol=1e-4):
    """One update on 1 and on 8 devices gives the same loss, params, BN stats, method state.

    atol 1e-4: the smoke configs use AdamW, whose first update is about
    lr * g / |g| (lr 2e-4 here), so a parameter with a near-zero gradient can
    move by a visible fraction of an update when the two reductions sum in a
    different order; a real sharding bug moves many parameters by whole updates.
    """
    one = one_step_on(config, jax.devices()[:1])
    eight = one_step_on(config, jax.devices())
    close = lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
    for a, b in zip(one[:3], eight[:3], strict=True):
        jax.tree.map(close, a, b)
    for k in one[3]:
        close(one[3][k], eight[3][k])
    return one[3]


def run_train_py_smokes(runs, timeout=300):
    """Runs ``train.py --config=ARG --workdir=W [extra...]`` for each (ARG, W, extra) at once.

    The runs are started together: most of a smoke run is single-threaded XLA
    compilation, so on a 2-core machine they overlap well. Checks that each one
    trained and evaluated; returns [(train records, eval results)].
    """
    procs = []
    for config_arg, workdir, extra in runs:
        cmd = [
            sys.executable,
            os.path.join(ROOT, "train.py"),
            f"--config={config_arg}",
            f"--workdir={workdir}",
            "--config.eval.untrained=False",
            *extra,
        ]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
            )
        )
    outcomes = []
    for (config_arg, workdir, _), proc in zip(runs, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{config_arg}:\n{stderr[-3000:]}"
        assert "kNN top-1" in stdout, stdout[-2000:]
        result = json.load(open(os.path.join(workdir, "eval_4.json")))
        assert set(result) >= {"knn_top1", "linear_top1", "cluster_acc", "nmi", "ari"}
        records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
        train = [r for r in records if r["kind"] == "train"]
        assert train and all(np.isfinite(r["loss"]) for r in train), config_arg
        outcomes.append((train, result))
    return outcomes
