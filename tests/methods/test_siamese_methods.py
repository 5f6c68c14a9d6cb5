"""BYOL, SimSiam, Barlow Twins and VICReg: train.py smoke runs that learn, 8 devices == 1,
exact resume (BYOL's EMA target included), BYOL's target (no gradient, EMA, no predictor),
SimSiam's projector, the collapse monitors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import trainer
from jssl.methods import METHODS, byol
from jssl.methods.base import RunInfo
from tests.helpers import (
    LEARNING_RUN,
    ONE_STAGE,
    RESUMES_IN_DEFAULT_TIER,
    assert_exact_resume,
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    leaves_equal,
    records,
    run_params,
    slow_runs,
    smoke_args,
    tiny_config,
    tiny_flags,
)

NAMES = ("byol", "simsiam", "barlow_twins", "vicreg")
# A one-stage ConvNet (the tiny helpers' 8 px crops); the smoke heads are 32-64 wide.
WIDTHS, LONGER = ONE_STAGE, LEARNING_RUN
TRAIN_PY_RUNS = {name: smoke_args(name, *tiny_flags(**WIDTHS, **LONGER)) for name in NAMES}
SLOW_RUNS = slow_runs(*NAMES)
# The fall each loss shows over those 24 steps (first log -> last), with a margin: BYOL
# about 2.9 -> 1.4 (of 0..4 per direction, summed), SimSiam -0.01 -> -0.10 (of -1..1),
# Barlow Twins x 0.67, VICReg x 0.85.
FELL = {
    "byol": dict(by=0.5),
    "simsiam": dict(by=0.04),
    "barlow_twins": dict(ratio=0.85),
    "vicreg": dict(ratio=0.93),
}
LOGGED = {
    "byol": ("z_std", "p_std", "h_std", "target_momentum"),
    "simsiam": ("z_std", "p_std", "h_std"),
    "barlow_twins": ("z_std", "z_std_min", "h_std"),
    "vicreg": ("invariance", "variance", "covariance", "z_raw_std", "z_std", "z_std_min"),
}


def smoke_config(name, **overrides):
    """The config of TRAIN_PY_RUNS[name] (what train.py runs), with ``overrides``."""
    return tiny_config(name, **WIDTHS, **LONGER, **overrides)


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize("name", run_params(*NAMES))
def test_one_step_8_devices_equals_1(name):
    metrics = assert_one_step_8_devices_equals_1(tiny_config(name, **WIDTHS)).metrics
    for key in LOGGED[name]:
        assert np.isfinite(metrics[key]), key


# ----------------------------------------------------------------------------- BYOL's target

RUN = RunInfo(total_steps=10, steps_per_epoch=5, num_examples=80)


def _byol_parts(batch=8):
    config = tiny_config("byol", **WIDTHS)
    model = METHODS["byol"].build_model(config)
    x = jax.random.uniform(jax.random.PRNGKey(0), (batch, 8, 8, 1))
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(1), x, train=False))()
    return config, model, variables, x


def test_byol_target_holds_backbone_and_projector_only_and_gets_no_gradient():
    config, model, variables, x = _byol_parts()
    params, stats = variables["params"], variables["batch_stats"]
    assert set(params) == {"backbone", "head", "predictor"}
    state = byol.init_method_state(params, stats, config, RUN)
    target = state["target"]
    assert set(target.params) == {"backbone", "head"}  # the predictor stays out
    assert set(target.batch_stats) <= {"backbone", "head"}
    assert int(target.count) == 0
    leaves_equal(target.params, {k: params[k] for k in ("backbone", "head")})
    loss_fn = byol.make_loss(model, config, RUN)
    views = (x, x[::-1])

    def loss(params, target_params):
        ms = {"target": target._replace(params=target_params)}
        return loss_fn(params, stats, views, ms, 0, None)[0]

    g_online, g_target = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, target.params)
    assert not any(np.any(g) for g in jax.tree.leaves(g_target))
    for part in ("backbone", "head", "predictor"):
        assert any(np.any(g) for g in jax.tree.leaves(g_online[part])), part


def test_byol_target_follows_the_ema_of_the_online_network():
    config = tiny_config("byol", **WIDTHS)
    exp = trainer.Experiment(config, jax.devices()[:1])
    state = exp.init_state()
    before = jax.device_get(state.params)
    state, metrics = exp.train_step(state, exp.global_batch(0))
    after = jax.device_get(state.params)
    target = jax.device_get(state.method_state["target"])
    assert int(target.count) == 1
    m = config.byol.target_momentum  # the cosine schedule at step 0
    np.testing.assert_allclose(float(metrics["target_momentum"]), m, rtol=1e-6)
    for part in ("backbone", "head"):
        expected = jax.tree.map(lambda b, a: m * b + (1 - m) * a, before[part], after[part])
        jax.tree.map(
            lambda t, e: np.testing.assert_allclose(t, e, rtol=1e-6, atol=1e-7),
            target.params[part],
            expected,
        )
    # The target moved off its start, and is not the online network.
    moved = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))
    online = jax.tree.leaves({k: after[k] for k in ("backbone", "head")})
    assert moved(jax.tree.leaves(target.params), online) > 0
    start = jax.tree.leaves({k: before[k] for k in ("backbone", "head")})
    assert moved(jax.tree.leaves(target.params), start) > 0


def test_byol_momentum_schedule_spans_the_run():
    config = tiny_config("byol", **WIDTHS)
    momentum = byol.target_momentum_schedule(config, RUN)
    np.testing.assert_allclose(float(momentum(0)), config.byol.target_momentum, rtol=1e-7)
    assert float(momentum(RUN.total_steps)) == 1.0
    assert float(momentum(3)) < float(momentum(7))


# ----------------------------------------------------------------------------- models, monitors


def test_simsiam_projector_ends_in_batch_norm_without_affine():
    config = tiny_config("simsiam", **WIDTHS)
    model = METHODS["simsiam"].build_model(config)
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 8, 8, 1))
    variables = jax.jit(lambda: model.init(jax.random.PRNGKey(1), x, train=False))()
    head = variables["params"]["head"]
    assert "output_bn" not in head  # no scale, no shift
    assert "output_bn" in variables["batch_stats"]["head"]
    dense = [layer for name, layer in head.items() if name.startswith("Dense")]
    assert len(dense) == 3 and all(set(layer) == {"kernel"} for layer in dense)  # no bias
    (z, aux), _ = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables
    )
    np.testing.assert_allclose(jnp.mean(z, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(z, axis=0), 1.0, atol=1e-2)
    assert aux["prediction"].shape == z.shape == (16, config.simsiam.proj_dim)
    assert aux["features"].shape == (16, 8)


@pytest.mark.parametrize("name", NAMES)
def test_collapse_warnings(name):
    config = tiny_config(name)
    warn = METHODS[name].collapse_warnings
    healthy = {"loss": 1.0, "z_std": 0.1, "p_std": 0.1, "variance": 0.1}
    assert warn(healthy, config) == []
    collapsed = {**healthy, "z_std": 1e-4}
    assert any("collapsing" in w for w in warn(collapsed, config))
    if name in ("byol", "simsiam"):
        assert any("p_std" in w for w in warn({**healthy, "p_std": 1e-4}, config))
    if name == "vicreg":
        assert any("variance term" in w for w in warn({**healthy, "variance": 0.95}, config))


@pytest.mark.parametrize("name", NAMES)
def test_presets_build(name):
    """Every preset loads and carries its method block; the ImageNet ones the papers' sizes."""
    import importlib

    module = importlib.import_module(f"configs.{name}")
    for preset in ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet", "digits,smoke"):
        c = module.get_config(preset)
        assert c.method == name and name in c
    block = module.get_config("imagenet")[name]
    hidden = "pred_hidden_dims" if name in ("byol", "simsiam") else "proj_hidden_dims"
    assert (block.proj_dim, tuple(block[hidden])) == {
        "byol": (256, (4096,)),
        "simsiam": (2048, (512,)),
        "barlow_twins": (8192, (8192, 8192)),
        "vicreg": (8192, (8192, 8192)),
    }[name]


# ----------------------------------------------------------------------------- train.py


@pytest.mark.parametrize("name", run_params(*NAMES))
def test_train_py_smoke_learns(name, train_py_runs):
    run = train_py_runs[name]
    result = assert_finished(run)
    assert all(np.isfinite(result[k]) for k in ("knn_top1", "linear_top1", "nmi"))
    train = records(run.workdir)
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    for key in LOGGED[name]:
        assert all(np.isfinite(r[key]) for r in train), key
    assert_fell(train, **FELL[name])
    assert "warning: step" not in run.stdout + run.stderr, run.stderr[-2000:]  # no collapse


@pytest.mark.parametrize("name", run_params(*NAMES, tier=RESUMES_IN_DEFAULT_TIER))
def test_exact_resume(name, train_py_runs, tmp_path):
    """Interrupted at step 2 and resumed to step 4 == the uninterrupted train.py run's step 4:
    every leaf bit for bit (params, BN statistics, optimiser, method state, rng)."""
    resumed = assert_exact_resume(smoke_config(name), train_py_runs[name], str(tmp_path))
    if name == "byol":
        assert int(resumed.method_state["target"].count) == 4
