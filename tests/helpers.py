"""Helpers shared by the tests: the tiny config, train.py in its own process, learning checks.

Plain functions, because module-level code, other helpers and fixtures call them
too; conftest.py builds its fixtures (``train_py``, ``train_py_runs``) on them.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
from typing import NamedTuple

import jax
import numpy as np
import pytest

from tests import forked

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The default tier checks every method's own parts: its loss (8 devices == 1 included),
# views, presets and state. One whole train step on 8 devices == 1 and a train.py smoke run
# that learns are in it for one method of each kind of network (BYOL's momentum
# network, SwAV's queue and prototypes, DINO's teacher and centre, MAE's decoder, I-JEPA's
# target encoder and predictor, LeJEPA's projections, SeLa's labels, SCAN's stages, a
# rotation classifier, a VQ autoencoder's codebook and convolutional decoder), and for
# test_check.py's and test_train.py's SimCLR; every other method's with -m slow (pyproject's
# marker).
RUNS_IN_DEFAULT_TIER = frozenset(
    {"byol", "swav", "dino", "mae", "ijepa", "lejepa", "sela", "scan"} | {"rotation", "vq"}
)
# An exact resume: one for each kind of state besides the parameters and optimiser (a
# momentum network, a queue with prototypes, a teacher with its centre, labels, stages).
RESUMES_IN_DEFAULT_TIER = frozenset({"byol", "swav", "dino", "sela", "scan"})


def run_params(*cases, tier=RUNS_IN_DEFAULT_TIER) -> list:
    """``cases`` (a method's name, or a tuple that starts with one) as the pytest parameters
    of a test of their steps or train.py runs, those outside ``tier`` marked slow."""
    params = []
    for case in cases:
        values = case if isinstance(case, tuple) else (case,)
        slow = () if values[0] in tier else (pytest.mark.slow,)
        params.append(pytest.param(*values, marks=slow))
    return params


def run_tier(*names: str, tier=RUNS_IN_DEFAULT_TIER):
    """Decorates a test of the steps or train.py runs of the methods ``names``: marked slow
    unless one of them is in ``tier``."""
    if any(name in tier for name in names):
        return lambda test: test
    return pytest.mark.slow


def slow_runs(*names: str) -> tuple[str, ...]:
    """A module's SLOW_RUNS (conftest.py): those of ``names`` outside RUNS_IN_DEFAULT_TIER."""
    return tuple(n for n in names if n not in RUNS_IN_DEFAULT_TIER)


# Small enough that compiling, not running, is most of a test's time: 8x8 crops, a
# two-stage ConvNet, two probe epochs, no evaluation of the untrained network.
TINY = {
    "augment.crop_size": 8,
    "model.kwargs.widths": (8, 16),
    "eval.probe_epochs": 2,
    "eval.untrained": False,
}

# For the tests that compare two computations of a step (8 devices == 1) instead of
# training: one ConvNet stage compiles about 25% faster, and the equality holds at any
# depth. (Not for the reconstruction methods: there the second stage gives the decoder
# an upsampling layer to run.)
ONE_STAGE = {"model.kwargs.widths": (8,)}
# The smoke presets' 4 steps at lr 2e-3 x 32/256 barely move a loss: 24 steps at an unscaled
# lr 1e-2, logged every 4 (6 records, each the mean of 4 batches), a checkpoint every 4
# steps, 12 kept (all of a run up to 48 steps), so that step 4 is a resume test's
# uninterrupted run.
LEARNING_RUN = {
    "num_steps": 24,
    "log_every": 4,
    "checkpoint_every": 4,
    "keep_checkpoints": 12,
    "optim.scale_lr_by_batch": False,
    "optim.learning_rate": 1e-2,
}


def set_fields(config, **overrides):
    """config with dotted-path overrides, e.g. set_fields(c, **{"model.kwargs.widths": (8,)})."""
    for k, v in overrides.items():
        node = config
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return config


def tiny_config(method: str = "simclr", arg: str = "digits,smoke", **overrides):
    """configs/<method>.py:<arg> with TINY and then the dotted-path ``overrides`` applied."""
    config = importlib.import_module(f"configs.{method}").get_config(arg)
    return set_fields(config, **{**TINY, **overrides})


def tiny_flags(prefix: str = "", **overrides) -> list[str]:
    """TINY (and ``overrides``) as train.py flags, for the config at ``prefix``
    (e.g. "stages.scan."): ``train.py ... *tiny_flags()`` runs ``tiny_config``'s config."""
    return [f"--config.{prefix}{k}={v}".replace(" ", "") for k, v in {**TINY, **overrides}.items()]


def smoke_args(method: str, *flags: str, arg: str = "digits,smoke") -> tuple[str, ...]:
    """train.py arguments of a smoke run of ``method`` (no --workdir), without the
    evaluation of the untrained network (test_train's SimCLR run keeps that one)."""
    return (f"--config=configs/{method}.py:{arg}", "--config.eval.untrained=False", *flags)


def leaves_equal(a, b):
    """Same tree structure and bit-identical leaves."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def jit_init(module, *args, seed: int = 0, **kwargs):
    """``module.init(PRNGKey(seed), *args, **kwargs)`` compiled as one program (eager Flax
    init dispatches op by op, each operation compiled on its own: slow on CPU)."""
    return jax.jit(lambda: module.init(jax.random.PRNGKey(seed), *args, **kwargs))()


def jit_views(method: str, config):
    """The jitted ``make_views`` of METHODS[method] under ``config``: ``(key, batch) -> views``
    (one compiled program instead of one per operation, as in the train step)."""
    from jssl.methods import METHODS

    return jax.jit(lambda key, batch: METHODS[method].make_views(key, batch, config))


# ----------------------------------------------------------------------------- train.py


class TrainPy:
    """``python train.py ARGS`` with cwd ROOT and JAX on the CPU: forked from a server that
    has imported JAX and jssl (tests/forked.py) where it can be, else a subprocess.

    The environment is this process's: conftest.py's 8 fake devices, -O0 and the
    session's persistent compilation cache, so that a run loads what an earlier run of
    the same program compiled.
    """

    def __init__(self, env: dict[str, str] | None = None):
        self.env = {**(os.environ if env is None else env), "JAX_PLATFORMS": "cpu"}

    def command(self, *args: str, wrapper: tuple[str, ...] = ()) -> list[str]:
        """argv; ``wrapper`` (e.g. ``(sys.executable, "-c", CODE)``) runs train.py's argv."""
        return [*wrapper, sys.executable, os.path.join(ROOT, "train.py"), *map(str, args)]

    def start(self, *args: str, wrapper: tuple[str, ...] = (), **popen_kwargs):
        """A running train.py: a ``Forked`` (poll, wait, kill, send_signal, communicate) or,
        where it cannot be forked (``popen_kwargs``, a ``wrapper``, another environment:
        ``forked.forkable``), a ``subprocess.Popen`` whose stdout and stderr are text pipes
        unless ``popen_kwargs`` says."""
        argv = self.command(*args, wrapper=wrapper)
        if not popen_kwargs:
            return forked.start(argv, ROOT, self.env)
        kwargs = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        return subprocess.Popen(argv, cwd=ROOT, env=self.env, **{**kwargs, **popen_kwargs})

    def __call__(
        self, *args: str, wrapper: tuple[str, ...] = (), timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """Runs train.py to its end (killed after ``timeout``): CompletedProcess with text
        stdout and stderr."""
        proc = self.start(*args, wrapper=wrapper)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def records(workdir, kind: str = "train") -> list[dict]:
    """The ``kind`` ("train" or "eval") records of ``workdir``/metrics.jsonl, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == kind]


def assert_finished(run) -> dict:
    """``run`` (a finished train_py_runs entry) exited 0, printed the evaluation table and
    wrote eval_<last step>.json with the standard metrics; returns that evaluation."""
    assert run.returncode == 0, f"{run.name}:\n{run.stderr[-3000:]}"
    assert "kNN top-1" in run.stdout, run.stdout[-2000:]
    train = records(run.workdir)
    assert train and all(np.isfinite(r["loss"]) for r in train), run.name
    with open(os.path.join(run.workdir, f"eval_{train[-1]['step']}.json")) as f:
        result = json.load(f)
    assert set(result) >= {"knn_top1", "linear_top1", "cluster_acc", "nmi", "ari"}
    return result


def assert_fell(train: list[dict], key: str = "loss", *, by: float = 0.0, ratio: float = 1.0):
    """Something was learned: the last logged ``key`` is at least ``by`` below the first and
    at most ``ratio`` times it. Logged values are means over ``log_every`` steps of random
    batches, so a run needs two or more logs and a margin above the batch-to-batch noise."""
    assert len(train) >= 2, f"{len(train)} train record(s): log more than once"
    first, last = train[0][key], train[-1][key]
    wanted = [f"a fall of at least {by}"] if by else []
    wanted += [f"to at most {ratio} x the first"] if ratio < 1.0 else []
    assert last <= first - by and last <= ratio * first, (
        f"{key} went from {first:.4f} (step {train[0]['step']}) to {last:.4f} "
        f"(step {train[-1]['step']}); expected {' and '.join(wanted) or 'a fall'}"
    )


def assert_rose(train: list[dict], key: str, *, by: float):
    """The last logged ``key`` is at least ``by`` above the first (a confidence, say)."""
    assert len(train) >= 2, f"{len(train)} train record(s): log more than once"
    first, last = train[0][key], train[-1][key]
    assert last >= first + by, (
        f"{key} went from {first:.4f} (step {train[0]['step']}) to {last:.4f} "
        f"(step {train[-1]['step']}); expected a rise of at least {by}"
    )


def assert_above_chance(train: list[dict], key: str, *, chance: float, at_least: float):
    """The last logged accuracy ``key`` is at least ``at_least`` (chance: ``chance``)."""
    last = train[-1][key]
    assert at_least > chance and last >= at_least, (
        f"{key} = {last:.4f} at step {train[-1]['step']}: expected at least {at_least} "
        f"(chance {chance:.4f})"
    )


def log_uniform(k: int) -> float:
    """Cross-entropy of a uniform prediction over k classes: an untrained classifier's loss."""
    return math.log(k)


# ----------------------------------------------------------------------------- 8 == 1 device


class Step(NamedTuple):
    """The state after one step (on the host) and the step's metrics."""

    params: dict
    batch_stats: dict
    method_state: dict
    metrics: dict


def one_step_on(config, devices) -> Step:
    from jssl import trainer

    exp = trainer.Experiment(config, devices)
    state = exp.init_state()
    state, metrics = exp.train_step(state, exp.global_batch(0))
    return Step(*jax.device_get((state.params, state.batch_stats, state.method_state, metrics)))


def assert_one_step_8_devices_equals_1(config, rtol=1e-4, atol=1e-4) -> Step:
    """One update on 1 and on 8 devices gives the same loss, params, BN stats, method state;
    returns the one on 1 device.

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
    for k in one.metrics:
        close(one.metrics[k], eight.metrics[k])
    return one


def write_image_folder(
    root, n_train: int, n_test: int, *, classes=("dark", "light"), size=(32, 32), fmt="jpg"
):
    """A real image folder ``root/{train,test}/<class>/<i>.<fmt>`` of seeded random images,
    class c brighter than class c - 1 (so a network can tell them apart); returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    step = 255 // (2 * len(classes))
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % len(classes)
            folder = root / split / classes[c]
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 128, (*size, 3)) + step * c
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:04d}.{fmt}")
    return root


def assert_exact_resume(config, run, workdir: str, *, steps: int = 4):
    """``config`` interrupted at step ``steps // 2`` in ``workdir`` and resumed to ``steps``
    equals the uninterrupted train.py ``run``'s checkpoint of that step, every leaf bit for
    bit (params, BN statistics, optimiser, method state, rng). Returns the resumed state."""
    from jssl import trainer
    from jssl.checkpoint import Checkpointer

    assert run.returncode == 0, run.stderr[-3000:]
    half = steps // 2
    interrupted = trainer.train_and_evaluate(
        config, workdir, show_progress=False, stop_at_step=half
    )
    assert int(interrupted["state"].step) == half and interrupted["eval"] is None
    resumed = trainer.train_and_evaluate(config, workdir, show_progress=False, stop_at_step=steps)
    resumed = resumed["state"]
    ckpt = Checkpointer(run.workdir)
    try:
        straight = ckpt.restore(resumed, step=steps)
    finally:
        ckpt.close()
    assert int(resumed.step) == int(straight.step) == steps
    leaves_equal(straight, resumed)
    return resumed
