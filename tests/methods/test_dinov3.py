"""DINOv3's additions to DINO: the ViT's registers (in attention, out of every output), Gram
anchoring in the step against a direct computation, the Gram teacher's snapshots at the
start and every refresh, the ``dinov3`` presets and checks, 8 devices == 1, exact resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dino as dino_config
from jssl import losses, trainer, validation
from jssl.methods import RunInfo, dino
from jssl.models import ViT
from tests.helpers import assert_one_step_8_devices_equals_1, jit_init, jit_views, set_fields

RUN = RunInfo(total_steps=20, steps_per_epoch=5, num_examples=80)


def v3_config(**overrides):
    c = dino_config.get_config("digits,smoke,dinov3")
    return set_fields(c, **{"eval.untrained": False, "batch_size": 8, **overrides})


def test_registers_attend_but_stay_out_of_the_outputs():
    kwargs = dict(patch_size=4, image_size=16, depth=2, hidden=32, num_heads=2, mlp_dim=64)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 1))
    with_r = ViT(num_registers=4, **kwargs)
    variables = jit_init(with_r, x, train=False)
    assert variables["params"]["registers"].shape == (1, 4, 32)
    assert "registers" not in jit_init(ViT(**kwargs), x, train=False)["params"]
    h, aux = with_r.apply(variables, x, train=False, return_attention=True)
    assert h.shape == (3, 32) and aux["feature_map"].shape == (3, 4, 4, 32)
    assert aux["attention"].shape == (3, 2, 1 + 4 + 16, 1 + 4 + 16)
    # The registers take part: other register values change the patch outputs.
    moved = {"params": {**variables["params"], "registers": variables["params"]["registers"] + 1}}
    _, aux2 = with_r.apply(moved, x, train=False)
    assert not np.allclose(aux2["feature_map"], aux["feature_map"])


def _parts(**overrides):
    c = v3_config(**{"dino.head_use_bn": False, **overrides})
    model = dino.DINO.build_model(c)
    variables = jit_init(model, jnp.zeros((1, 16, 16, 1)), train=False)
    params = variables["params"]
    ms = dino.init_method_state(params, {}, c, RUN)
    # A Gram teacher other than the student, as after some training.
    ms["gram_teacher"] = jax.tree.map(lambda p: p * 0.9, ms["gram_teacher"])
    images = np.random.RandomState(0).randint(0, 256, (8, 8, 8, 1)).astype(np.uint8)
    views = jit_views("dino", c)(jax.random.PRNGKey(3), {"image": jnp.asarray(images)})
    return c, model, params, ms, views


@pytest.mark.parametrize("start_epochs", [0.0, 1.0])
def test_gram_term_in_the_step_matches_a_direct_computation(start_epochs):
    c, model, params, ms, views = _parts(**{"dino.gram_start_epochs": start_epochs})
    loss_fn = jax.jit(dino.make_loss(model, c, RUN))
    loss, (_, new_ms, metrics) = loss_fn(params, {}, views, ms, 0, None)
    x = views["global"].reshape(16, 16, 16, 1)
    mask = views["mask"].reshape(16, 16)
    every = jnp.broadcast_to(jnp.arange(16), (16, 16))
    tokens = lambda p, m: model.apply({"params": p}, x, every, train=True, mask=m, method="tokens")
    student = jax.jit(tokens)(params, mask)[3]  # the masked crops' patch features
    gram_params = {**ms["teacher"].params, "backbone": ms["gram_teacher"]}
    teacher = jax.jit(tokens)(gram_params, None)[3]
    want = losses.gram_loss(student, teacher)
    np.testing.assert_allclose(float(metrics["gram_loss"]), float(want), rtol=1e-5)
    assert float(want) > 0
    others = metrics["dino_loss"] + 0.1 * metrics["koleo"] + 1.0 * metrics["ibot_loss"]
    on = start_epochs == 0.0  # step 0 is before a start at epoch 1 (step 5)
    assert float(metrics["gram_on"]) == float(on)
    np.testing.assert_allclose(float(loss), float(others + on * want), rtol=1e-5)


def test_gram_teacher_snapshots_at_the_start_and_every_refresh():
    c = v3_config(**{"dino.gram_start_epochs": 1.0, "dino.gram_update_epochs": 0.6})
    start, every = dino.gram_steps(c, RUN)
    assert (start, every) == (5, 3)
    params = {"backbone": {"w": jnp.zeros(2)}, "head": {"w": jnp.zeros(2)}}
    ms = dino.init_method_state(params, {}, c, RUN)
    refreshed = []
    for step in range(12):
        params = jax.tree.map(lambda p: p + 1.0, params)  # a new student each step
        before = ms["gram_teacher"]["w"]
        _, ms = dino.after_update(params, {}, ms, step, c, RUN)
        if not np.array_equal(ms["gram_teacher"]["w"], before):
            np.testing.assert_array_equal(
                ms["gram_teacher"]["w"], ms["teacher"].params["backbone"]["w"]
            )
            refreshed.append(step + 1)  # updates applied
    assert refreshed == [5, 8, 11]


def test_dinov3_presets_and_checks():
    for preset in ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet"):
        c = dino_config.get_config(f"{preset},dinov3")
        d = c.dino
        assert (d.gram_weight, d.centering, d.ibot_weight, c.model.kwargs.num_registers) == (
            1.0,
            "sinkhorn_knopp",
            1.0,
            4,
        )
        assert d.gram_start_epochs == c.num_epochs / 2
        if c.data.name in ("image_folder", "arrayrecord"):
            c.data.path = "/data"
        assert validation.config_problems(c) == [], preset
    assert dino_config.get_config("digits").dino.gram_weight == 0.0
    conv = set_fields(dino_config.get_config("digits"), **{"dino.gram_weight": 1.0})
    assert any("Gram anchoring compares" in p for p in validation.config_problems(conv))
    both = v3_config(**{"dino.gram_remove_neg": True, "dino.gram_remove_only_teacher_neg": True})
    assert any("exclude each other" in p for p in validation.config_problems(both))


@pytest.mark.slow
def test_one_step_8_devices_equals_1():
    small = {"dino.out_dim": 32, "dino.hidden_dim": 16, "dino.bottleneck_dim": 8}
    ibot = {"dino.ibot_out_dim": 32, "dino.ibot_hidden_dim": 16, "dino.ibot_bottleneck_dim": 8}
    config = v3_config(**{"augment.num_local_crops": 0, "optim.name": "sgd", **small, **ibot})
    metrics = assert_one_step_8_devices_equals_1(config).metrics
    assert float(metrics["gram_on"]) == 1.0 and np.isfinite(metrics["gram_loss"])


@pytest.mark.slow
def test_exact_resume_with_the_gram_teacher(tmp_path):
    config = v3_config(**{"num_steps": 4, "checkpoint_every": 2, "eval.probe_epochs": 2})
    straight = trainer.train_and_evaluate(
        config, str(tmp_path / "straight"), show_progress=False, stop_at_step=4
    )["state"]
    trainer.train_and_evaluate(config, str(tmp_path / "two"), show_progress=False, stop_at_step=2)
    resumed = trainer.train_and_evaluate(
        config, str(tmp_path / "two"), show_progress=False, stop_at_step=4
    )["state"]
    assert "gram_teacher" in resumed.method_state and int(resumed.step) == 4
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
