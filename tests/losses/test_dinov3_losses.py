"""DINOv2's Sinkhorn-Knopp teacher and DINOv3's Gram anchoring: values by hand, float64 numpy
references written from the authors' code (dinov2 dino_clstoken_loss.py:35-61, dinov3
gram_loss.py:11-84), jit == no-jit, and the loss and its gradient on 8 devices equal to 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jssl import losses, sharding
from tests.losses.test_ssl_losses import np_sinkhorn


def _sk_np(logits, temp, iters=3):
    """dinov2's sinkhorn_knopp_teacher in float64, the exp domain as the authors wrote it: the
    algorithm of SwAV's codes (its float64 reference) on the flattened rows."""
    x = np.asarray(logits, np.float64)
    return np_sinkhorn(x.reshape(-1, x.shape[-1]), temp, iters).reshape(x.shape)


def _gram_np(s, t, img_level=True, normalize=True, remove_neg=False, only_teacher=False):
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    if normalize:
        s = s / np.maximum(np.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
        t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    if not img_level:
        s, t = s.reshape(1, -1, s.shape[-1]), t.reshape(1, -1, t.shape[-1])
    gs, gt = s @ np.swapaxes(s, -1, -2), t @ np.swapaxes(t, -1, -2)
    if remove_neg:
        gs, gt = np.maximum(gs, 0), np.maximum(gt, 0)
    elif only_teacher:
        gt = np.maximum(gt, 0)
        gs = np.where((gs < 0) & (gt < 0), 0.0, gs)  # the official mask: selects nothing
    return ((gs - gt) ** 2).mean()


def _rand(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_sinkhorn_teacher_by_hand_and_against_the_authors_code():
    # Equal logits: every row stays uniform.
    uniform = losses.sinkhorn_knopp_teacher(np.zeros((4, 3)), teacher_temp=0.1)
    np.testing.assert_allclose(uniform, np.full((4, 3), 1 / 3), rtol=1e-6)
    x = _rand(0, 2, 16, 8)  # [T, N, K]: both crops balanced together
    got = losses.sinkhorn_knopp_teacher(x, teacher_temp=0.5)
    assert got.shape == x.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, _sk_np(x, 0.5), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, rtol=1e-5)
    # DINOv2's 0.04 on logits of size ~5: exp(logits / 0.04) overflows float32 (not float64,
    # where the authors' formula is the reference), the log domain does not.
    big = 3 * _rand(1, 32, 16)
    assert not np.all(np.isfinite(np.exp(big / 0.04)))
    sharp = losses.sinkhorn_knopp_teacher(big, teacher_temp=0.04, num_iters=5)
    assert np.all(np.isfinite(np.asarray(sharp)))
    np.testing.assert_allclose(sharp, _sk_np(big, 0.04, 5), rtol=1e-4, atol=1e-6)


def test_gram_loss_by_hand_against_the_authors_code_and_no_teacher_gradient():
    # One image, two orthogonal unit tokens against two equal ones: G_s = I, G_t = ones;
    # the off-diagonal entries differ by 1: mean over 4 entries = 0.5.
    s = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    t = np.array([[[1.0, 0.0], [1.0, 0.0]]], np.float32)
    assert float(losses.gram_loss(s, t)) == pytest.approx(0.5, rel=1e-6)
    student, teacher = _rand(2, 3, 10, 8), _rand(3, 3, 10, 8)
    cases = [
        ({}, {}),
        ({"img_level": False}, {"img_level": False}),
        ({"normalize": False}, {"normalize": False}),
        ({"remove_neg": True}, {"remove_neg": True}),
        ({"remove_only_teacher_neg": True}, {"only_teacher": True}),
    ]
    for kw, np_kw in cases:
        got = losses.gram_loss(student, teacher, **kw)
        assert got.shape == () and got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), _gram_np(student, teacher, **np_kw), rtol=1e-5)
    gs, gt = jax.grad(losses.gram_loss, argnums=(0, 1))(student, teacher)
    assert np.any(np.asarray(gs)) and not np.any(np.asarray(gt))
    with pytest.raises(ValueError, match="mutually exclusive"):
        losses.gram_loss(student, teacher, remove_neg=True, remove_only_teacher_neg=True)


def test_jit_equals_no_jit():
    x, s, t = _rand(4, 2, 8, 6), _rand(5, 2, 6, 4), _rand(6, 2, 6, 4)
    sk = lambda x: losses.sinkhorn_knopp_teacher(x, teacher_temp=0.1)
    np.testing.assert_allclose(jax.jit(sk)(x), sk(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        float(jax.jit(losses.gram_loss)(s, t)), float(losses.gram_loss(s, t)), 1e-6
    )


@pytest.mark.parametrize("img_level", [True, False])
def test_8_devices_equal_1_device(img_level):
    """The batch sharded over 8 devices: the Sinkhorn sums and the Gram matrices (over the
    whole batch with img_level=False) are global."""
    x, s, t = _rand(7, 2, 16, 8), _rand(8, 16, 5, 4), _rand(9, 16, 5, 4)

    def run(devices):
        mesh = sharding.make_mesh(devices)
        put = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
        sk = jax.jit(lambda x: losses.sinkhorn_knopp_teacher(x, teacher_temp=0.1))
        gram = lambda s, t: losses.gram_loss(s, t, img_level=img_level)
        # The sums over the batch are all-reduces: no device gets the others' rows.
        assert "all-gather" not in sk.lower(put(x, PartitionSpec(None, "data"))).compile().as_text()
        return (
            sk(put(x, PartitionSpec(None, "data"))),
            jax.jit(jax.value_and_grad(gram))(
                put(s, PartitionSpec("data")), put(t, PartitionSpec("data"))
            ),
        )

    q8, (g8, d8) = run(jax.devices())
    q1, (g1, d1) = run(jax.devices()[:1])
    np.testing.assert_allclose(q8, q1, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(g8), float(g1), rtol=1e-5)
    np.testing.assert_allclose(d8, d1, rtol=1e-4, atol=1e-6 * np.max(np.abs(np.asarray(d1))))


def test_sinkhorn_teacher_over_the_valid_rows_only():
    """``valid``: the rows that take part (iBOT's masked patches among static tokens) are
    balanced as if they were alone; the others come back as zeros."""
    x = _rand(5, 6, 4, 8)  # [N, L, K]
    valid = np.random.default_rng(6).random((6, 4)) < 0.5
    got = np.asarray(losses.sinkhorn_knopp_teacher(x, teacher_temp=0.3, valid=valid))
    np.testing.assert_allclose(got[valid], _sk_np(x[valid], 0.3), rtol=1e-5, atol=1e-7)
    assert np.all(got[~valid] == 0)
    everything = losses.sinkhorn_knopp_teacher(x, teacher_temp=0.3, valid=np.ones((6, 4), bool))
    np.testing.assert_allclose(everything, losses.sinkhorn_knopp_teacher(x, teacher_temp=0.3))
    none = losses.sinkhorn_knopp_teacher(x, teacher_temp=0.3, valid=np.zeros((6, 4), bool))
    assert np.all(np.asarray(none) == 0)
