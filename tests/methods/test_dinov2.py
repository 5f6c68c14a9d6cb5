"""DINOv2's additions to DINO: off by default (the step is DINO's, bit for bit), the
``dinov2`` presets, iBOT's masks (share, ratio range, independence), the masked student
(blind to its masked pixels), iBOT's loss and patch centre in the step against a direct
computation, KoLeo on the [CLS] features, a separate iBOT head, 8 devices == 1, train.py
smoke run that learns and exact resume (iBOT's centre included)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import dino as dino_config
from jssl import losses, optim, trainer
from jssl.checkpoint import Checkpointer
from jssl.methods import RunInfo, dino
from jssl.methods.base import apply_train
from jssl.train_step import TrainState, train_step
from tests.helpers import (
    assert_fell,
    assert_finished,
    assert_one_step_8_devices_equals_1,
    jit_init,
    jit_views,
    leaves_equal,
    records,
    run_tier,
    set_fields,
    slow_runs,
    smoke_args,
)
from tests.losses.test_ssl_losses import np_sinkhorn

RUN = RunInfo(total_steps=10, steps_per_epoch=5, num_examples=80)
# The smoke ViT (4 px patches on 16 px globals: 16 patches, 8 px locals) at a learning rate
# at which 12 steps lower the loss; logged every 4 steps, a checkpoint every 4.
LONGER = {
    "eval.untrained": False,
    "eval.probe_epochs": 2,
    "optim.learning_rate": 0.02,
    "num_steps": 12,
    "log_every": 4,
    "checkpoint_every": 4,
}
TRAIN_PY_RUNS = {
    "dinov2": smoke_args(
        "dino", *(f"--config.{k}={v}" for k, v in LONGER.items()), arg="digits,smoke,dinov2"
    )
}
SLOW_RUNS = slow_runs(*TRAIN_PY_RUNS)


def v2_config(arg="digits,smoke,dinov2", **overrides):
    return set_fields(dino_config.get_config(arg), **{"eval.untrained": False, **overrides})


def _batch(n=8, seed=0):
    images = np.random.RandomState(seed).randint(0, 256, (n, 8, 8, 1)).astype(np.uint8)
    return {"image": jnp.asarray(images), "index": jnp.arange(n, dtype=jnp.int32)}


def _state(method, model, config, tx):
    variables = jit_init(model, jnp.zeros((1, 16, 16, 1)), train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=stats,
        opt_state=tx.init(params),
        method_state=method.init_method_state(params, stats, config, RUN),
        rng=jax.random.PRNGKey(1),
        nonfinite_steps=jnp.zeros((), jnp.int32),
    )


# ----------------------------------------------------------------------------- off by default


def dino_loss_as_before(model, config, run):
    """DINO's loss_fn as jssl.methods.dino wrote it before DINOv2's options (the reference)."""
    d = config.dino
    teacher_temp = dino.teacher_temp_schedule(config, run)
    momentum = dino.teacher_momentum_schedule(config, run)
    freeze_steps = run.epochs_to_steps(d.freeze_last_layer_epochs)
    flat = lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
    crops_first = lambda z, b: jnp.swapaxes(z.reshape(b, -1, z.shape[-1]), 0, 1)

    def loss_fn(params, batch_stats, views, method_state, step, key):
        if freeze_steps > 0:
            params = dino.freeze_last_layer(params, step < freeze_steps)
        g = views["global"]
        b = g.shape[0]
        z, _, batch_stats = apply_train(model, params, batch_stats, flat(g))
        student = [crops_first(z, b)]
        if "local" in views:
            z, _, batch_stats = apply_train(model, params, batch_stats, flat(views["local"]))
            student.append(crops_first(z, b))
        student = jnp.concatenate(student, axis=0)
        t = jax.lax.stop_gradient(method_state["teacher"])
        z_t, _, _ = apply_train(model, t.params, t.batch_stats, flat(g))
        teacher = jax.lax.stop_gradient(crops_first(z_t, b))
        center = method_state["center"]
        temp = teacher_temp(step)
        loss = losses.dino_loss(
            student, teacher, center, student_temp=d.student_temp, teacher_temp=temp
        )
        new_center = losses.update_center(center, teacher, momentum=d.center_momentum)
        metrics = {
            **losses.dino_monitor(
                student, teacher, center, student_temp=d.student_temp, teacher_temp=temp
            ),
            "center_norm": jnp.linalg.norm(new_center),
            "teacher_temp": temp,
            "teacher_momentum": momentum(t.count),
        }
        return loss, (batch_stats, {**method_state, "center": new_center}, metrics)

    return loss_fn


@pytest.mark.slow
def test_default_dino_step_is_bit_identical_to_before():
    """KoLeo and iBOT off (the default): two train steps of DINO == two steps with the
    loss as it was written before, every leaf and metric bit for bit; no mask token, no
    iBOT centre (the digits preset's BN head and ConvNet, at small widths)."""
    c = dino_config.get_config("digits")
    assert dino.koleo_weight(c) == 0.0 and dino.ibot_weight(c) == 0.0
    c = set_fields(
        c,
        **{
            "model.kwargs.widths": (8,),
            "augment.crop_size": 8,
            "augment.num_local_crops": 2,
            "dino.out_dim": 32,
            "dino.hidden_dim": 16,
            "dino.bottleneck_dim": 8,
            "batch_size": 8,
        },
    )
    model = dino.DINO.build_model(c)
    tx, lr = optim.make_optimizer(c, RUN.total_steps, RUN.steps_per_epoch)
    state = _state(dino.DINO, model, c, tx)
    assert set(state.method_state) == {"teacher", "center"}
    assert "mask_token" not in state.params["backbone"]
    before = dataclasses.replace(dino.DINO, make_loss=dino_loss_as_before)
    out = {}
    for name, method in (("now", dino.DINO), ("before", before)):
        step = jax.jit(
            functools.partial(
                train_step, method=method, model=model, tx=tx, schedule=lr, config=c, run=RUN
            )
        )
        s, m = step(state, _batch())
        s, m = step(s, _batch(seed=1))
        out[name] = jax.device_get((s, m))
    leaves_equal(out["now"], out["before"])


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", ["digits", "cifar10", "cifar10_folder", "stl10", "imagenet"])
def test_dinov2_presets(preset):
    from jssl import validation

    c = dino_config.get_config(f"{preset},dinov2")
    d = c.dino
    assert (d.koleo_weight, d.ibot_weight, d.ibot_mask_probability) == (0.1, 1.0, 0.5)
    assert tuple(d.ibot_mask_ratio) == (0.1, 0.5) and not d.ibot_separate_head
    assert c.model.name.startswith("vit")
    off = dino_config.get_config(preset).dino
    assert (off.koleo_weight, off.ibot_weight) == (0.0, 0.0)
    assert (d.centering, off.centering) == ("sinkhorn_knopp", "centre")
    if c.data.name in ("image_folder", "arrayrecord"):  # folder presets: a path is given
        c.data.path = "/data"
    assert validation.config_problems(c) == []
    if preset == "imagenet":  # DINOv2's ssl_default_config.yaml crops and momentum
        assert tuple(c.augment.scale) == (0.32, 1.0) and c.augment.num_local_crops == 8
        assert d.teacher_momentum == 0.992


# ----------------------------------------------------------------------------- masks


def test_ibot_masks_share_ratio_and_independence():
    num, n = 16, 4000
    masks = jax.jit(
        functools.partial(dino.ibot_masks, probability=0.5, ratio=(0.1, 0.5)),
        static_argnums=(1, 2, 3),
    )(jax.random.PRNGKey(0), n // 2, 2, num)
    m = np.asarray(masks).reshape(n, num)
    counts = m.sum(axis=1)
    masked = counts > 0
    # floor(16 r), r ~ U(0.1, 0.5): 1..7 patches (8 only at r = 0.5 exactly)
    assert set(np.unique(counts[masked])) == set(range(1, 8))
    assert counts.max() <= dino.max_masked(num, (0.1, 0.5)) == 8
    np.testing.assert_allclose(masked.mean(), 0.5, atol=0.03)  # mask_probability
    # E[floor(16 r)] = (0.4 * 1 + 2 + 3 + ... + 7) / 6.4 = 4.28 for 16 r ~ U(1.6, 8)
    np.testing.assert_allclose(counts[masked].mean(), 27.4 / 6.4, atol=0.1)
    # positions uniform and independent between images: each patch masked in 2/16 of them
    np.testing.assert_allclose(m.mean(axis=0), counts.mean() / num, atol=0.02)
    both = masked[:-2] & masked[2:]
    same = (m[:-2] == m[2:]).all(axis=1) & both
    assert same.sum() < 0.05 * both.sum()
    # the two global crops of an image are masked independently
    pairs = counts.reshape(n // 2, 2) > 0
    np.testing.assert_allclose((pairs[:, 0] & pairs[:, 1]).mean(), 0.25, atol=0.03)
    # jit == no jit; 3 images get the masks of the first 3 of the 2000 (each image's masks
    # come from its own key, split(key, B)[b], under jax_threefry_partitionable)
    with jax.disable_jit():
        eager = dino.ibot_masks(jax.random.PRNGKey(0), 3, 2, num, probability=0.5, ratio=(0.1, 0.5))
    np.testing.assert_array_equal(eager, np.asarray(masks)[:3])


def test_views_carry_masks_only_with_ibot():
    off = v2_config("digits,smoke")
    on = v2_config()
    batch = _batch()
    assert "mask" not in jit_views("dino", off)(jax.random.PRNGKey(0), batch)
    views = jit_views("dino", on)(jax.random.PRNGKey(0), batch)
    assert views["mask"].shape == (8, 2, 16) and views["mask"].dtype == jnp.bool_
    # the crops themselves come from the other half of the key: not DINO's crops of that key
    assert views["global"].shape == (8, 2, 16, 16, 1)


def test_masked_patches_puts_the_masked_ones_first():
    mask = jnp.array([[0, 1, 0, 1, 1, 0], [0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 1]], bool)
    index, valid = dino.masked_patches(mask, 3)
    np.testing.assert_array_equal(index[0], [1, 3, 4])
    np.testing.assert_array_equal(valid, [[1, 1, 1], [0, 0, 0], [1, 1, 0]])
    np.testing.assert_array_equal(index[2, :2], [0, 5])


# ----------------------------------------------------------------------------- the step


def _parts(**overrides):
    c = v2_config(**{"dino.head_use_bn": False, **overrides})
    c.batch_size = 8
    model = dino.DINO.build_model(c)
    variables = jit_init(model, jnp.zeros((1, 16, 16, 1)), train=False)
    ms = dino.init_method_state(variables["params"], {}, c, RUN)
    ms["ibot_center"] = jax.random.normal(jax.random.PRNGKey(7), ms["ibot_center"].shape)
    views = jit_views("dino", c)(jax.random.PRNGKey(3), _batch())
    return c, model, variables["params"], ms, views


def test_masked_student_is_blind_to_its_masked_pixels():
    c, model, params, _, views = _parts()
    x = views["global"][:, 0]
    mask = jnp.zeros((8, 16), bool).at[:, :6].set(True)  # the top row and a half: 4 px patches
    pixels = jnp.zeros((8, 16, 16, 1)).at[:, :4].set(1.0).at[:, 4:8, :8].set(1.0)
    noise = jax.random.uniform(jax.random.PRNGKey(9), x.shape)
    everything = jnp.broadcast_to(jnp.arange(16), (8, 16))

    def run(x, mask):
        return model.apply({"params": params}, x, everything, train=True, mask=mask,
                           method="tokens")  # fmt: skip

    student = run(x, mask)
    leaves_equal(run(jnp.where(pixels > 0, noise, x), mask), student)
    teacher = run(x, None)
    assert not np.allclose(run(jnp.where(pixels > 0, noise, x), None)[0], teacher[0])


@pytest.mark.parametrize("centering", ["centre", "sinkhorn_knopp"])
def test_ibot_and_koleo_terms_in_the_step_match_a_direct_computation(centering):
    c, model, params, ms, views = _parts(**{"dino.centering": centering})
    loss_fn = dino.make_loss(model, c, RUN)
    loss, (_, new_ms, metrics) = jax.jit(loss_fn)(params, {}, views, ms, 0, None)
    d = c.dino
    temp = dino.teacher_temp_schedule(c, RUN)(0)
    x = views["global"].reshape(16, 16, 16, 1)  # batch-major: image b, crop g at 2b + g
    mask = views["mask"].reshape(16, 16)
    every = jnp.broadcast_to(jnp.arange(16), (16, 16))

    def tokens(p, mask):
        return model.apply({"params": p}, x, every, train=True, mask=mask, method="tokens")

    _, student, h, _ = jax.jit(tokens)(params, mask)
    _, teacher, _, _ = jax.jit(tokens)(ms["teacher"].params, None)
    assert float(jnp.sum(mask)) > 0
    if centering == "centre":
        ibot = losses.ibot_patch_loss(
            student, teacher, mask, ms["ibot_center"], student_temp=d.student_temp,
            teacher_temp=temp,
        )  # fmt: skip
        center = 0.9 * ms["ibot_center"] + 0.1 * (
            jnp.sum(mask[..., None] * teacher, axis=(0, 1)) / jnp.sum(mask)
        )
        np.testing.assert_allclose(new_ms["ibot_center"], center, rtol=1e-5, atol=1e-6)
    else:
        # DINOv2: the masked patches of the whole batch balanced together, in float64.
        m = np.asarray(mask)
        targets = np.zeros(teacher.shape)
        targets[m] = np_sinkhorn(np.asarray(teacher, np.float64)[m], float(temp))
        log_p = np.asarray(jax.nn.log_softmax(student / d.student_temp), np.float64)
        ce = -np.sum(targets * log_p, axis=-1)
        ibot = np.mean(np.sum(ce * m, axis=1) / np.maximum(m.sum(axis=1), 1))
        leaves_equal(new_ms["ibot_center"], ms["ibot_center"])  # no centre with SK
        leaves_equal(new_ms["center"], ms["center"])
    np.testing.assert_allclose(metrics["ibot_loss"], ibot, rtol=1e-5)
    h = h.reshape(8, 2, -1)
    koleo = losses.koleo_loss(h[:, 0]) + losses.koleo_loss(h[:, 1])
    np.testing.assert_allclose(metrics["koleo"], koleo, rtol=1e-5)
    np.testing.assert_allclose(
        loss, metrics["dino_loss"] + 0.1 * metrics["koleo"] + 1.0 * metrics["ibot_loss"], rtol=1e-6
    )
    # no gradient to the teacher through either term
    grads = jax.jit(
        jax.grad(
            lambda tp: loss_fn(params, {}, views, {**ms, "teacher": ms["teacher"]._replace(
                params=tp)}, 0, None)[0]
        )
    )(ms["teacher"].params)  # fmt: skip
    assert not any(np.any(g) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_koleo_alone_and_a_separate_ibot_head():
    c = v2_config(**{"dino.ibot_weight": 0.0})
    model = dino.DINO.build_model(c)
    assert type(model).__name__ == "EncoderWithHead"  # no mask token without iBOT
    c, model, params, ms, views = _parts(**{"dino.ibot_separate_head": True,
                                            "dino.ibot_out_dim": 48})  # fmt: skip
    assert set(params) == {"backbone", "head", "ibot_head"}
    assert "mask_token" in params["backbone"] and ms["ibot_center"].shape == (48,)
    loss, (_, new_ms, metrics) = jax.jit(dino.make_loss(model, c, RUN))(
        params, {}, views, ms, 0, None
    )
    assert np.isfinite(loss) and np.isfinite(metrics["ibot_loss"])
    assert new_ms["ibot_center"].shape == (48,)


@pytest.mark.slow
def test_one_step_8_devices_equals_1():
    # The Sinkhorn-Knopp teacher (the dinov2 modifier's) balances the global batch. SGD:
    # Adam's first update is about lr * sign(g), and the ViT's key biases have a zero gradient
    # in exact arithmetic (softmax ignores a constant shift), so their rounding
    # noise, which depends on the reduction order, would move them by whole updates.
    small = {"dino.out_dim": 32, "dino.hidden_dim": 16, "dino.bottleneck_dim": 8}
    config = v2_config(
        **{"batch_size": 8, "augment.num_local_crops": 0, "optim.name": "sgd", **small}
    )
    metrics = assert_one_step_8_devices_equals_1(config).metrics
    for key in ("ibot_loss", "koleo", "dino_loss", "ibot_masked_share"):
        assert np.isfinite(metrics[key]), key


# ----------------------------------------------------------------------------- train.py


@run_tier("dinov2")
def test_train_py_smoke_learns(train_py_runs):
    run = train_py_runs["dinov2"]
    assert_finished(run)
    train = records(run.workdir)
    assert [r["step"] for r in train] == [4, 8, 12]
    for r in train:
        for key in ("dino_loss", "koleo", "ibot_loss", "ibot_masked_share", "ibot_center_norm"):
            assert np.isfinite(r[key]), key
    # On this machine: loss 8.06 -> 7.76 (KoLeo 3.67 -> 1.61, iBOT 3.04 -> 2.72).
    assert_fell(train, "loss", by=0.1)
    assert_fell(train, "ibot_loss", by=0.1)


@pytest.mark.slow
def test_exact_resume_with_the_ibot_centre(train_py_runs, tmp_path):
    run = train_py_runs["dinov2"]
    assert run.returncode == 0, run.stderr[-3000:]
    config = v2_config(**LONGER)
    first = trainer.train_and_evaluate(config, str(tmp_path), show_progress=False, stop_at_step=2)
    assert int(first["state"].step) == 2
    resumed = trainer.train_and_evaluate(
        config, str(tmp_path), show_progress=False, stop_at_step=4
    )["state"]
    # DINOv2's Sinkhorn-Knopp teacher: no centring, the centres stay at their start.
    assert not np.any(np.asarray(resumed.method_state["ibot_center"]))
    ckpt = Checkpointer(run.workdir)
    try:
        straight = ckpt.restore(resumed, step=4)
    finally:
        ckpt.close()
    leaves_equal(straight, resumed)
