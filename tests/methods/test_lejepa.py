"""The LeJEPA method: a train.py smoke run that learns, 8 devices == 1 for a step, exact
resume, fresh slice directions every step from the step key, gradients into every crop,
the RankMe monitor and its warning, the presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lejepa as lejepa_config
from jssl import losses
from jssl.methods import METHODS, lejepa
from jssl.methods.base import RunInfo
from tests.helpers import (
    LEARNING_RUN,
    ONE_STAGE,
    RESUMES_IN_DEFAULT_TIER,
    assert_exact_resume,
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_views,
    records,
    run_tier,
    smoke_args,
    tiny_config,
    tiny_flags,
)

# 8 px globals and 4 px locals of a one-stage ConvNet: 24 steps at lr 1e-2.
LOCALS = {"augment.local_crop_size": 4}
TRAIN_PY_RUNS = {"lejepa": smoke_args("lejepa", *tiny_flags(**ONE_STAGE, **LOCALS, **LEARNING_RUN))}
RUN = RunInfo(total_steps=10, steps_per_epoch=5, num_examples=80)


def smoke_config(**overrides):
    return tiny_config("lejepa", **ONE_STAGE, **LOCALS, **LEARNING_RUN, **overrides)


def test_one_step_8_devices_equals_1():
    metrics = assert_one_step_8_devices_equals_1(
        tiny_config("lejepa", **ONE_STAGE, **LOCALS)
    ).metrics
    for key in ("invariance", "sigreg", "rankme", "z_std", "h_std"):
        assert np.isfinite(metrics[key]), key


def _loss_parts(batch=8):
    config = tiny_config("lejepa", **ONE_STAGE, **LOCALS)
    model = METHODS["lejepa"].build_model(config)
    images = jax.random.randint(jax.random.PRNGKey(0), (batch, 8, 8, 1), 0, 256, jnp.int32)
    views = jit_views("lejepa", config)(jax.random.PRNGKey(1), {"image": images.astype(jnp.uint8)})
    variables = jax.jit(
        lambda: model.init(jax.random.PRNGKey(2), views["global"][:, 0], train=False)
    )()
    state = lejepa.init_method_state(variables["params"], variables["batch_stats"], config, RUN)
    loss_fn = lejepa.make_loss(model, config, RUN)
    return config, model, variables, views, state, loss_fn


def test_the_loss_is_lejepa_loss_of_the_projections_along_the_step_keys_directions():
    config, model, variables, views, state, loss_fn = _loss_parts()
    params, stats = variables["params"], variables["batch_stats"]
    key = jax.random.PRNGKey(7)
    run = jax.jit(loss_fn)
    loss, (_, new_state, metrics) = run(params, stats, views, state, 0, key)
    # The same by hand: globals and locals through the network, projections [V, B, K].
    g, local = views["global"], views["local"]
    b = g.shape[0]
    apply = lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0][0]
    z = apply((g.reshape(-1, *g.shape[2:]), local.reshape(-1, *local.shape[2:])))
    n_g = b * g.shape[1]
    proj = jnp.concatenate(
        [
            z[:n_g].reshape(b, -1, z.shape[-1]).swapaxes(0, 1),
            z[n_g:].reshape(b, -1, z.shape[-1]).swapaxes(0, 1),
        ]
    )
    assert proj.shape == (2 + 2, b, config.lejepa.proj_dim)
    directions = jax.random.normal(key, (config.lejepa.proj_dim, config.lejepa.num_slices))
    want = losses.lejepa_loss(proj, directions, num_global_views=2, lambda_=config.lejepa.lambda_)
    np.testing.assert_allclose(float(loss), float(want[0]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["invariance"]), float(want[1]), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["sigreg"]), float(want[2]), rtol=1e-5)
    # Another key: other directions (another SIGReg), the same invariance.
    _, (_, _, other) = run(params, stats, views, state, 0, jax.random.PRNGKey(8))
    assert float(other["sigreg"]) != float(metrics["sigreg"])
    assert float(other["invariance"]) == float(metrics["invariance"])
    # The first step's RankMe is kept; a later step keeps it.
    assert float(new_state["rankme_start"]) == float(metrics["rankme"]) > 1.0
    _, (_, later, _) = run(params, stats, views, {"rankme_start": jnp.float32(3.0)}, 5, key)
    assert float(later["rankme_start"]) == 3.0


def test_every_crop_gets_a_gradient_and_nothing_is_stopped():
    config, model, variables, views, state, loss_fn = _loss_parts()
    stats = variables["batch_stats"]

    def loss_of(params, local):
        v = {"global": views["global"], "local": local}
        return loss_fn(params, stats, v, state, 0, jax.random.PRNGKey(3))[0]

    g_params, g_local = jax.jit(jax.grad(loss_of, argnums=(0, 1)))(
        variables["params"], views["local"]
    )
    assert np.any(np.asarray(g_local))  # the local crops' path is not detached
    for part in ("backbone", "head"):
        assert any(np.any(g) for g in jax.tree.leaves(g_params[part])), part


def test_rankme_collapse_warning():
    config = tiny_config("lejepa")
    warn = METHODS["lejepa"].collapse_warnings
    assert warn({"rankme": 10.0, "rankme_start": 12.0, "z_std": 0.1}, config) == []
    found = warn({"rankme": 2.0, "rankme_start": 12.0, "z_std": 0.1}, config)
    assert len(found) == 1 and "RankMe 2.00 fell under 0.25" in found[0]


def test_presets_build():
    for preset in ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet", "digits,smoke"):
        c = lejepa_config.get_config(preset)
        assert c.method == "lejepa" and c.augment.num_global_crops == 2
    vit = lejepa_config.get_config("imagenet")
    assert (vit.model.name, vit.optim.weight_decay, vit.augment.num_local_crops) == (
        "vit_small",
        5e-2,
        6,
    )
    resnet = lejepa_config.get_config("imagenet,resnet50")
    assert (resnet.model.name, resnet.optim.weight_decay) == ("resnet50", 5e-4)
    assert (vit.lejepa.lambda_, vit.lejepa.num_slices, vit.augment.local_scale) == (
        0.02,
        1024,
        (0.05, 0.3),
    )
    with pytest.raises(ValueError, match="resnet50 modifier is for imagenet"):
        lejepa_config.get_config("digits,resnet50")


def test_train_py_smoke_learns(train_py_runs):
    run = train_py_runs["lejepa"]
    result = assert_finished(run)
    assert result["rankme"] > 1.0
    train = records(run.workdir)
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    for key in ("invariance", "sigreg", "rankme", "rankme_start"):
        assert all(np.isfinite(r[key]) for r in train), key
    assert_fell(train, ratio=0.9)
    assert "RankMe" in run.stdout


@run_tier("lejepa", tier=RESUMES_IN_DEFAULT_TIER)
def test_exact_resume(train_py_runs, tmp_path):
    """Interrupted at step 2 and resumed to step 4 == the uninterrupted run's step 4, bit
    for bit (the slice directions come from the step key, the RankMe start from the state)."""
    assert_exact_resume(smoke_config(), train_py_runs["lejepa"], str(tmp_path))
