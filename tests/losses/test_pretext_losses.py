"""Pretext losses: hand-computed golden values, gradients where they matter, jit == no-jit."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses


def test_classification_loss_and_accuracy_golden():
    logits = jnp.array([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = jnp.array([1, 0])
    # Row 0: p = 3/4 -> -ln(3/4); row 1: p = 1/2 -> ln 2.
    expected = (-math.log(0.75) + math.log(2.0)) / 2  # 0.490415
    np.testing.assert_allclose(losses.classification_loss(logits, labels), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(losses.classification_loss)(logits, labels), expected, 1e-6)
    assert float(losses.top1_accuracy(logits, labels)) == 1.0  # row 1 ties -> argmax 0
    assert float(losses.top1_accuracy(logits, jnp.array([0, 1]))) == 0.0


def test_soft_cross_entropy_golden():
    logits = jnp.array([[0.0, 0.0], [0.0, math.log(3.0)]])
    targets = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    ce0 = math.log(2.0)
    ce1 = -0.5 * math.log(0.25) - 0.5 * math.log(0.75)  # 0.836988
    np.testing.assert_allclose(losses.soft_cross_entropy(logits, targets), (ce0 + ce1) / 2, 1e-6)
    w = jnp.array([1.0, 3.0])
    np.testing.assert_allclose(
        losses.soft_cross_entropy(logits, targets, weights=w), (ce0 + 3 * ce1) / 4, rtol=1e-6
    )


def test_masked_mse_golden():
    pred = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    target = jnp.zeros((1, 2, 2, 1))
    mask = jnp.array([True, False, False, True]).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(losses.masked_mse(pred, target, mask), (1 + 16) / 2)
    np.testing.assert_allclose(losses.masked_mse(pred, target), (1 + 4 + 9 + 16) / 4)
    # A [B, H, W, 1] mask broadcasts over channels: mean over the masked elements.
    pred3 = jnp.broadcast_to(pred, (1, 2, 2, 3))
    np.testing.assert_allclose(losses.masked_mse(pred3, target, mask), (1 + 16) / 2)
    # Pixels outside the mask get no gradient.
    g = jax.grad(lambda p: losses.masked_mse(p, target, mask))(pred)
    np.testing.assert_allclose(g.ravel(), [2 * 1 / 2, 0, 0, 2 * 4 / 2])


def test_l1_sparsity_golden():
    np.testing.assert_allclose(losses.l1_sparsity(jnp.array([[1.0, -2.0], [0.0, 3.0]])), 1.5)


def test_vq_losses_golden_and_gradients():
    z_e = jnp.array([[1.0, 2.0]])
    z_q = jnp.array([[0.0, 0.0]])
    codebook, commitment = losses.vq_losses(z_e, z_q)
    np.testing.assert_allclose([codebook, commitment], [2.5, 2.5])
    # The codebook term moves only the codes; the commitment term only the encoder.
    g_e = jax.grad(lambda e: losses.vq_losses(e, z_q)[0])(z_e)
    g_q = jax.grad(lambda q: losses.vq_losses(z_e, q)[1])(z_q)
    np.testing.assert_array_equal(g_e, 0.0)
    np.testing.assert_array_equal(g_q, 0.0)
    np.testing.assert_allclose(jax.grad(lambda q: losses.vq_losses(z_e, q)[0])(z_q), [[-1, -2]])


def test_codebook_usage_golden():
    usage, perplexity = losses.codebook_usage(jnp.array([[0, 0], [1, 3]]), 4)
    np.testing.assert_allclose(usage, [0.5, 0.25, 0.0, 0.25])
    np.testing.assert_allclose(perplexity, 2**1.5, rtol=1e-6)  # exp(1.5 ln 2)


def test_gaussian_kl_golden():
    mean = jnp.array([[1.0, 0.0]])
    log_var = jnp.array([[0.0, math.log(2.0)]])
    # dim 0: 0.5 (1 + 1 - 1 - 0) = 0.5; dim 1: 0.5 (2 + 0 - 1 - ln 2) = 0.153426.
    np.testing.assert_allclose(losses.gaussian_kl(mean, log_var), [0.5 + 0.5 * (1 - math.log(2))])
    np.testing.assert_allclose(losses.gaussian_kl(jnp.zeros((3, 4)), jnp.zeros((3, 4))), 0.0)


def test_gaussian_nll_golden():
    x = jnp.array([[1.0, 0.0]]).reshape(1, 1, 2, 1)
    mean = jnp.zeros_like(x)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    # Scale 1: 0.9189 + 0.5 and 0.9189; scale e: 0.9189 + 1 + 0.5 / e^2 and 0.9189 + 1.
    np.testing.assert_allclose(
        losses.gaussian_nll(x, mean, jnp.zeros(1)), [2 * half_log_2pi + 0.5], rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.gaussian_nll(x, mean, jnp.ones(1)),
        [2 * half_log_2pi + 2 + 0.5 / math.e**2],
        rtol=1e-6,
    )


@pytest.mark.parametrize("b, expected", [([1.0, 0.0], 0.0), ([0.0, 2.0], 2.0), ([-3.0, 0.0], 4.0)])
def test_equivariance_loss_golden(b, expected):
    a = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    np.testing.assert_allclose(
        losses.equivariance_loss(a, jnp.array(b).reshape(1, 1, 1, 2)), expected, atol=1e-6
    )
    # Mean over positions: one matching and one orthogonal position -> 1.
    a2 = jnp.array([[1.0, 0.0], [1.0, 0.0]]).reshape(1, 1, 2, 2)
    b2 = jnp.array([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 1, 2, 2)
    np.testing.assert_allclose(losses.equivariance_loss(a2, b2), 1.0, atol=1e-6)
