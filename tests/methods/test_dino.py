"""DINO: loss and centre (golden values, numpy, 8 devices, jit), EMA teacher, schedules,
head, multi-crop, optimiser, collapse modes, train.py smoke run, exact resume, attention maps."""

import dataclasses
import functools
import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from configs import dino as dino_config
from jssl import augment, ema, losses, optim, schedules, sharding, trainer
from jssl.checkpoint import Checkpointer
from jssl.methods import RunInfo, dino
from jssl.models import DINOHead
from tests.helpers import (
    assert_fell,
    assert_finished,
    jit_init,
    records,
    set_fields,
    smoke_args,
)
from tests.report.pages import EVERY_RUN, assert_images_decode, make, sections

# A 10-step run of 5 steps per epoch (the schedules' length in the step tests).
RUN = RunInfo(total_steps=10, steps_per_epoch=5, num_examples=80)

LN2 = math.log(2.0)

# The smoke run (started at the session's start: see conftest.py), at a learning rate
# (x 32 / 256) at which its four steps visibly lower the loss; the resume test builds the
# same config in this process.
SMOKE_FIELDS = {"eval.untrained": False, "optim.learning_rate": 0.02}
TRAIN_PY_RUNS = {"dino": smoke_args("dino", "--config.optim.learning_rate=0.02")}


# ----------------------------------------------------------------------------- loss


def _logits(probs, temp, shift=0.0):
    """Logits z with softmax((z - shift) / temp) = ``probs``."""
    return temp * np.log(np.asarray(probs, np.float64)) + shift


def test_dino_loss_hand_computed():
    # q = A, B, C below are the teacher's distributions after centring and
    # sharpening; p the student's. -log p is ln2 * (1 or 2), so
    # CE(q, A) = ln2 (2 - q_0), CE(q, B) = ln2 (2 - q_1), CE(q, C) = ln2 (2 - q_2).
    a, b, c = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]
    center = np.array([1.0, 2.0, 3.0])
    # Teacher crops t0: (A, B) for examples (n0, n1); t1: (B, C).
    teacher = np.stack([_logits([a, b], 0.5, center), _logits([b, c], 0.5, center)])
    # Student crops s0: (A, A), s1: (B, B) (the globals), s2: (C, C), s3: (A, C) (locals).
    student = np.stack(
        [_logits([a, a], 2.0), _logits([b, b], 2.0), _logits([c, c], 2.0), _logits([a, c], 2.0)]
    )
    # Pairs s != t, each the mean over n0, n1 of ln2 * (2 - q[index of p]):
    # (t0,s1): (1.75 + 1.5)/2 = 1.625   (t0,s2): (1.75 + 1.75)/2 = 1.75
    # (t0,s3): (1.5 + 1.75)/2 = 1.625   (t1,s0): (1.75 + 1.75)/2 = 1.75
    # (t1,s2): (1.75 + 1.5)/2 = 1.625   (t1,s3): (1.75 + 1.5)/2 = 1.625
    # mean = 10 / 6 = 5/3 (with the s == t pairs, 1.625 each, it would be 13.25 / 8).
    expected = 5.0 / 3.0 * LN2
    loss = losses.dino_loss(
        jnp.asarray(student, jnp.float32),
        jnp.asarray(teacher, jnp.float32),
        jnp.asarray(center, jnp.float32),
        student_temp=2.0,
        teacher_temp=0.5,
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    # update_center: 0.9 * [1, 2, 3] + 0.1 * mean over the 2 crops x 2 examples.
    new = losses.update_center(jnp.asarray(center), jnp.asarray(teacher), momentum=0.9)
    np.testing.assert_allclose(new, 0.9 * center + 0.1 * teacher.mean(axis=(0, 1)), rtol=1e-6)


def numpy_dino_loss(student, teacher, center, student_temp, teacher_temp):
    """DINO's reference loop (main_dino.DINOLoss), in float64 numpy."""

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    total, terms = 0.0, 0
    for iq in range(teacher.shape[0]):
        q = softmax((teacher[iq] - center) / teacher_temp)
        for v in range(student.shape[0]):
            if v == iq:
                continue
            total += np.mean(np.sum(-q * log_softmax(student[v] / student_temp), axis=-1))
            terms += 1
    return total / terms


def random_logits(seed=0, s=8, t=2, n=16, k=64):
    rng = np.random.default_rng(seed)
    student = rng.normal(size=(s, n, k)).astype(np.float32)
    teacher = rng.normal(size=(t, n, k)).astype(np.float32)
    center = (0.1 * rng.normal(size=(k,))).astype(np.float32)
    return student, teacher, center


def test_dino_loss_matches_numpy():
    student, teacher, center = random_logits()
    expected = numpy_dino_loss(
        student.astype(np.float64), teacher.astype(np.float64), center.astype(np.float64), 0.1, 0.04
    )
    loss = losses.dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # bf16 logits are computed in float32.
    assert (
        losses.dino_loss(
            student.astype(jnp.bfloat16), teacher, center, student_temp=0.1, teacher_temp=0.04
        ).dtype
        == jnp.float32
    )


def test_dino_loss_jit_and_8_devices_equal_eager_1_device():
    student, teacher, center = random_logits(1)

    def f(student, teacher, center):
        kw = dict(student_temp=0.1, teacher_temp=0.04)
        return (
            losses.dino_loss(student, teacher, center, **kw),
            losses.update_center(center, teacher, momentum=0.9),
            losses.dino_monitor(student, teacher, center, **kw),
        )

    eager = f(student, teacher, center)
    with jax.default_device(jax.devices()[0]):
        jitted = jax.jit(f)(student, teacher, center)
    mesh = sharding.make_mesh(jax.devices())
    assert mesh.devices.size == 8
    batch = NamedSharding(mesh, PartitionSpec(None, "data", None))  # N split 8 ways
    sharded = jax.jit(f)(
        jax.device_put(student, batch),
        jax.device_put(teacher, batch),
        jax.device_put(center, sharding.replicated(mesh)),
    )
    # Float32 tolerance: XLA:CPU fuses and orders the sums as it compiles (2.5e-6 apart in
    # the student's entropy without YNNPACK fusions).
    chex.assert_trees_all_close(eager, jitted, rtol=1e-5)
    chex.assert_trees_all_close(eager, sharded, rtol=1e-5, atol=1e-6)


def test_teacher_side_has_no_gradient():
    student, teacher, center = random_logits(2)
    kw = dict(student_temp=0.1, teacher_temp=0.04)
    g_t, g_c = jax.grad(lambda t, c: losses.dino_loss(student, t, c, **kw), argnums=(0, 1))(
        teacher, center
    )
    assert not np.any(g_t) and not np.any(g_c)
    assert np.any(jax.grad(lambda s: losses.dino_loss(s, teacher, center, **kw))(student))


def test_monitor_extremes():
    k = 16
    uniform = jnp.zeros((2, 4, k))
    m = losses.dino_monitor(uniform, uniform, jnp.zeros(k), student_temp=0.1, teacher_temp=0.04)
    np.testing.assert_allclose(m["teacher_entropy"], math.log(k), rtol=1e-6)
    np.testing.assert_allclose(m["kl"], 0.0, atol=1e-6)
    one_hot = 100.0 * jax.nn.one_hot(jnp.zeros((2, 4), int), k)  # every example on dim 0
    m = losses.dino_monitor(one_hot, one_hot, jnp.zeros(k), student_temp=0.1, teacher_temp=0.04)
    assert m["teacher_entropy"] < 1e-6 and m["teacher_batch_entropy"] < 1e-6


def _self_distill(teacher_temp, student_temp, center_momentum, steps=500):
    """A controlled DINO: linear student z = x W + b on fixed inputs x [64, 8], K = 16.

    The two "crops" of x_n add independent noise as large as the signal, so
    the per-input targets are unreliable and only the shared bias b is a
    consistent direction; the teacher is the EMA (0.9) of the student. A
    centre momentum of 1 keeps the centre at 0 (no centring). The arguments
    are arrays over cases (one compiled, vmapped program for all of them).

    Returns (teacher entropy, batch-mean teacher entropy) at the start and at
    the end, each [cases], in nats.
    """
    n, d, k = 64, 8, 16
    kx, kw = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, (n, d))
    params = {"w": jax.random.normal(kw, (d, k)) / math.sqrt(d), "b": jnp.zeros(k)}
    teach = ema.ema_teacher(0.9)
    tx = optax.sgd(0.1)
    keys = jax.random.split(jax.random.PRNGKey(1), steps)

    def forward(p, key):
        return (x[None] + jax.random.normal(key, (2, n, d))) @ p["w"] + p["b"]  # [2, N, K]

    def case(teacher_temp, student_temp, center_momentum):
        kw_loss = dict(student_temp=student_temp, teacher_temp=teacher_temp)

        def monitor(p, center):
            z = forward(p, jax.random.PRNGKey(2))
            m = losses.dino_monitor(z, z, center, **kw_loss)
            return m["teacher_entropy"], m["teacher_batch_entropy"]

        def step(carry, key):
            params, opt_state, t_state, center = carry
            t_logits = forward(t_state.params, key)
            loss_fn = lambda p: losses.dino_loss(forward(p, key), t_logits, center, **kw_loss)
            updates, opt_state = tx.update(jax.grad(loss_fn)(params), opt_state)
            params = optax.apply_updates(params, updates)
            center = losses.update_center(center, t_logits, momentum=center_momentum)
            return (params, opt_state, teach.update(params, t_state), center), None

        init = (params, tx.init(params), teach.init(params), jnp.zeros(k))
        (_, _, t_state, center), _ = jax.lax.scan(step, init, keys)
        return monitor(params, jnp.zeros(k)), monitor(t_state.params, center)

    args = [jnp.asarray(a, jnp.float32) for a in (teacher_temp, student_temp, center_momentum)]
    return jax.device_get(jax.jit(jax.vmap(case))(*args))


def test_centring_and_sharpening_each_prevent_one_collapse():
    # Cases: sharpening only; centring only (teacher_temp = student_temp, large); both.
    (h0, hb0), (h, hb) = _self_distill([0.04, 1.0, 0.04], [0.1, 1.0, 0.1], [1.0, 0.9, 0.9])
    log_k = math.log(16)
    summary = dict(start=(h0, hb0), end=(h, hb))
    # Sharpening without centring: from spread-out outputs to every input on one dimension.
    assert hb0[0] > 0.8 * log_k and hb[0] < 0.05 * log_k and h[0] < 0.05 * log_k, summary
    # Centring without sharpening: to uniform outputs.
    assert h0[1] < 0.8 * log_k and h[1] > 0.99 * log_k, summary
    # Both: confident for each input, spread over dimensions across the batch.
    assert h[2] < 0.5 * log_k and hb[2] > 0.7 * log_k, summary


# ----------------------------------------------------------------------------- EMA and schedules


def test_ema_two_steps_closed_form():
    s0, s1, s2 = (
        {"w": jnp.array([1.0, -2.0])},
        {"w": jnp.array([2.0, 0.0])},
        {"w": jnp.array([4.0, 4.0])},
    )
    bs0, bs1, bs2 = (
        {"mean": jnp.array([0.0])},
        {"mean": jnp.array([1.0])},
        {"mean": jnp.array([3.0])},
    )
    teach = ema.ema_teacher(0.5)
    state = teach.init(s0, bs0)
    state = teach.update(s1, state, bs1)
    state = teach.update(s2, state, bs2)
    # t1 = 0.5 s0 + 0.5 s1 = (1.5, -1); t2 = 0.5 t1 + 0.5 s2 = (2.75, 1.5).
    np.testing.assert_array_equal(state.params["w"], [2.75, 1.5])
    # Batch statistics follow the same EMA: 0.5 * (0.5 * 0 + 0.5 * 1) + 0.5 * 3 = 1.75.
    np.testing.assert_array_equal(state.batch_stats["mean"], [1.75])
    assert int(state.count) == 2

    # With a schedule, update n uses momentum(n).
    sched = schedules.bind(schedules.teacher_momentum, total_steps=4, base=0.5, final=1.0)
    m0, m1 = float(sched(0)), float(sched(1))
    assert m0 == 0.5
    np.testing.assert_allclose(m1, 0.75 - 0.25 * math.cos(math.pi / 4), rtol=1e-6)
    state = ema.ema_teacher(sched).init(s0)
    state = ema.ema_teacher(sched).update(s1, state)
    state = jax.jit(ema.ema_teacher(sched).update)(s2, state)
    t1 = m0 * np.array([1.0, -2.0]) + (1 - m0) * np.array([2.0, 0.0])
    np.testing.assert_allclose(
        state.params["w"], m1 * t1 + (1 - m1) * np.array([4.0, 4.0]), rtol=1e-6
    )
    assert state.batch_stats == {}


def test_ema_momentum_one_keeps_teacher_zero_copies_student():
    rng = np.random.default_rng(0)
    teacher = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    student = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    state = ema.EmaTeacherState(jnp.zeros((), jnp.int32), teacher, {})
    np.testing.assert_array_equal(
        ema.ema_teacher(1.0).update(student, state).params["a"], teacher["a"]
    )
    np.testing.assert_array_equal(
        ema.ema_teacher(0.0).update(student, state).params["a"], student["a"]
    )


def test_ema_teacher_gets_no_gradient():
    teach = ema.ema_teacher(0.9)
    state = teach.init({"w": jnp.ones(3)})
    grad = jax.grad(lambda s: jnp.sum(teach.update({"w": s}, state).params["w"]))(jnp.ones(3))
    np.testing.assert_array_equal(grad, 0.0)


def test_schedule_endpoints_are_exact():
    total = 100
    assert float(schedules.teacher_momentum(0, total_steps=total)) == np.float32(0.996)
    assert float(schedules.teacher_momentum(total, total_steps=total)) == 1.0
    assert float(schedules.teacher_momentum(10 * total, total_steps=total)) == 1.0
    assert 0.996 < float(schedules.teacher_momentum(total // 2, total_steps=total)) < 1.0
    temp = schedules.bind(schedules.teacher_temperature, warmup_steps=30)
    assert float(temp(0)) == np.float32(0.04)
    np.testing.assert_allclose(float(temp(15)), 0.055, rtol=1e-6)
    assert float(temp(30)) == np.float32(0.07) and float(temp(1000)) == np.float32(0.07)
    assert float(schedules.weight_decay(0, total_steps=total)) == np.float32(0.04)
    assert float(schedules.weight_decay(total, total_steps=total)) == np.float32(0.4)
    lr = schedules.bind(
        schedules.warmup_cosine, peak=1e-3, warmup_steps=10, total_steps=total, end=1e-6
    )
    assert float(lr(0)) == 0.0 and float(lr(5)) == np.float32(5e-4)
    assert float(lr(10)) == np.float32(1e-3) and float(lr(total)) == np.float32(1e-6)
    # Traced steps work (the schedules run inside the jitted step).
    np.testing.assert_allclose(jax.jit(lr)(jnp.int32(55)), lr(55), rtol=1e-6)


# ------------------------------------------------------------------------- head, crops, optimiser


def test_dino_head_weight_norm_and_options():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 12))
    head = DINOHead(out_dim=10, hidden_dim=16, bottleneck_dim=8)
    params = jit_init(head, x, train=False)["params"]
    assert set(params) == {"Dense_0", "Dense_1", "Dense_2", "last_layer"}
    assert set(params["last_layer"]) == {"kernel"}  # g fixed to 1: not a parameter
    apply = jax.jit(lambda p: head.apply({"params": p}, x, train=False))
    z = apply(params)
    chex.assert_shape(z, (5, 10))
    # Unit bottleneck times unit-norm columns: cosines in [-1, 1]; scaling v changes nothing.
    assert np.all(np.abs(z) <= 1.0 + 1e-6)
    scaled = {**params, "last_layer": {"kernel": 7.0 * params["last_layer"]["kernel"]}}
    np.testing.assert_allclose(apply(scaled), z, rtol=1e-5, atol=1e-6)

    free = DINOHead(
        out_dim=10, hidden_dim=16, bottleneck_dim=8, num_layers=1, norm_last_layer=False
    )
    p = jax.eval_shape(lambda: free.init(jax.random.PRNGKey(1), x, train=False))["params"]
    assert set(p) == {"Dense_0", "last_layer"} and p["last_layer"]["scale"].shape == (10,)


def test_freeze_last_layer_zeroes_its_gradient():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
    head = DINOHead(out_dim=5, hidden_dim=8, bottleneck_dim=4, num_layers=2)
    params = jit_init(head, x, train=False)["params"]

    def grads(frozen):
        f = lambda p: jnp.sum(
            head.apply({"params": dino.freeze_last_layer(p, frozen)}, x, train=False) ** 2
        )
        return jax.jit(jax.grad(f))(params)

    frozen, free = grads(jnp.array(True)), grads(jnp.array(False))
    assert not np.any(frozen["last_layer"]["kernel"]) and np.any(free["last_layer"]["kernel"])
    chex.assert_trees_all_equal(frozen["Dense_0"], free["Dense_0"])


def test_multi_crop_shapes_and_range():
    # C=1 (digits) with DINO's default policy; C=3 is covered by the next test.
    images = jax.random.randint(jax.random.PRNGKey(0), (4, 12, 12, 1), 0, 256).astype(jnp.uint8)
    crops = jax.jit(
        functools.partial(augment.multi_crop, global_size=16, local_size=8, num_local=3)
    )
    g, local = crops(jax.random.PRNGKey(1), images)
    chex.assert_shape(g, (4, 2, 16, 16, 1))
    chex.assert_shape(local, (4, 3, 8, 8, 1))
    assert g.dtype == jnp.float32 and 0.0 <= float(g.min()) and float(g.max()) <= 1.0
    assert not np.allclose(g[:, 0], g[:, 1])  # different crops


def test_solarize_and_blur_probabilities_per_global_crop():
    # Crop 1 always blurred, never solarised; crop 2 always solarised: an all-white
    # image stays white in crop 1 and becomes black in crop 2.
    white = jnp.full((8, 10, 10, 3), 255, jnp.uint8)
    crops = functools.partial(
        augment.multi_crop, global_size=8, local_size=4, num_local=0,
        global_blur_p=(1.0, 0.0), global_solarize_p=(0.0, 1.0), jitter_p=0.0,
    )  # fmt: skip
    g, local = jax.jit(crops)(jax.random.PRNGKey(0), white)
    assert local is None
    np.testing.assert_allclose(g[:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(g[:, 1], 0.0, atol=1e-6)


def test_dino_optimizer_weight_decay_schedule_and_clipping():
    c = dino_config.get_config("digits")
    c.optim.learning_rate, c.batch_size, c.optim.warmup_epochs = 0.1, 256, 0.0
    c.optim.grad_clip = 3.0
    tx, lr = optim.make_optimizer(c, total_steps=10, steps_per_epoch=5)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    state = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    # Zero gradients: the update is -lr * wd(step) * p on decayed leaves only.
    updates, state = tx.update(zero, state, params)
    np.testing.assert_allclose(updates["kernel"], -float(lr(0)) * 0.04, rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)
    for _ in range(9):
        updates, state = tx.update(zero, state, params)
    np.testing.assert_allclose(
        updates["kernel"],
        -float(lr(9)) * float(schedules.weight_decay(9, total_steps=10, final=0.4)),
        rtol=1e-5,
    )
    # Per-tensor clipping (DINO's clip_gradients): each leaf's norm is clipped separately.
    g = {"kernel": jnp.full((2, 2), 5.0), "bias": jnp.array([0.3, 0.4])}
    clipped, _ = optim.clip_by_leaf_norm(3.0).update(g, optax.EmptyState())
    np.testing.assert_allclose(jnp.linalg.norm(clipped["kernel"]), 3.0, rtol=1e-5)
    np.testing.assert_array_equal(clipped["bias"], g["bias"])


def test_collapse_warnings():
    c = dino_config.get_config("digits")
    log_k = math.log(c.dino.out_dim)
    healthy = {"loss": 2.0, "teacher_entropy": 1.0, "teacher_batch_entropy": 0.8 * log_k}
    assert dino.collapse_warnings(healthy, c) == []
    uniform = {"loss": log_k, "teacher_entropy": log_k, "teacher_batch_entropy": log_k}
    assert len(dino.collapse_warnings(uniform, c)) == 2
    constant = {"loss": 0.0, "teacher_entropy": 0.0, "teacher_batch_entropy": 0.0}
    (warning,) = dino.collapse_warnings(constant, c)
    assert "constant" in warning


@pytest.mark.parametrize("preset", ["digits", "cifar10", "cifar10_folder", "stl10", "imagenet"])
def test_configs(preset):
    c = dino_config.get_config(preset)
    smoke = dino_config.get_config(f"{preset},smoke")
    assert c.method == smoke.method == "dino" and smoke.num_steps == 4
    assert "strength" not in c.augment and "blur_p" not in c.augment
    if preset == "imagenet":
        assert c.model.name == "vit_small" and c.model.kwargs.patch_size == 16
        assert (c.augment.crop_size, c.augment.local_crop_size) == (224, 96)
        assert (c.augment.num_global_crops, c.augment.num_local_crops) == (2, 10)
        assert (
            c.dino.out_dim == 65536
            and c.optim.learning_rate == 5e-4
            and c.optim.name == "dino_adamw"
        )


# ----------------------------------------------------------------------------- the train step


def _fixed_views(key, batch, config):
    """Deterministic stand-in for multi-crop (its sharding invariance is tested in
    test_augment/test_train): 2 globals at 16 px, 2 locals at 8 px."""
    del key
    x = augment.to_float(batch["image"])  # [B, 8, 8, 1]
    g = jax.image.resize(x, (x.shape[0], 16, 16, x.shape[-1]), "linear")
    return {"global": jnp.stack([g, 1.0 - g], axis=1), "local": jnp.stack([x, x[:, ::-1]], axis=1)}


def _step_config():
    c = dino_config.get_config("digits,smoke")
    c.model.name = "convnet"  # BatchNorm: the teacher's statistics follow the EMA too
    c.model.kwargs = ml_collections.ConfigDict({"widths": (8,)})
    c.dino.hidden_dim, c.dino.bottleneck_dim, c.dino.out_dim = 16, 8, 32
    c.batch_size = 16
    c.dino.freeze_last_layer_epochs = 1.0
    return c


def test_step_8_devices_equals_1_device_and_teacher_follows_ema():
    from jssl.train_step import TrainState, train_step

    c = _step_config()
    method = dataclasses.replace(dino.DINO, make_views=_fixed_views)
    model = method.build_model(c)
    tx, lr = optim.make_optimizer(c, 10, 5)
    images = np.asarray(jax.random.randint(jax.random.PRNGKey(0), (16, 8, 8, 1), 0, 256), np.uint8)
    variables = jit_init(model, jnp.zeros((1, 16, 16, 1)), train=False)
    state0 = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        method_state=method.init_method_state(
            variables["params"], variables["batch_stats"], c, RUN
        ),
        rng=jax.random.PRNGKey(1),
        nonfinite_steps=jnp.zeros((), jnp.int32),
    )
    step = functools.partial(
        train_step, method=method, model=model, tx=tx, schedule=lr, config=c, run=RUN
    )
    results = {}
    for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
        mesh = sharding.make_mesh(devices)
        batch = sharding.put_global_batch(
            {"image": images, "index": np.arange(16, dtype=np.int32)}, mesh
        )
        state = sharding.replicate(state0, mesh)
        # Two steps, so that the second uses the first's centre and teacher.
        run = jax.jit(step, in_shardings=(sharding.replicated(mesh), sharding.data_sharded(mesh)))
        state, _ = run(state, batch)
        state, metrics = run(state, batch)
        results[name] = jax.device_get((state, metrics))
    # Each device keeps its own images' activations: the centre's batch mean and the loss
    # over crops sum across devices, nothing gathers the batch onto every device.
    assert "all-gather" not in run.lower(state, batch).compile().as_text()
    (one, m1), (eight, m8) = results["one"], results["eight"]
    assert float(m1["finite"]) == 1.0
    chex.assert_trees_all_close(m1, m8, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(
        (one.params, one.batch_stats, one.method_state),
        (eight.params, eight.batch_stats, eight.method_state),
        rtol=1e-5,
        atol=1e-5,
    )
    for key in (
        "teacher_entropy",
        "teacher_batch_entropy",
        "kl",
        "center_norm",
        "teacher_momentum",
        "teacher_temp",
    ):
        assert key in m1, key
    teacher = one.method_state["teacher"]
    assert int(teacher.count) == 2 and np.any(one.method_state["center"])

    # The teacher moved towards the student, by 1 - momentum per step, in params and BN statistics.
    def moved(t, s0):
        return not np.allclose(t, s0)

    assert any(jax.tree.leaves(jax.tree.map(moved, teacher.params, state0.params)))
    assert any(jax.tree.leaves(jax.tree.map(moved, teacher.batch_stats, state0.batch_stats)))
    # The last layer is frozen in epoch 1 (steps 0-4): its directions did not move.
    unit = lambda v: v / np.linalg.norm(v, axis=0, keepdims=True)
    np.testing.assert_allclose(
        unit(one.params["head"]["last_layer"]["kernel"]),
        unit(state0.params["head"]["last_layer"]["kernel"]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_loss_gives_no_gradient_to_the_teacher():
    c = _step_config()
    method = dino.DINO
    model = method.build_model(c)
    variables = jit_init(model, jnp.zeros((1, 16, 16, 1)), train=False)
    ms = method.init_method_state(variables["params"], variables["batch_stats"], c, RUN)
    images = jnp.zeros((4, 8, 8, 1), jnp.uint8).at[:, 2:6, 3:5].set(255)
    views = _fixed_views(None, {"image": images}, c)
    loss_fn = method.make_loss(model, c, RUN)

    def loss_of_teacher(tp):
        state = {**ms, "teacher": ms["teacher"]._replace(params=tp)}
        return loss_fn(variables["params"], variables["batch_stats"], views, state, 0, None)[0]

    grads = jax.jit(jax.grad(loss_of_teacher))(ms["teacher"].params)
    assert not any(np.any(g) for g in jax.tree.leaves(grads))


# --------------------------------------------------------------------- train.py, resume, pictures


def test_train_py_smoke(train_py_runs):
    run = train_py_runs["dino"]
    assert_finished(run)
    assert "clustering ACC" in run.stdout
    assert sorted(os.listdir(os.path.join(run.workdir, "checkpoints"))) == ["2", "4"]
    train = records(run.workdir)
    assert [r["step"] for r in train] == [2, 4]
    for r in train:
        for key in ("loss", "teacher_entropy", "teacher_batch_entropy", "kl", "center_norm"):
            assert np.isfinite(r[key]), key
    # lr 1e-9: the loss rises from 6.21 to 6.38 (the centre and the teacher move); here it
    # falls from 5.94 to 5.51.
    assert_fell(train, "loss", by=0.2)
    saved = json.load(open(os.path.join(run.workdir, "config.json")))
    assert saved["method"] == "dino" and saved["model"]["name"] == "vit_tiny"


def test_exact_resume_of_teacher_and_centre(train_py_runs, tmp_path):
    run = train_py_runs["dino"]
    straight_dir = run.workdir
    assert run.returncode == 0, run.stderr[-3000:]
    config = set_fields(dino_config.get_config("digits,smoke"), **SMOKE_FIELDS)  # as train.py's
    interrupted = trainer.train_and_evaluate(
        config, str(tmp_path), show_progress=False, stop_at_step=2
    )
    assert int(interrupted["state"].step) == 2 and interrupted["eval"] is None
    resumed = trainer.train_and_evaluate(config, str(tmp_path), show_progress=False)["state"]
    ckpt = Checkpointer(straight_dir)
    try:
        straight = ckpt.restore(resumed, step=4)
    finally:
        ckpt.close()
    assert int(resumed.step) == int(straight.step) == 4
    teacher = resumed.method_state["teacher"]
    assert int(teacher.count) == 4 and np.any(np.asarray(resumed.method_state["center"]))
    # Every leaf bit for bit: teacher, centre, EMA count, student, optimiser (schedules' counts).
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_attention_picture(train_py_runs, tmp_path):
    from PIL import Image

    from jssl import visualize

    run = train_py_runs["dino"]
    workdir = run.workdir
    assert run.returncode == 0, run.stderr[-3000:]
    out = str(tmp_path / "attention.png")
    assert (
        visualize.main(
            ["attention", "--workdir", workdir, "--images", "3", "--out", out, "--cell", "32"]
        )
        == 0
    )
    picture = np.asarray(Image.open(out))
    heads = 2  # the smoke ViT
    assert picture.shape == (3 * 34 + 2, (1 + heads) * 34 + 2, 3)
    # Maps are min-max scaled per head: each spans the colour ramp.
    assert picture.std() > 10
    assert visualize.main(["attention", "--workdir", str(tmp_path / "nothing")]) == 1


@pytest.mark.slow  # the report's sections: test_report.py's SimCLR run; the attention picture above
def test_dino_report_has_attention_maps_and_a_tsne_map(train_py_runs, tmp_path):
    run = train_py_runs["dino"]
    assert run.returncode == 0, run.stderr[-3000:]
    folder, page = make([run.workdir], tmp_path, "--map", "tsne")
    assert sections(page) == [*EVERY_RUN, "method"]
    srcs = assert_images_decode(folder, page)
    assert "attention.png" in srcs
    assert "(teacher, features)" in page or "teacher" in page  # DINO's kNN network
    assert "t-SNE (perplexity" in page
    assert "No evaluation during training" in page  # every_steps = 0
