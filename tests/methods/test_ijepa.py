"""The I-JEPA method: padding tokens change nothing (the ViT and the predictor attend only to
real tokens), the target encoder gets no gradient and follows the EMA, 8 devices == 1 for
a step, a train.py smoke run that learns, exact resume, the checks, the mask pictures."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import ijepa as ijepa_config
from jssl import losses, sharding, trainer, validation
from jssl.methods import METHODS, ijepa
from jssl.methods.base import RunInfo
from tests.helpers import (
    LEARNING_RUN,
    RESUMES_IN_DEFAULT_TIER,
    assert_exact_resume,
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_views,
    records,
    run_tier,
    set_fields,
    smoke_args,
)

# The smoke ViT (2 px patches on 16 px crops: an 8 x 8 grid) for 24 steps at lr 1e-2.
LONGER = {"eval.untrained": False, "eval.probe_epochs": 2, **LEARNING_RUN}
TRAIN_PY_RUNS = {"ijepa": smoke_args("ijepa", *(f"--config.{k}={v}" for k, v in LONGER.items()))}
RUN = RunInfo(total_steps=10, steps_per_epoch=5, num_examples=80)


def smoke_config(**overrides):
    c = ijepa_config.get_config("digits,smoke")
    return set_fields(c, **{**LONGER, **overrides})


def _parts(batch=8):
    config = smoke_config()
    model = METHODS["ijepa"].build_model(config)
    images = jax.random.randint(jax.random.PRNGKey(0), (batch, 8, 8, 1), 0, 256, jnp.int32)
    views = jit_views("ijepa", config)(jax.random.PRNGKey(1), {"image": images.astype(jnp.uint8)})
    params = jax.jit(lambda: model.init(jax.random.PRNGKey(2), views["image"], train=False))()
    return config, model, params["params"], views


def test_padding_tokens_change_nothing():
    """The context encoder and the predictor on padded tokens == on the real tokens alone."""
    config, model, params, views = _parts()
    x = views["image"][:1]
    context = np.asarray(views["context"][:1])
    kept = int(np.sum(views["context_valid"][0]))
    targets = np.asarray(views["targets"][:, :1])
    kt = int(np.sum(views["targets_valid"][0, 0]))
    assert 0 < kept < context.shape[1] and 0 < kt <= targets.shape[2]
    apply = jax.jit(
        lambda c, cv, t, tv: model.apply(
            {"params": params}, x, c, cv, t, tv, train=False, method=ijepa.JEPANetwork.predict
        )
    )
    padded = apply(context, views["context_valid"][:1], targets, views["targets_valid"][:, :1])
    # Other patches in the padding slots: the real tokens' predictions do not move.
    garbage_c = context.copy()
    garbage_c[:, kept:] = np.arange(context.shape[1] - kept) % 7
    garbage_t = targets.copy()
    garbage_t[..., kt:] = 3
    moved = apply(garbage_c, views["context_valid"][:1], garbage_t, views["targets_valid"][:, :1])
    np.testing.assert_allclose(moved[:, :, :kt], padded[:, :, :kt], rtol=1e-5, atol=1e-6)
    # No padding at all: the same predictions.
    alone = apply(
        context[:, :kept],
        np.ones((1, kept), bool),
        targets[..., :kt],
        np.ones((targets.shape[0], 1, kt), bool),
    )
    np.testing.assert_allclose(alone, padded[:, :, :kt], rtol=1e-5, atol=1e-6)


def _predictions_and_targets(model, params, v):
    """The predictor's outputs and the (here: same) encoder's features of all patches."""
    net = ijepa.JEPANetwork
    pred = model.apply(
        {"params": params}, v["image"], v["context"], v["context_valid"], v["targets"],
        v["targets_valid"], train=True, method=net.predict,
    )  # fmt: skip
    feats = model.apply({"params": params}, v["image"], train=True, method=net.targets)
    return pred, feats


def test_predictions_and_loss_keep_each_image_on_its_device():
    """On 8 devices the predictor's (image, block) sequences and the loss's targets stay on
    their image's device: the compiled loss and gradient copy no activations between devices."""
    config, model, params, views = _parts()
    mesh = sharding.make_mesh()
    spec = {"image": P("data"), "context": P("data"), "context_valid": P("data")}
    views = {k: jax.device_put(v, NamedSharding(mesh, spec.get(k, P(None, "data"))))
             for k, v in views.items()}  # fmt: skip

    def loss(params, v):
        pred, feats = _predictions_and_targets(model, params, v)
        return losses.ijepa_loss(pred, feats, v["targets"], valid=v["targets_valid"])

    program = jax.jit(jax.value_and_grad(loss)).lower(params, views).compile().as_text()
    assert "all-gather" not in program and "all-to-all" not in program


def test_gradients_reach_encoder_and_predictor_never_the_target():
    config, model, params, views = _parts()
    state = ijepa.init_method_state(params, {}, config, RUN)
    assert set(state["target"].params) == {"encoder"}
    loss_fn = ijepa.make_loss(model, config, RUN)

    def loss(params, target_params):
        ms = {"target": state["target"]._replace(params=target_params)}
        return loss_fn(params, {}, views, ms, 0, None)[0]

    g, g_target = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, state["target"].params)
    assert not any(np.any(t) for t in jax.tree.leaves(g_target))
    for part in ("encoder", "predictor"):
        assert any(np.any(t) for t in jax.tree.leaves(g[part])), part
    # The loss is ijepa_loss of the predictions against the target encoder's features,
    # standardised per position (the digits preset's) or raw (the official recipe).
    assert config.ijepa.target_standardise == "position"
    value, (_, _, metrics) = jax.jit(loss_fn)(params, {}, views, state, 0, None)
    pred, feats = jax.jit(lambda v: _predictions_and_targets(model, params, v))(views)
    loss_of = lambda h: losses.ijepa_loss(pred, h, views["targets"], valid=views["targets_valid"])
    np.testing.assert_allclose(
        float(value), float(loss_of(losses.standardise_by_position(feats))), rtol=1e-5
    )
    raw = ijepa.make_loss(model, smoke_config(**{"ijepa.target_standardise": "none"}), RUN)
    np.testing.assert_allclose(
        float(jax.jit(raw)(params, {}, views, state, 0, None)[0]), float(loss_of(feats)), rtol=1e-5
    )
    assert abs(float(value) - float(loss_of(feats))) > 1e-3  # the two differ here
    assert 0.0 < float(metrics["target_spread"]) <= 1.01
    # RankMe of the batch's pooled target features, by hand: exp of the entropy of the
    # normalised singular values (eps 1e-7), in float64.
    s = np.linalg.svd(np.mean(np.asarray(feats, np.float64), axis=1), compute_uv=False)
    p = s / s.sum() + 1e-7
    np.testing.assert_allclose(float(metrics["rankme"]), np.exp(-np.sum(p * np.log(p))), rtol=1e-4)
    assert 1.0 <= float(metrics["rankme"]) <= min(feats.shape[0], feats.shape[-1])


def test_one_step_8_devices_equals_1_and_the_target_encoder_follows_the_ema():
    # SGD: Adam's first update is about lr * sign(g), and the ViT's key biases have a zero
    # gradient in exact arithmetic, so their order-dependent rounding would move whole
    # updates. lr 0.5: the EMA's share of the update is well above float32 rounding.
    config = smoke_config(**{"optim.name": "sgd", "optim.learning_rate": 0.5, "batch_size": 16})
    step = assert_one_step_8_devices_equals_1(config)
    for key in ("context_share", "target_share", "pred_std", "target_spread", "rankme"):
        assert np.isfinite(step.metrics[key]), key
    before = jax.device_get(trainer.Experiment(config, jax.devices()[:1]).init_state().params)
    m = config.ijepa.target_momentum
    np.testing.assert_allclose(float(step.metrics["target_momentum"]), m, rtol=1e-6)
    want = jax.tree.map(lambda b, a: m * b + (1 - m) * a, before["encoder"], step.params["encoder"])
    jax.tree.map(
        lambda t, e: np.testing.assert_allclose(t, e, rtol=1e-5, atol=1e-7),
        step.method_state["target"].params["encoder"],
        want,
    )
    schedule = ijepa.target_momentum_schedule(config, RUN)
    assert float(schedule(RUN.total_steps)) == 1.0
    np.testing.assert_allclose(float(schedule(5)), (0.996 + 1.0) / 2, rtol=1e-6)  # linear


def test_checks_and_presets():
    for preset in ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet", "digits,smoke"):
        c = ijepa_config.get_config(preset)
        if c.data.name in ("image_folder", "arrayrecord"):
            c.data.path = "/data"
        assert validation.config_problems(c) == [], preset
    big = ijepa_config.get_config("imagenet")
    assert (big.model.name, big.ijepa.num_targets, big.ijepa.min_keep) == ("vit_base", 4, 10)
    found = validation.config_problems(smoke_config(**{"ijepa.min_keep": 12}))
    assert any("ijepa.min_keep=12: the smallest target block" in p for p in found), found
    conv = smoke_config(**{"model.name": "convnet"})
    conv.model.kwargs = {"widths": (8,)}
    assert any(
        "I-JEPA's encoder runs on the context" in p for p in validation.config_problems(conv)
    )


def test_mask_pictures():
    config, model, params, views = _parts()
    x = views["image"]
    rows = ijepa.picture_rows(model, {"params": params}, None, x, jax.random.PRNGKey(4), config)
    assert len(rows) == 3 and all(r.shape == x.shape for r in rows)
    # Pixels of x are k / 255, never 0.5: grey marks what a row hides.
    context, targets = (np.asarray(r != 0.5) for r in rows[1:])
    assert context.any() and targets.any() and not np.any(context & targets)  # disjoint
    np.testing.assert_array_equal(np.where(context, rows[1], 0), np.where(context, x, 0))


def test_train_py_smoke_learns(train_py_runs):
    run = train_py_runs["ijepa"]
    result = assert_finished(run)
    assert np.isfinite(result["teacher_knn_top1"])
    train = records(run.workdir)
    assert [r["step"] for r in train] == [4, 8, 12, 16, 20, 24]
    for key in ("context_share", "target_share", "pred_std", "target_spread"):
        assert all(np.isfinite(r[key]) for r in train), key
    assert_fell(train, ratio=0.8)


@run_tier("ijepa", tier=RESUMES_IN_DEFAULT_TIER)
def test_exact_resume(train_py_runs, tmp_path):
    resumed = assert_exact_resume(smoke_config(), train_py_runs["ijepa"], str(tmp_path))
    assert int(resumed.method_state["target"].count) == 4
