"""MoCo v2, MoCo v3, NNCLR and SwAV: train.py smoke runs that learn, 8 devices == 1, exact
resume (queues, momentum encoders, prototypes included), the queues' FIFO by hand, MoCo v3's
momentum encoder, SwAV's prototypes (unit norm, frozen), the collapse monitors, the presets."""

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, trainer
from jssl.methods import METHODS, parts
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

NAMES = ("mocov2", "mocov3", "nnclr", "swav")
# A one-stage ConvNet on the tiny helpers' 8 px crops; the smoke heads are 16-32 wide and the
# smoke queues hold 64 rows (two batches of 32; SwAV's fills from step 0).
WIDTHS, LONGER = ONE_STAGE, LEARNING_RUN
RUNS = {
    "mocov3": {**WIDTHS, **LONGER},
    "nnclr": {**WIDTHS, **LONGER},
    # lr 1e-2 takes the tiny SwAV to uniform predictions (loss at ln K) within 24 steps.
    "swav": {**WIDTHS, **LONGER, "optim.learning_rate": 2e-3},
    # MoCo v2's key encoder (m = 0.99) and queue lag the query encoder: with the one-stage
    # ConvNet its loss stays at ln(Q + 1) for the first hundred steps. The digits preset's
    # network (on 8 px crops) learns within 48 steps.
    "mocov2": {
        **LONGER,
        "model.kwargs.widths": (32, 64, 128),
        "mocov2.proj_hidden_dims": (128,),
        "mocov2.proj_dim": 64,
        "num_steps": 48,
        "log_every": 8,
        "optim.learning_rate": 2e-3,
    },
}
TRAIN_PY_RUNS = {name: smoke_args(name, *tiny_flags(**RUNS[name])) for name in NAMES}
SLOW_RUNS = slow_runs(*NAMES)
LOGGED = {
    "mocov2": ("q_std", "k_std", "h_std", "positive_cosine", "contrastive_top1", "key_momentum"),
    "mocov3": ("q_std", "z_std", "k_std", "h_std", "key_momentum"),
    "nnclr": ("z_std", "p_std", "h_std", "nn_cosine"),
    "swav": ("code_entropy", "swap_top1", "z_std", "h_std", "queue_used", "prototypes_frozen"),
}


def smoke_config(name, **overrides):
    """The config of TRAIN_PY_RUNS[name] (what train.py runs), with ``overrides``."""
    return tiny_config(name, **RUNS[name], **overrides)


# The one-step tests' config: the smoke preset (lr 2e-3 x 32 / 256) with the one-stage
# ConvNet; SwAV's prototypes frozen for steps 0-1 and its queue filled from step 1 on
# (44 steps an epoch).
STEP_FIELDS = {
    **WIDTHS,
    "swav.freeze_prototypes_epochs": 2 / 44,
    "swav.queue_start_epochs": 1 / 44,
}


def step_config(name):
    fields = {k: v for k, v in STEP_FIELDS.items() if k.split(".")[0] in (name, "model")}
    return tiny_config(name, **fields)


def _views(exp, state, batch):
    """The views the step of ``state`` makes of ``batch`` (the train step's key split)."""
    view_key, _ = jax.random.split(jax.random.fold_in(state.rng, state.step))
    return exp.method.make_views(view_key, batch, exp.config)


def _apply_train(model, params, batch_stats, x):
    (out, aux), _ = model.apply(
        {"params": params, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    return out, aux


# ----------------------------------------------------------------------------- the FIFO


def test_enqueue_by_hand():
    """Rows of step s land at [ptr, ptr + B) mod Q; the pointer wraps (Q = 5, B = 2)."""
    queue = jnp.zeros((5, 1))
    ptr = jnp.zeros((), jnp.int32)
    written = []
    for s in range(4):
        rows = jnp.full((2, 1), float(s + 1))
        queue, ptr = parts.enqueue(queue, ptr, rows)
        written.append((np.asarray(queue)[:, 0].tolist(), int(ptr)))
    assert written == [
        ([1, 1, 0, 0, 0], 2),
        ([1, 1, 2, 2, 0], 4),
        ([3, 1, 2, 2, 3], 1),  # wrapped: rows 4 and 0
        ([3, 4, 4, 2, 3], 3),
    ]
    # Leading axes (one queue per view) share the pointer; no gradient reaches the rows.
    two, ptr = parts.enqueue(jnp.zeros((2, 4, 3)), jnp.int32(3), jnp.ones((2, 2, 3)))
    assert int(ptr) == 1 and np.asarray(two)[:, [3, 0]].all() and not np.asarray(two)[:, 1:3].any()
    grad = jax.grad(lambda r: jnp.sum(parts.enqueue(jnp.zeros((4, 3)), 0, r)[0]))(jnp.ones((2, 3)))
    assert not np.any(grad)
    with pytest.raises(ValueError, match="must hold"):
        parts.enqueue(jnp.zeros((2, 3)), 0, jnp.ones((3, 3)))


# ----------------------------------------------------------------------------- monitors, presets


@pytest.mark.parametrize("name", NAMES)
def test_collapse_warnings(name):
    config = tiny_config(name)
    warn = METHODS[name].collapse_warnings
    key = "q_std" if name.startswith("moco") else "z_std"
    healthy = {"loss": 1.0, key: 0.2, "code_entropy": 0.5}
    assert warn(healthy, config) == []
    assert any("collapsing" in w for w in warn({**healthy, key: 1e-4}, config))
    if name == "swav":
        log_k = math.log(config.swav.num_prototypes)
        assert any("ln(K)" in w for w in warn({**healthy, "loss": log_k}, config))
        (w,) = warn({**healthy, "code_entropy": 0.99 * log_k}, config)
        assert "uniform code" in w


@pytest.mark.parametrize("name", NAMES)
def test_presets_build(name):
    """Every preset loads and builds; the ImageNet ones carry the papers' sizes."""
    module = importlib.import_module(f"configs.{name}")
    for preset in ("digits", "cifar10", "cifar10_folder", "stl10", "imagenet", "digits,smoke"):
        c = module.get_config(preset)
        assert c.method == name and name in c
        METHODS[name].build_model(c)
        queue = c[name].get("queue_size", 0)
        assert queue == 0 or queue >= c.batch_size, preset
    b = module.get_config("imagenet")[name]
    expected = {
        "mocov2": lambda: (
            (b.queue_size, b.temperature, b.momentum, b.proj_dim),
            (65536, 0.2, 0.999, 128),
        ),
        "mocov3": lambda: (
            (b.temperature, b.momentum, b.proj_dim, tuple(b.proj_hidden_dims)),
            (1.0, 0.99, 256, (4096,)),
        ),
        "nnclr": lambda: ((b.queue_size, b.temperature, b.proj_dim), (98304, 0.1, 256)),
        "swav": lambda: (
            (b.num_prototypes, b.temperature, b.epsilon, b.proj_dim),
            (3000, 0.1, 0.05, 128),
        ),
    }[name]()
    assert expected[0] == expected[1]


def test_queue_smaller_than_the_batch_is_refused():
    config = tiny_config("mocov2", **{"mocov2.queue_size": 16})
    with pytest.raises(ValueError, match="queue_size=16 is smaller than the global batch"):
        METHODS["mocov2"].build_model(config)


def _expected_rows(name, exp, state, batch):
    """What the step of ``state`` must enqueue, computed here from its views and networks:
    MoCo v2 the key encoder's unit keys of view 2 ([1, B, D]), NNCLR the unit projections of
    view 1 ([B, D]), SwAV the unit embeddings of each global crop ([G, B, D])."""
    views = _views(exp, state, batch)
    if name == "mocov2":
        teacher = state.method_state["teacher"]
        k, _ = _apply_train(exp.model, teacher.params, teacher.batch_stats, views[1])
        return losses.l2_normalize(k)[None]
    if name == "nnclr":
        n = views[0].shape[0]
        both = jnp.concatenate(views)
        z, _ = _apply_train(exp.model, state.params, state.batch_stats, both)
        return losses.l2_normalize(z)[:n]
    g, local = views["global"], views["local"]
    b, num_global = g.shape[:2]
    groups = (g.reshape(-1, *g.shape[2:]), local.reshape(-1, *local.shape[2:]))
    _, aux = _apply_train(exp.model, state.params, state.batch_stats, groups)
    z = aux["embedding"][: b * num_global]
    return jnp.swapaxes(z.reshape(b, num_global, -1), 0, 1)


STEPS = 4  # of the one-device runs below


@functools.cache
def _one_device(name):
    """STEPS updates of step_config(name) on one device, as the trainer runs them (SwAV's
    host update included): host copies of the states before and after every step, the
    metrics, and (queue methods) the rows each step must enqueue, computed by hand."""
    exp = trainer.Experiment(step_config(name), jax.devices()[:1])
    host = exp.prepare_host()
    expected = jax.jit(lambda s, b: _expected_rows(name, exp, s, b))
    state = exp.init_state()
    states, metrics, rows = [jax.device_get(state)], [], []
    for step in range(STEPS):
        batch = exp.global_batch(step)
        if name != "mocov3":
            rows.append(np.asarray(expected(state, batch)))
        state, m = exp.train_step(state, batch)
        if host is not None:
            state = host.update(state, step + 1)
        states.append(jax.device_get(state))
        metrics.append(jax.device_get(m))
    return exp, states, metrics, rows


@pytest.mark.parametrize("name", ["mocov2", "nnclr", "swav"])
def test_each_step_enqueues_its_global_batch_by_hand(name):
    """Q = 64, B = 32: the rows of step s land at [ptr, ptr + 32), the pointer wraps to 0,
    every other row stays. SwAV's queue starts at step 1 (swav.queue_start_epochs): step 0
    writes nothing; it is read from step 3 on, once 64 rows have been written."""
    _, states, metrics, rows = _one_device(name)
    ptr = []
    for step in range(STEPS):
        q0 = np.asarray(states[step].method_state["queue"])
        after = states[step + 1].method_state
        q1 = np.asarray(after["queue"])
        if name == "swav" and step == 0:
            np.testing.assert_array_equal(q1, 0.0)
            assert int(after["queue_ptr"]) == int(after["queue_rows"]) == 0
        else:
            start = int(states[step].method_state["queue_ptr"])
            idx = (start + np.arange(32)) % 64
            # Two compiled programs: float32 rounding (1.4e-6 seen on unit-norm rows).
            np.testing.assert_allclose(q1[..., idx, :], rows[step], rtol=1e-5, atol=1e-5)
            keep = np.setdiff1d(np.arange(64), idx)
            np.testing.assert_array_equal(q1[..., keep, :], q0[..., keep, :])
            np.testing.assert_allclose(np.linalg.norm(rows[step], axis=-1), 1.0, rtol=1e-5)
        ptr.append(int(after["queue_ptr"]))
    if name == "swav":
        assert ptr == [0, 32, 0, 32]
        assert [float(m["queue_used"]) for m in metrics] == [0.0, 0.0, 0.0, 1.0]
        assert int(states[-1].method_state["queue_rows"]) == 64
    else:
        assert ptr == [32, 0, 32, 0]


# ----------------------------------------------------------------------------- devices


@pytest.mark.parametrize("name", run_params(*NAMES))
def test_one_step_8_devices_equals_1(name):
    """params (prototypes included, before the host's normalisation), BN statistics, the
    method state (queue and pointer, key encoder and its count) and metrics, at the smoke
    lr (AdamW's first update moves a parameter whose gradient is rounding noise by a whole
    lr: see the helper). The one-device program is the one-device runs' (cached)."""
    metrics = assert_one_step_8_devices_equals_1(step_config(name)).metrics
    for key in LOGGED[name]:
        assert np.isfinite(metrics[key]), key


# ----------------------------------------------------------------------------- MoCo v3, SwAV


def test_mocov3_momentum_encoder_is_the_ema_of_backbone_and_projector():
    exp, states, metrics, _ = _one_device("mocov3")
    before, after = states[0], states[1]
    assert set(before.params) == {"backbone", "head", "predictor"}
    teacher0 = before.method_state["teacher"]
    assert set(teacher0.params) == set(teacher0.batch_stats) == {"backbone", "head"}
    leaves_equal(teacher0.params, {k: before.params[k] for k in ("backbone", "head")})
    # One step: teacher = m * teacher + (1 - m) * the updated online network, m = 0.99 at
    # count 0 (the cosine towards 1 over the run).
    m = exp.config.mocov3.momentum
    np.testing.assert_allclose(float(metrics[0]["key_momentum"]), m, rtol=1e-6)
    assert float(metrics[-1]["key_momentum"]) > m
    teacher = after.method_state["teacher"]
    assert int(teacher.count) == 1
    for part in ("backbone", "head"):
        expected = jax.tree.map(
            lambda t, o: m * t + (1 - m) * o, teacher0.params[part], after.params[part]
        )
        jax.tree.map(
            lambda t, e: np.testing.assert_allclose(t, e, rtol=1e-6, atol=1e-7),
            teacher.params[part],
            expected,
        )


def _unit_columns(kernel):
    return np.linalg.norm(np.asarray(kernel, np.float64), axis=0)


def _prototype_moments(opt_state):
    """The optimiser-state leaves of the prototypes (AdamW's first and second moments)."""
    return [
        np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(opt_state)
        if "prototypes" in jax.tree_util.keystr(path)
    ]


def test_swav_prototypes_unit_norm_and_frozen():
    """Unit columns at initialisation and after every step (the host object's update);
    frozen for the first 2 steps (exactly zero gradient: AdamW's moments stay 0; the
    directions do not move), free after."""
    exp, states, metrics, _ = _one_device("swav")
    assert exp.run.epochs_to_steps(exp.config.swav.freeze_prototypes_epochs) == 2
    assert set(states[0].params["prototypes"]) == {"kernel"}  # no bias
    kernels = [np.asarray(s.params["prototypes"]["kernel"]) for s in states]
    for kernel in kernels:
        np.testing.assert_allclose(_unit_columns(kernel), 1.0, atol=1e-6)
    assert [float(m["prototypes_frozen"]) for m in metrics] == [1.0, 1.0, 0.0, 0.0]
    for step in (1, 2):
        moments = _prototype_moments(states[step].opt_state)
        assert moments and not any(np.any(x) for x in moments), step
    assert all(np.any(x) for x in _prototype_moments(states[3].opt_state))
    # Frozen steps: AdamW's decoupled decay only shrinks the columns, which the
    # normalisation undoes; the free steps move them.
    np.testing.assert_allclose(kernels[2], kernels[0], atol=1e-6)
    assert np.max(np.abs(kernels[4] - kernels[0])) > 1e-4


# ----------------------------------------------------------------------------- train.py


@pytest.mark.parametrize("name", run_params(*NAMES))
def test_train_py_smoke_learns(name, train_py_runs):
    run = train_py_runs[name]
    result = assert_finished(run)
    assert all(np.isfinite(result[k]) for k in ("knn_top1", "linear_top1", "nmi"))
    train = records(run.workdir)
    every = RUNS[name]["log_every"]
    assert [r["step"] for r in train] == list(range(every, RUNS[name]["num_steps"] + 1, every))
    for key in LOGGED[name]:
        assert all(np.isfinite(r[key]) for r in train), key
    assert "collapsing" not in run.stderr and "ln(K)" not in run.stderr, run.stderr[-2000:]
    if name == "mocov2":
        # The first record averages steps whose negatives are still the random initial
        # queue (easy: loss near 3); from the second on, the queue holds real keys: there the
        # loss starts at about ln(Q + 1) = 4.17 and falls (4.04 -> 3.60 when written), and
        # the instance discrimination top-1 rises.
        assert_fell(train[1:], by=0.2)
        assert train[-1]["contrastive_top1"] > train[1]["contrastive_top1"]
    elif name == "swav":
        # 4.6 -> 3.4 when written: from confidently wrong (above ln K = 2.77) towards the
        # codes; the swapped prediction picks the other crop's prototype above chance 1/K.
        assert_fell(train, by=0.5)
        k = RUNS["swav"].get("swav.num_prototypes", 16)
        assert np.mean([r["swap_top1"] for r in train[-3:]]) > 1.25 / k
        assert train[-1]["queue_used"] == 1.0
    else:
        # MoCo v3 3.12 -> 2.88, NNCLR 4.61 -> 3.56 when written.
        assert_fell(train, by={"mocov3": 0.12, "nnclr": 0.5}[name])


@pytest.mark.parametrize("name", run_params(*NAMES, tier=RESUMES_IN_DEFAULT_TIER))
def test_exact_resume(name, train_py_runs, tmp_path):
    """Interrupted at step 2 and resumed to step 4 == the uninterrupted train.py run's step 4:
    every leaf bit for bit (params and prototypes, BN statistics, optimiser, queues and
    pointers, momentum encoders and their counts, rng)."""
    resumed = assert_exact_resume(smoke_config(name), train_py_runs[name], str(tmp_path))
    ms = resumed.method_state
    if "queue_ptr" in ms:  # 4 batches of 32 through a queue of 64: the pointer wrapped twice
        assert int(ms["queue_ptr"]) == 0 and np.any(np.asarray(ms["queue"]))
        assert name != "swav" or int(ms["queue_rows"]) == 64
    if "teacher" in ms:
        assert int(ms["teacher"].count) == 4
    if name == "swav":
        kernel = resumed.params["prototypes"]["kernel"]
        np.testing.assert_allclose(_unit_columns(kernel), 1.0, atol=1e-6)
