"""Checkpoints written by an older release restore and evaluate to the same figures.

``tests/fixtures/checkpoints_137c0b4/<method>`` holds a real orbax checkpoint (two
steps of the digits smoke preset, 8x8 crops, a one-stage ConvNet) and its config,
written by the code at commit 137c0b4, before the three projection MLPs and the
backbone+head wrappers were merged. ``expected.json`` holds that code's eval-mode
outputs on the first 16 test images: the backbone features, the head's output z, the
predictor's p where there is one (MoCo v3 and NNCLR returned p then, z in
``aux["projection"]``; now z, and p in ``aux["prediction"]``), and the teacher's
features where the method evaluates it.

MoCo v3 and NNCLR renamed their variables ("projector" -> "head", the output
BatchNorm "BatchNorm_<n>" -> "output_bn"); the whole TrainState (params, BatchNorm
statistics, the optimiser's moments, the momentum encoder) is read through
``Method.renamed``.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import augment, checkpoint
from jssl.data.core import Split
from jssl.evaluation import model_variables
from jssl.experiment import restore_run
from jssl.models import EncoderWithHead

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "checkpoints_137c0b4")
METHODS = sorted(os.listdir(FIXTURES))
RENAMED = ("mocov3", "nnclr")


def test_the_fixtures_cover_the_methods_whose_heads_merged():
    expected = {"simclr", "dino", "byol", "simsiam", "mocov2", "mocov3", "nnclr", "swav"}
    assert expected | {"barlow_twins", "vicreg"} == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_an_older_checkpoint_restores_to_the_same_outputs(method, tmp_path):
    workdir = str(tmp_path / method)
    shutil.copytree(os.path.join(FIXTURES, method), workdir)
    with open(os.path.join(workdir, "expected.json")) as f:
        expected = {k: np.asarray(v, np.float32) for k, v in json.load(f).items()}
    run = restore_run(workdir)
    assert int(run.state.step) == 2
    images = run.dataset.test.get(np.arange(16))
    source = Split(images, np.zeros(16, np.int32))

    def close(got, want):  # 1e-6 of the outputs' scale: float32 rounding, never a lost weight
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.max(np.abs(want)))

    close(run.predict(source, "features"), expected["features"])
    x = augment.eval_view(jnp.asarray(images), size=(run.config.augment.crop_size,) * 2)
    variables = model_variables(run.state.params, run.state.batch_stats)
    z, aux = run.model.apply(variables, x, train=False)
    close(z, expected["output"])
    assert ("prediction" in aux) == ("prediction" in expected)
    if "prediction" in expected:
        close(aux["prediction"], expected["prediction"])
    if "teacher_features" in expected:
        teacher = run.predict(source, "features", network="teacher")
        close(teacher, expected["teacher_features"])
    if method in RENAMED:  # the optimiser's moments and the momentum encoder moved too
        leaves = jax.tree_util.tree_leaves_with_path(run.state)
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        assert not [n for n in names if "projector" in n], names
        assert [n for n in names if "opt_state" in n and "['head']" in n]
        assert [n for n in names if "method_state" in n and "['output_bn']['mean']" in n] or (
            method == "nnclr"  # no momentum encoder
        )
        assert [n for n in names if n.startswith(".batch_stats['head']['output_bn']")]


def test_rename_moves_model_paths_everywhere_and_nothing_else():
    old = {
        "backbone": {"w": 1},
        "projector": {"Dense_0": {"kernel": 2}, "BatchNorm_1": {"scale": 3}},
        "predictor": {"BatchNorm_1": {"scale": 4}},
    }
    renames = {"projector": "head", "projector/BatchNorm_1": "head/output_bn"}
    new = {
        "backbone": {"w": 1},
        "head": {"Dense_0": {"kernel": 2}, "output_bn": {"scale": 3}},
        "predictor": {"BatchNorm_1": {"scale": 4}},
    }
    tree = {"params": old, "opt": (old, {"count": 0}), "other": {"projector": 5}}
    moved = checkpoint.rename(tree, renames)
    assert moved == {"params": new, "opt": (new, {"count": 0}), "other": {"projector": 5}}
    assert checkpoint.rename(moved, checkpoint.inverse(renames)) == tree
    assert checkpoint.rename(tree, {}) is tree
    with pytest.raises(ValueError, match="two variables to one path"):
        checkpoint.rename({"backbone": {}, "a": 1, "b": 2}, {"a": "b"})


@pytest.mark.parametrize("method", ["byol", "mocov3"])
def test_the_momentum_encoder_is_an_evaluable_teacher(method, tmp_path):
    """BYOL's target and MoCo v3's key encoder hold the backbone and head only; as the
    "teacher" network they run alone (the student's predictor fills the model)."""
    workdir = str(tmp_path / method)
    shutil.copytree(os.path.join(FIXTURES, method), workdir)
    run = restore_run(workdir)
    images = run.dataset.test.get(np.arange(16))
    got = run.predict(Split(images, np.zeros(16, np.int32)), "features", network="teacher")
    ema = run.state.method_state[run.experiment.method.teacher]
    x = augment.eval_view(jnp.asarray(images), size=(run.config.augment.crop_size,) * 2)
    own = model_variables(ema.params, ema.batch_stats)
    _, aux = run.model.apply(own, x, train=False, method=EncoderWithHead.project)
    np.testing.assert_allclose(got, aux["features"], rtol=1e-6, atol=1e-6)
    student = run.predict(Split(images, np.zeros(16, np.int32)), "features")
    assert np.max(np.abs(got - student)) > 1e-6  # two steps apart: another network
    assert run.experiment.method.default_network == "student"
