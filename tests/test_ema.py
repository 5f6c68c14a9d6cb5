"""EMA teacher: ``ema.track_ema`` (an optax transformation) and its ``ema_teacher`` wrapper."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jssl import ema, schedules


def _bits(x) -> np.ndarray:
    """The raw bits of an array (so that -0.0 and 0.0, or two NaNs, are told apart)."""
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _assert_trees_bit_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(_bits(x), _bits(y))


def test_golden_values_two_updates_constant_momentum():
    tx = ema.track_ema(0.9)
    params = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(10.0)}
    state = tx.init(params)
    assert int(state.count) == 0
    np.testing.assert_array_equal(state.teacher["a"], [1.0, -2.0])

    u1 = {"a": jnp.array([1.0, 2.0]), "b": jnp.array(-10.0)}  # params -> a (2, 0), b 0
    out, state = tx.update(u1, state, params)
    assert out is u1
    params = optax.apply_updates(params, u1)
    # t1 = 0.9 * t0 + 0.1 * p1: a = (0.9 + 0.2, -1.8 + 0) = (1.1, -1.8); b = 9 + 0 = 9.
    np.testing.assert_allclose(state.teacher["a"], [1.1, -1.8], rtol=1e-6)
    np.testing.assert_allclose(state.teacher["b"], 9.0, rtol=1e-6)

    u2 = {"a": jnp.array([2.0, 4.0]), "b": jnp.array(5.0)}  # params -> a (4, 4), b 5
    _, state = tx.update(u2, state, params)
    # t2 = 0.9 * t1 + 0.1 * p2: a = (0.99 + 0.4, -1.62 + 0.4) = (1.39, -1.22); b = 8.1 + 0.5.
    np.testing.assert_allclose(state.teacher["a"], [1.39, -1.22], rtol=1e-6)
    np.testing.assert_allclose(state.teacher["b"], 8.6, rtol=1e-6)
    assert int(state.count) == 2


def test_schedule_momentum_nth_update_uses_momentum_n():
    sched = schedules.bind(schedules.teacher_momentum, total_steps=4, base=0.5, final=1.0)
    tx = ema.track_ema(sched)
    rng = np.random.default_rng(0)
    p = rng.normal(size=(3,)).astype(np.float32)
    state = tx.init({"w": jnp.asarray(p)})
    want = p.astype(np.float64)
    for n in range(6):  # past total_steps: momentum 1, the teacher stops moving
        u = rng.normal(size=(3,)).astype(np.float32)
        _, state = tx.update({"w": jnp.asarray(u)}, state, {"w": jnp.asarray(p)})
        p = p + u
        m = float(sched(n))
        want = m * want + (1.0 - m) * p
        np.testing.assert_allclose(state.teacher["w"], want, rtol=1e-5, atol=1e-6)
        assert int(state.count) == n + 1
    assert float(sched(0)) == 0.5 and float(sched(4)) == 1.0


def test_composes_in_chain_with_sgd_and_is_transparent():
    # f(p) = 0.5 * sum(a * (p - c)^2): sgd p <- p - lr * a * (p - c).
    a = {"x": np.array([1.0, 2.0, 0.5]), "y": np.array([[3.0]])}
    c = {"x": np.array([1.0, -1.0, 2.0]), "y": np.array([[0.5]])}
    p0 = {"x": np.array([0.0, 0.0, 0.0]), "y": np.array([[-1.0]])}
    lr, m, steps = 0.1, 0.8, 6

    def loss(p):
        return sum(0.5 * jnp.sum(a[k] * (p[k] - c[k]) ** 2) for k in p)

    tx = optax.chain(optax.sgd(lr), ema.track_ema(m))
    sgd = optax.sgd(lr)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), p0)
    state, sgd_state = tx.init(params), sgd.init(params)
    for _ in range(steps):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        sgd_updates, sgd_state = sgd.update(grads, sgd_state, params)
        _assert_trees_bit_equal(updates, sgd_updates)
        params = optax.apply_updates(params, updates)

    # Independent numpy trajectory and EMA (float64).
    p, t = dict(p0), dict(p0)
    for _ in range(steps):
        p = {k: p[k] - lr * a[k] * (p[k] - c[k]) for k in p}
        t = {k: m * t[k] + (1 - m) * p[k] for k in p}
    teacher = state[-1].teacher
    assert int(state[-1].count) == steps
    for k in p:
        np.testing.assert_allclose(params[k], p[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(teacher[k], t[k], rtol=1e-5, atol=1e-6)


def test_params_required():
    tx = ema.track_ema(0.9)
    state = tx.init({"w": jnp.ones(2)})
    with pytest.raises(ValueError, match="params"):
        tx.update({"w": jnp.ones(2)}, state)
    with pytest.raises(ValueError, match="params"):
        chain = optax.chain(optax.sgd(0.1), tx)
        chain.update({"w": jnp.ones(2)}, chain.init({"w": jnp.ones(2)}))


def test_jit_equals_no_jit_float32_and_bfloat16():
    sched = schedules.bind(schedules.teacher_momentum, total_steps=5, base=0.9)
    tx = ema.track_ema(sched)
    rng = np.random.default_rng(1)
    params = {
        "f32": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "bf16": jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
    }
    s_eager = s_jit = tx.init(params)
    update_jit = jax.jit(tx.update)
    for _ in range(4):
        updates = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
        u_eager, s_eager = tx.update(updates, s_eager, params)
        u_jit, s_jit = update_jit(updates, s_jit, params)
        _assert_trees_bit_equal(u_eager, u_jit)
        # Equal to rounding: under jit XLA may fuse m * t + (1 - m) * p into one
        # multiply-add (the suite's loop emitters do), rounding once instead of twice.
        eager, jitted = s_eager.teacher, s_jit.teacher
        _assert_trees_bit_equal(eager["bf16"], jitted["bf16"])
        np.testing.assert_allclose(jitted["f32"], eager["f32"], rtol=1e-6, atol=1e-6)
        assert int(s_eager.count) == int(s_jit.count)
        params = optax.apply_updates(params, updates)
    assert s_jit.teacher["f32"].dtype == jnp.float32
    assert s_jit.teacher["bf16"].dtype == jnp.bfloat16
    assert int(s_jit.count) == 4


# ----------------------------------------------------------------------------- ema_teacher wrapper


def _previous_ema_teacher_update(momentum, params, state, batch_stats=None):
    """``ema_teacher(momentum).update`` as implemented before track_ema (HEAD at 8ada046)."""
    m = momentum(state.count) if callable(momentum) else momentum
    m = jnp.asarray(m, jnp.float32)

    def mix(teacher, student):
        student = jax.lax.stop_gradient(student)
        return jax.tree.map(lambda t, s: (m * t + (1.0 - m) * s).astype(t.dtype), teacher, student)

    return ema.EmaTeacherState(
        count=optax.safe_increment(state.count),
        params=mix(state.params, params),
        batch_stats=state.batch_stats
        if batch_stats is None
        else mix(state.batch_stats, batch_stats),
    )


@pytest.mark.parametrize("jit", [False, True])
def test_ema_teacher_wrapper_matches_previous_implementation_bit_for_bit(jit):
    sched = schedules.bind(schedules.teacher_momentum, total_steps=6, base=0.7)
    rng = np.random.default_rng(2)

    def student():
        p = {
            "dense": {
                "kernel": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
                "bias": jnp.asarray([-0.0, 0.0], jnp.float32),  # signed zeros kept as they are
            },
            "half": jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16),
        }
        mean = jnp.asarray(rng.normal(size=(2,)), jnp.float32)
        var = jnp.asarray(rng.uniform(0.5, 2.0, size=(2,)), jnp.float32)
        return p, {"bn": {"mean": mean, "var": var}}

    p0, bs0 = student()
    teach = ema.ema_teacher(sched)
    state = teach.init(p0, bs0)
    ref = ema.EmaTeacherState(jnp.zeros((), jnp.int32), p0, bs0)
    _assert_trees_bit_equal(state, ref)

    update = jax.jit(teach.update) if jit else teach.update
    previous = (
        jax.jit(_previous_ema_teacher_update, static_argnums=0)
        if jit
        else _previous_ema_teacher_update
    )
    for n in range(6):
        p, bs = student()
        if n in (1, 4):  # no batch statistics: the teacher's are left unchanged
            before = state.batch_stats
            state = update(p, state)
            ref = previous(sched, p, ref)
            _assert_trees_bit_equal(state.batch_stats, before)
        else:
            state = update(p, state, bs)
            ref = previous(sched, p, ref, bs)
        assert isinstance(state, ema.EmaTeacherState)
        _assert_trees_bit_equal(state, ref)
    assert int(state.count) == 6
    assert ema.EmaTeacherState._fields == ("count", "params", "batch_stats")


def test_ema_teacher_without_batch_stats():
    teach = ema.ema_teacher(0.5)
    state = teach.init({"w": jnp.array([1.0, -2.0])})
    assert state.batch_stats == {}
    state = teach.update({"w": jnp.array([3.0, 0.0])}, state)
    np.testing.assert_array_equal(state.params["w"], [2.0, -1.0])
    assert state.batch_stats == {} and int(state.count) == 1


# ----------------------------------------------------------------------------- momentum 0 and 1


def test_momentum_one_keeps_teacher_and_zero_copies_student():
    rng = np.random.default_rng(3)
    dtypes = {"f32": jnp.float32, "bf16": jnp.bfloat16}
    tree = lambda: {k: jnp.asarray(rng.normal(size=(3, 4)), d) for k, d in dtypes.items()}
    teacher, params, updates = tree(), tree(), tree()
    state = ema.TrackEmaState(jnp.zeros((), jnp.int32), teacher)
    _, kept = ema.track_ema(1.0).update(updates, state, params)
    _assert_trees_bit_equal(kept.teacher, teacher)
    _, copied = ema.track_ema(0.0).update(updates, state, params)
    _assert_trees_bit_equal(copied.teacher, optax.apply_updates(params, updates))
    assert copied.teacher["bf16"].dtype == jnp.bfloat16

    # The wrapper: momentum 1 keeps the teacher, momentum 0 copies the student.
    student = {"w": jnp.asarray([0.25, 1.5, -3.25], jnp.float32)}
    wrapped = ema.EmaTeacherState(jnp.zeros((), jnp.int32), {"w": teacher["f32"][0, :3]}, {})
    _assert_trees_bit_equal(ema.ema_teacher(1.0).update(student, wrapped).params, wrapped.params)
    _assert_trees_bit_equal(ema.ema_teacher(0.0).update(student, wrapped).params, student)


def test_teacher_gets_no_gradient():
    tx = ema.track_ema(0.9)
    state = tx.init({"w": jnp.ones(3)})

    def teacher_sum(s, u):
        return jnp.sum(tx.update({"w": u}, state, {"w": s})[1].teacher["w"])

    gs, gu = jax.grad(teacher_sum, argnums=(0, 1))(jnp.ones(3), jnp.ones(3))
    np.testing.assert_array_equal(gs, 0.0)
    np.testing.assert_array_equal(gu, 0.0)
