"""Kills, preemption and device-count changes never lose or alter work."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from jssl import checkpoint, trainer
from tests.test_train import ROOT, leaves_equal, smoke_config


def restore_final(config, workdir):
    exp = trainer.Experiment(config, jax.devices()[:1])
    ckpt = checkpoint.Checkpointer(str(workdir))
    try:
        return ckpt.restore(exp.init_state())
    finally:
        ckpt.close()


def test_checkpoint_from_8_devices_resumes_on_1(tmp_path):
    config = smoke_config(num_steps=4)
    saved = trainer.train_and_evaluate(
        config, str(tmp_path / "b"), devices=jax.devices(), show_progress=False, stop_at_step=2
    )["state"]
    assert len(saved.params["head"]["Dense_0"]["kernel"].sharding.device_set) == 8
    # The restore itself is exact on another device count...
    restored = restore_final(config, tmp_path / "b")
    assert restored.params["head"]["Dense_0"]["kernel"].sharding.device_set == {jax.devices()[0]}
    leaves_equal(jax.device_get(saved), jax.device_get(restored))
    # ...and the run continues on 1 device like a run that never changed devices
    # (up to float summation order: 8 devices reduce in another order).
    straight = trainer.train_and_evaluate(
        config, str(tmp_path / "a"), devices=jax.devices()[:1], show_progress=False
    )
    resumed = trainer.train_and_evaluate(
        config, str(tmp_path / "b"), devices=jax.devices()[:1], show_progress=False
    )
    assert int(resumed["state"].step) == 4
    np.testing.assert_allclose(resumed["eval"]["knn_top1"], straight["eval"]["knn_top1"], atol=0.02)
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-2),
        straight["state"].params,
        resumed["state"].params,
    )


def _train_py(workdir, *extra):
    return [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--config=configs/simclr.py:digits,smoke",
        f"--workdir={workdir}",
        "--config.num_steps=12",
        "--config.checkpoint_every=3",
        "--config.eval.untrained=False",
        *extra,
    ]


def _wait_for_checkpoint(workdir, timeout=240):
    ckpt_dir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.isdir(ckpt_dir) and any(d.isdigit() for d in os.listdir(ckpt_dir)):
            return
        time.sleep(0.05)
    raise TimeoutError("no checkpoint appeared")


def test_kill_and_sigterm_resume_bit_exact(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    straight = tmp_path / "straight"
    subprocess.run(_train_py(straight), check=True, capture_output=True, env=env, cwd=ROOT)

    # SIGKILL right after the first checkpoint appears (a save may be in flight),
    # then SIGTERM in the next run, then run to the end.
    interrupted = tmp_path / "interrupted"
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen(
            _train_py(interrupted),
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen = (
            set(os.listdir(interrupted / "checkpoints"))
            if (interrupted / "checkpoints").exists()
            else set()
        )
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            now = (
                set(os.listdir(interrupted / "checkpoints"))
                if (interrupted / "checkpoints").exists()
                else set()
            )
            if {d for d in now if d.isdigit()} - seen:
                break
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.communicate(timeout=240)
        if sig == signal.SIGTERM:
            assert proc.returncode == 0  # saved and exited cleanly
    final = subprocess.run(
        _train_py(interrupted), capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert final.returncode == 0, final.stderr[-3000:]

    config = smoke_config(num_steps=12)
    a, b = restore_final(config, straight), restore_final(config, interrupted)
    assert int(a.step) == int(b.step) == 12
    leaves_equal((a.params, a.opt_state, a.batch_stats), (b.params, b.opt_state, b.batch_stats))
