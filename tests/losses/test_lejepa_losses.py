"""LeJEPA's losses: SIGReg's Epps-Pulley statistic by hand, a float64 numpy reference written
from the authors' code (rbalestr-lab/lejepa: EppsPulley, SlicingUnivariateTest, MINIMAL.md),
invariances, jit == no-jit, and the loss and its gradient on 8 devices equal to 1 (the bug
two PyTorch libraries shipped was a gradient off by the world size)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jssl import losses, sharding


def _epps_pulley_np(x, num_points=17, t_max=3.0):
    """float64 numpy, as lejepa/univariate/epps_pulley.py: x [..., N, S] -> [..., S]."""
    x = np.asarray(x, np.float64)
    t = np.linspace(0.0, t_max, num_points)
    dt = t_max / (num_points - 1)
    weights = np.full(num_points, 2 * dt)
    weights[[0, -1]] = dt
    phi = np.exp(-(t**2) / 2)
    xt = x[..., None] * t
    err = (np.cos(xt).mean(-3) - phi) ** 2 + np.sin(xt).mean(-3) ** 2
    return (err @ (weights * phi)) * x.shape[-2]


def _sigreg_np(x, directions, **kw):
    a = np.asarray(directions, np.float64)
    a = a / np.linalg.norm(a, axis=0)
    return _epps_pulley_np(np.asarray(x, np.float64) @ a, **kw).mean()


def _lejepa_np(views, directions, g=None, lam=0.02):
    """MINIMAL.md:172-174, with the centre over the first g views."""
    v = np.asarray(views, np.float64)
    g = len(v) if g is None else g
    inv = ((v[:g].mean(0) - v) ** 2).mean()
    sig = _sigreg_np(v, directions)
    return lam * sig + (1 - lam) * inv, inv, sig


def _rand(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def test_epps_pulley_golden_value_by_hand():
    """Two samples at 0, knots t = 0, 1, 2 (dt = 1): cos-mean 1, sin-mean 0, so
    T = 2 * (2 e^-1/2 (1 - e^-1/2)^2 + e^-2 (1 - e^-2)^2)."""
    x = np.zeros((2, 1), np.float32)
    got = losses.epps_pulley(x, num_points=3, t_max=2.0)
    e1, e2 = math.exp(-0.5), math.exp(-2.0)
    want = 2 * (2 * e1 * (1 - e1) ** 2 + e2 * (1 - e2) ** 2)
    assert got.shape == (1,) and got.dtype == jnp.float32
    np.testing.assert_allclose(float(got[0]), want, rtol=1e-6)


def test_epps_pulley_matches_the_float64_reference_and_tells_gaussian_from_not():
    x = _rand(0, 3, 512, 5)  # leading batch axis: 3 views
    np.testing.assert_allclose(losses.epps_pulley(x), _epps_pulley_np(x), rtol=1e-4)
    got = losses.epps_pulley(x, num_points=9, t_max=5.0)
    np.testing.assert_allclose(got, _epps_pulley_np(x, 9, 5.0), rtol=1e-4)
    gaussian = float(jnp.mean(losses.epps_pulley(x)))
    uniform = np.random.default_rng(1).uniform(-3, 3, (512, 5)).astype(np.float32)
    assert float(jnp.mean(losses.epps_pulley(uniform))) > 10 * gaussian
    with pytest.raises(ValueError, match="odd"):
        losses.epps_pulley(x, num_points=16)


def test_sigreg_matches_the_reference_ignores_direction_scale_and_passes_no_gradient_to_them():
    x, a = _rand(2, 2, 256, 6), _rand(3, 6, 32)
    np.testing.assert_allclose(float(losses.sigreg(x, a)), _sigreg_np(x, a), rtol=1e-4)
    scaled = a * np.linspace(0.1, 10.0, 32, dtype=np.float32)  # each column its own length
    np.testing.assert_allclose(float(losses.sigreg(x, scaled)), float(losses.sigreg(x, a)), 1e-5)
    gx, ga = jax.grad(losses.sigreg, argnums=(0, 1))(x, a)
    assert np.any(np.asarray(gx)) and not np.any(np.asarray(ga))
    assert losses.sigreg(x.astype(jnp.bfloat16), a).dtype == jnp.float32


def test_lejepa_loss_matches_the_reference_and_its_parts():
    views, a = _rand(4, 8, 64, 16), _rand(5, 16, 64)
    for g in (None, 2):
        total, inv, sig = losses.lejepa_loss(views, a, num_global_views=g)
        want = _lejepa_np(views, a, g)
        for got, w in zip((total, inv, sig), want, strict=True):
            assert got.shape == () and got.dtype == jnp.float32
            np.testing.assert_allclose(float(got), w, rtol=1e-4)
    # Identical views: no invariance term (up to the float32 rounding of their mean,
    # squared: 3e-15 without YNNPACK fusions); the total is lambda * SIGReg.
    same = np.broadcast_to(views[:1], views.shape)
    total, inv, sig = losses.lejepa_loss(same, a, lambda_=0.5)
    assert 0.0 <= float(inv) < 1e-12
    np.testing.assert_allclose(float(total), 0.5 * float(sig), rtol=1e-6)
    with pytest.raises(ValueError, match="num_global_views"):
        losses.lejepa_loss(views, a, num_global_views=9)


def test_jit_equals_no_jit():
    views, a = _rand(6, 4, 32, 8), _rand(7, 8, 16)
    eager = losses.lejepa_loss(views, a, num_global_views=2)
    jitted = jax.jit(lambda v, d: losses.lejepa_loss(v, d, num_global_views=2))(views, a)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(float(j), float(e), rtol=1e-6)


def test_loss_and_gradient_on_8_devices_equal_1_device():
    """The samples sharded over 8 devices: SIGReg's means over N are global, so the loss and
    the gradient of every embedding are those of one device (none scaled by the count)."""
    views, a = _rand(8, 4, 64, 8), _rand(9, 8, 32)

    def run(devices):
        mesh = sharding.make_mesh(devices)
        v = jax.device_put(views, NamedSharding(mesh, PartitionSpec(None, "data")))
        d = jax.device_put(a, NamedSharding(mesh, PartitionSpec()))
        fn = lambda v, d: losses.lejepa_loss(v, d, num_global_views=2)[0]
        return jax.jit(jax.value_and_grad(fn))(v, d)

    assert len(jax.devices()) == 8
    loss8, grad8 = run(jax.devices())
    loss1, grad1 = run(jax.devices()[:1])
    np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-5)
    scale = np.max(np.abs(np.asarray(grad1)))
    np.testing.assert_allclose(np.asarray(grad8), np.asarray(grad1), rtol=0, atol=1e-5 * scale)
    assert scale > 0
