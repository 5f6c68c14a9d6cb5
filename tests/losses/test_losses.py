"""nt_xent: golden value by hand, numpy reference, invariances, jit, sharding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses


def numpy_nt_xent(z1, z2, temperature):
    """Independent loop-based implementation straight from the SimCLR paper."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = len(z)
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        sims = np.array([z[i] @ z[j] / temperature for j in range(n2)])
        denom = sum(math.exp(sims[j]) for j in range(n2) if j != i)
        total += -math.log(math.exp(sims[pos]) / denom)
    return total / n2


def test_hand_computed():
    # e0 = e2 = (1, 0), e1 = e3 = (0, 1); t = 1. Every anchor: positive sim 1,
    # negatives sims 0 and 0 -> loss = -log(e / (e + 2)) = log(1 + 2 / e).
    z1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    z2 = jnp.array([[3.0, 0.0], [0.0, 0.5]])  # scale must not matter
    got = losses.nt_xent(z1, z2, temperature=1.0)
    assert float(got) == pytest.approx(math.log(1 + 2 / math.e), abs=1e-6)
    assert float(got) == pytest.approx(0.5514447, abs=1e-6)


def test_hand_computed_temperature():
    # z1 = [(1,0)], z2 = [(0,1)], N = 1: each anchor has its positive and no
    # negatives, so the softmax is over one entry and the loss is 0.
    got = losses.nt_xent(jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 1.0]]), temperature=0.1)
    assert float(got) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(2, 12, 7)).astype(np.float32)
    got = losses.nt_xent(jnp.asarray(z1), jnp.asarray(z2), temperature=temperature)
    np.testing.assert_allclose(float(got), numpy_nt_xent(z1, z2, temperature), rtol=1e-5)


def test_invariances_and_jit():
    rng = np.random.default_rng(1)
    z1, z2 = (jnp.asarray(x) for x in rng.normal(size=(2, 16, 8)).astype(np.float32))
    base = losses.nt_xent(z1, z2, temperature=0.5)
    perm = rng.permutation(16)
    np.testing.assert_allclose(losses.nt_xent(z1[perm], z2[perm], temperature=0.5), base, rtol=1e-6)
    np.testing.assert_allclose(losses.nt_xent(z2, z1, temperature=0.5), base, rtol=1e-6)
    jitted = jax.jit(lambda a, b: losses.nt_xent(a, b, temperature=0.5))(z1, z2)
    np.testing.assert_allclose(jitted, base, rtol=1e-6)


def test_perfect_alignment_is_lower():
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=(32, 16)).astype(np.float32))
    aligned = losses.nt_xent(z, z, temperature=0.5)
    shuffled = losses.nt_xent(z, z[::-1], temperature=0.5)
    assert aligned < shuffled


def test_bf16_inputs_computed_in_float32():
    rng = np.random.default_rng(3)
    z1, z2 = rng.normal(size=(2, 8, 4)).astype(np.float32)
    got = losses.nt_xent(
        jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16), temperature=0.5
    )
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), numpy_nt_xent(z1, z2, 0.5), rtol=2e-2)


def test_global_batch_under_sharding():
    """On 8 devices with the batch sharded, negatives come from the whole batch."""
    from jssl import sharding

    rng = np.random.default_rng(4)
    z1, z2 = rng.normal(size=(2, 16, 8)).astype(np.float32)
    mesh = sharding.make_mesh()
    assert mesh.devices.size == 8
    put = lambda x: jax.device_put(x, sharding.data_sharded(mesh))
    got = jax.jit(lambda a, b: losses.nt_xent(a, b, temperature=0.5))(put(z1), put(z2))
    np.testing.assert_allclose(float(got), numpy_nt_xent(z1, z2, 0.5), rtol=1e-5)


def test_shape_error():
    with pytest.raises(ValueError, match="two \\[N, D\\] arrays"):
        losses.nt_xent(jnp.zeros((4, 3)), jnp.zeros((5, 3)), temperature=0.5)


def test_embedding_std():
    z = jnp.ones((10, 4))
    assert float(losses.embedding_std(z)) == pytest.approx(0.0, abs=1e-7)
    spread = jnp.eye(4)
    # rows are one-hot: each column has one 1 and three 0s: std = sqrt(3)/4.
    assert float(losses.embedding_std(spread)) == pytest.approx(math.sqrt(3) / 4, rel=1e-6)
