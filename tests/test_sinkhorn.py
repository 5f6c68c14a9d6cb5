"""Log-domain Sinkhorn-Knopp: marginals, a numpy reference, overflow, class weights, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy.special import logsumexp

from jssl.sinkhorn import (
    balanced_assignment,
    cluster_capacities,
    marginal_error,
    sinkhorn_knopp,
)


def numpy_sinkhorn(scores, *, epsilon, num_iters, class_weights=None):
    """Independent float64 reference: alternate exact column and row scalings of exp(S/eps)."""
    s = np.asarray(scores, np.float64) / epsilon
    n, k = s.shape
    w = np.full(k, 1.0 / k) if class_weights is None else np.asarray(class_weights, np.float64)
    log_col = np.log(n * w / w.sum())
    u, v = np.zeros(n), np.zeros(k)
    for _ in range(num_iters):
        v = log_col - logsumexp(s + u[:, None], axis=0)
        u = -logsumexp(s + v[None, :], axis=1)
    return np.exp(s + u[:, None] + v[None, :])


def naive_sinkhorn(scores, *, epsilon, num_iters):
    """The probability-domain version (SwAV's code) in float32: exp(S / eps) overflows."""
    q = jnp.exp(scores.astype(jnp.float32) / epsilon).T  # [K, N]
    q = q / jnp.sum(q)
    k, n = q.shape
    for _ in range(num_iters):
        q = q / jnp.sum(q, axis=1, keepdims=True) / k
        q = q / jnp.sum(q, axis=0, keepdims=True) / n
    return (q * n).T


def random_scores(n=240, k=6, scale=2.0, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, k)) * scale, jnp.float32)


def test_marginals_rows_one_columns_n_over_k():
    scores = jax.nn.log_softmax(random_scores())
    q = jax.jit(lambda s: sinkhorn_knopp(s, epsilon=0.1, num_iters=500))(scores)
    n, k = q.shape
    assert q.dtype == jnp.float32 and q.shape == scores.shape
    np.testing.assert_allclose(np.sum(q, axis=1), np.ones(n), atol=1e-4)
    np.testing.assert_allclose(np.sum(q, axis=0), np.full(k, n / k), rtol=1e-4)
    rows, cols = marginal_error(q)
    assert float(rows) < 1e-4 and float(cols) < 1e-4


def test_agrees_with_numpy_log_domain_reference():
    scores = random_scores(n=100, k=5, seed=1)
    for iters in (1, 3, 50):
        q = sinkhorn_knopp(scores, epsilon=0.5, num_iters=iters)
        ref = numpy_sinkhorn(np.asarray(scores), epsilon=0.5, num_iters=iters)
        np.testing.assert_allclose(np.asarray(q), ref, rtol=1e-4, atol=1e-6)


def test_plan_is_proportional_to_exp_scores_over_epsilon():
    # log Q - S / eps must be u_i + v_k: its double-centred residual vanishes.
    scores = random_scores(n=50, k=4, seed=2)
    eps = 0.3
    q = sinkhorn_knopp(scores, epsilon=eps, num_iters=20)
    r = np.log(np.asarray(q, np.float64)) - np.asarray(scores, np.float64) / eps
    r = r - r.mean(axis=0, keepdims=True) - r.mean(axis=1, keepdims=True) + r.mean()
    assert np.max(np.abs(r)) < 1e-3


def test_large_scores_stay_finite_where_naive_overflows():
    scores = jnp.asarray(np.random.default_rng(3).uniform(-1e3, 1e3, size=(64, 8)), jnp.float32)
    naive = naive_sinkhorn(scores, epsilon=0.05, num_iters=3)
    assert not np.all(np.isfinite(np.asarray(naive)))  # exp(2e4) = inf in float32
    q = np.asarray(jax.jit(lambda s: sinkhorn_knopp(s, epsilon=0.05, num_iters=100))(scores))
    assert np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-3)


def test_non_uniform_class_weights():
    w = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    scores = jax.nn.log_softmax(random_scores(n=400, k=4, seed=4))
    q = np.asarray(sinkhorn_knopp(scores, epsilon=0.1, num_iters=1000, class_weights=w))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(q.sum(axis=0), 400 * w, rtol=1e-4)
    ref = numpy_sinkhorn(np.asarray(scores), epsilon=0.1, num_iters=1000, class_weights=w)
    np.testing.assert_allclose(q, ref, rtol=1e-3, atol=1e-5)
    # Weights are proportions: scaling them changes nothing.
    q2 = np.asarray(sinkhorn_knopp(scores, epsilon=0.1, num_iters=1000, class_weights=w * 7))
    np.testing.assert_allclose(q2, q, rtol=1e-5, atol=1e-7)


def test_bfloat16_scores_are_solved_in_float32():
    scores = jax.nn.log_softmax(random_scores(seed=5))
    rounded = scores.astype(jnp.bfloat16).astype(jnp.float32)
    q32 = sinkhorn_knopp(rounded, epsilon=0.1, num_iters=300)
    q16 = sinkhorn_knopp(scores.astype(jnp.bfloat16), epsilon=0.1, num_iters=300)
    assert q16.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(q16), np.asarray(q32))
    np.testing.assert_allclose(np.sum(q16, axis=0), np.full(6, 40.0), rtol=1e-4)


def test_tolerance_stops_early_within_tolerance():
    scores = jax.nn.log_softmax(random_scores(seed=6))
    full = sinkhorn_knopp(scores, epsilon=0.1, num_iters=2000)
    early = jax.jit(lambda s: sinkhorn_knopp(s, epsilon=0.1, num_iters=2000, tol=1e-2))(scores)
    _, col_err = marginal_error(early)
    assert float(col_err) <= 1e-2
    assert float(jnp.max(jnp.abs(early - full))) > 0  # it did stop before converging fully
    exact = sinkhorn_knopp(scores, epsilon=0.1, num_iters=2000, tol=1e-6)
    assert float(marginal_error(exact)[1]) <= 1e-5


def test_jit_equals_eager():
    scores = random_scores(seed=7)
    eager = sinkhorn_knopp(scores, epsilon=0.2, num_iters=30)
    jitted = jax.jit(lambda s: sinkhorn_knopp(s, epsilon=0.2, num_iters=30))(scores)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-5, atol=1e-6)


def test_rows_sharded_over_8_devices_equal_one_device():
    assert len(jax.devices()) == 8
    scores = jax.nn.log_softmax(random_scores(n=256, k=10, seed=8))
    fn = lambda s: sinkhorn_knopp(s, epsilon=0.1, num_iters=500)
    one = jax.jit(fn)(jax.device_put(scores, jax.devices()[0]))
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    eight = jax.jit(fn, in_shardings=rows, out_shardings=rows)(jax.device_put(scores, rows))
    assert len(eight.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(eight), np.asarray(one), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.sum(np.asarray(eight), axis=0), np.full(10, 25.6), rtol=1e-4)


def test_bad_arguments_name_the_problem():
    scores = random_scores(n=8, k=3)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_knopp(scores, epsilon=0.0, num_iters=3)
    with pytest.raises(ValueError, match="num_iters"):
        sinkhorn_knopp(scores, epsilon=0.1, num_iters=0)
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        sinkhorn_knopp(scores[0], epsilon=0.1, num_iters=3)
    with pytest.raises(ValueError, match="class_weights"):
        sinkhorn_knopp(scores, epsilon=0.1, num_iters=3, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weights"):
        sinkhorn_knopp(scores, epsilon=0.1, num_iters=3, class_weights=[1.0, 0.0, 2.0])


def test_cluster_capacities_sum_to_n():
    np.testing.assert_array_equal(cluster_capacities(10, 3), [4, 3, 3])
    np.testing.assert_array_equal(cluster_capacities(10, 2, [0.75, 0.25]), [8, 2])
    assert cluster_capacities(1437, 10).sum() == 1437


def test_balanced_assignment_fills_every_cluster_exactly():
    # A diffuse plan (an untrained network): argmax is unbalanced, the rounding is not.
    rng = np.random.default_rng(9)
    logits = jnp.asarray(rng.normal(size=(103, 5)) * 0.01 + [0.02, 0, 0, 0, 0], jnp.float32)
    q = jax.nn.softmax(logits)
    assert np.bincount(np.asarray(q.argmax(1)), minlength=5).max() > 25
    labels = jax.jit(balanced_assignment)(q)
    assert labels.dtype == jnp.int32
    np.testing.assert_array_equal(
        np.bincount(np.asarray(labels), minlength=5), [21, 21, 21, 20, 20]
    )
    # A sharp, balanced plan: the rounding is the argmax.
    truth = np.arange(100) % 4
    sharp = jax.nn.one_hot(truth, 4) * 0.9 + 0.025
    np.testing.assert_array_equal(np.asarray(balanced_assignment(sharp)), truth)
    w = np.array([0.5, 0.3, 0.2])
    weighted = balanced_assignment(jnp.ones((50, 3)) / 3, class_weights=w)
    np.testing.assert_array_equal(np.bincount(np.asarray(weighted)), [25, 15, 10])
