"""RankMe and LiDAR: by hand, against float64 numpy references written from the papers'
formulas (stable-pretraining's callbacks), their ranges, rotation invariance, jit == no-jit."""

import jax
import numpy as np
import pytest
import scipy.linalg

from jssl.evaluation import lidar, rankme


def np_rankme(x, eps):
    s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    p = s / s.sum() + eps
    return np.exp(-np.sum(p * np.log(p)))


def np_lidar(e, delta, eps):
    e = np.asarray(e, np.float64)
    n, q, d = e.shape
    mu_i = e.mean(axis=1)
    mu = mu_i.mean(axis=0)
    s_b = sum(np.outer(m - mu, m - mu) for m in mu_i) / (n - 1)
    s_w = sum(np.outer(e[i, j] - mu_i[i], e[i, j] - mu_i[i]) for i in range(n) for j in range(q))
    s_w = s_w / (n * (q - 1)) + delta * np.eye(d)
    w, v = np.linalg.eigh(s_w)
    inv_sqrt = v @ np.diag(np.maximum(w, eps) ** -0.5) @ v.T
    sigma = inv_sqrt @ s_b @ inv_sqrt
    lam = np.maximum(np.linalg.eigvalsh((sigma + sigma.T) / 2), 0)
    p = (lam + eps) / np.sum(lam + eps)
    return np.exp(-np.sum(p * np.log(p)))


def test_rankme_by_hand():
    # Singular values 3 and 1: p = (0.75, 0.25) + eps, RankMe = exp(H(p)).
    x = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32)
    p = np.array([0.75, 0.25]) + 1e-7
    want = np.exp(-np.sum(p * np.log(p)))
    got = rankme(x)
    assert got.dtype == np.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    assert 1.75 < want < 1.76


@pytest.mark.parametrize("eps", [1e-7, 1e-5])
def test_rankme_against_float64_and_its_range(eps):
    rng = np.random.default_rng(0)
    full = rng.normal(size=(500, 16)).astype(np.float32)
    low = (rng.normal(size=(500, 3)) @ rng.normal(size=(3, 16))).astype(np.float32)
    for x in (full, low, full * 1e3):
        np.testing.assert_allclose(float(rankme(x, eps=eps)), np_rankme(x, eps), rtol=1e-4)
    assert 14.5 < float(rankme(full)) <= 16  # isotropic: nearly its dimension
    assert float(rankme(low)) < 3.2  # rank 3 (the zero singular values add only eps)
    assert float(rankme(np.ones((50, 16), np.float32))) == pytest.approx(1.0, abs=1e-4)


def test_lidar_against_float64_its_range_and_rank_deficient_input():
    rng = np.random.default_rng(1)
    n, q, d = 12, 4, 6
    centres = rng.normal(size=(n, 1, d))
    e = (centres + 0.3 * rng.normal(size=(n, q, d))).astype(np.float32)
    got = lidar(e)
    assert got.dtype == np.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), np_lidar(e, 1e-4, 1e-8), rtol=1e-4)
    assert 1 <= float(got) <= min(d, n - 1)
    # Class means on a 2-d plane: LiDAR ~ 2 (rank-deficient between-class scatter).
    plane = rng.normal(size=(n, 1, 2)) @ rng.normal(size=(2, d))
    flat = (plane + 0.05 * rng.normal(size=(n, q, d))).astype(np.float32)
    np.testing.assert_allclose(float(lidar(flat)), np_lidar(flat, 1e-4, 1e-8), rtol=1e-3)
    assert float(lidar(flat)) < 2.5
    np.testing.assert_allclose(
        float(lidar(e, delta=1e-2, eps=1e-6)), np_lidar(e, 1e-2, 1e-6), rtol=1e-4
    )
    with pytest.raises(ValueError, match="n >= 2"):
        lidar(e[:, :1])


def test_rotation_invariance_and_jit_equals_no_jit():
    rng = np.random.default_rng(2)
    e = rng.normal(size=(10, 3, 5)).astype(np.float32)
    rotation = scipy.linalg.qr(rng.normal(size=(5, 5)))[0].astype(np.float32)
    flat = e.reshape(30, 5)
    np.testing.assert_allclose(float(rankme(flat @ rotation)), float(rankme(flat)), rtol=1e-5)
    np.testing.assert_allclose(float(lidar(e @ rotation)), float(lidar(e)), rtol=1e-4)
    np.testing.assert_allclose(float(jax.jit(rankme)(flat)), float(rankme(flat)), rtol=1e-6)
    np.testing.assert_allclose(float(jax.jit(lidar)(e)), float(lidar(e)), rtol=1e-6)


# ----------------------------------------------------------------------------- the evaluators


def test_lidar_evaluator_scores_the_crops_of_each_test_image_on_8_devices_as_by_hand():
    """``eval.extra_evaluators=('lidar',)`` adds LiDAR to SimCLR's evaluation: the value is
    ``lidar`` of the representation of ``lidar_views`` random crops of ``lidar_images``
    test images, computed here directly on one device from the same crops (each drawn from
    the image's row and the view's number); the range is [1, min(D, n - 1)]."""
    from jssl import augment, pretext, trainer
    from jssl.data import take_subset
    from jssl.evaluation import Predictor, evaluators
    from tests.helpers import tiny_config

    config = tiny_config(
        "simclr",
        **{"eval.extra_evaluators": ("lidar",), "eval.lidar_images": 24, "eval.lidar_views": 3},
    )
    exp = trainer.Experiment(config)
    assert exp.evaluators() == ("knn", "linear_probe", "kmeans", "lidar")
    state = exp.init_state()
    ctx = evaluators.EvalContext(
        config=config,
        predict=exp.predict,
        state=state,
        train=exp.train,
        test=exp.dataset.test,
        num_classes=10,
        class_names=(),
    )
    got = evaluators.lidar_score(ctx)["lidar"].value

    images = take_subset(exp.dataset.test, 24, seed=config.seed + 3)
    x = augment.eval_view(images.get(np.arange(24)), size=(config.augment.crop_size,) * 2)
    variables = ctx.variables()
    a = config.augment
    per_view = []
    for v in range(3):  # view v of image i: key fold_in(fold_in(key(seed), v), i)
        key = jax.random.fold_in(jax.random.key(config.seed), v)
        view = np.stack([
            pretext.crop_flip_view(
                jax.random.fold_in(key, i), x[i], size=x.shape[1], scale=tuple(a.scale),
                flip=a.flip,
            )
            for i in range(len(x))
        ])  # fmt: skip
        per_view.append(exp.model.apply(variables, view, train=False)[1]["features"])
    want = np.stack(per_view, axis=1)  # [n, q, D]
    selector = evaluators.AugmentedViews("features", 3, tuple(a.scale), a.flip, config.seed)
    embeddings = exp.predict(variables, images, selector)
    np.testing.assert_allclose(embeddings, want, rtol=1e-5, atol=1e-6)
    # An image's crops do not depend on the batch it falls in: batches of 8 (images 8 and
    # 16 at the place of image 0) give the same views, so LiDAR does not change with
    # eval.batch_size or the device count.
    small = Predictor(exp.model, exp.mesh, crop_size=a.crop_size, batch_size=8)
    np.testing.assert_allclose(small(variables, images, selector), want, rtol=1e-5, atol=1e-6)
    # LiDAR with n (q - 1) = 48 < D = 128 is ill-conditioned (S_w's null space is only
    # regularised by delta): judged on the embeddings above, the score from them here.
    np.testing.assert_allclose(got, lidar(embeddings), rtol=1e-6)
    assert 1.0 <= got <= min(per_view[0].shape[-1], 23) + 1e-3
    # the three crops of an image differ: the views are augmented, not copies
    assert not np.allclose(per_view[0], per_view[1])


def test_bad_extra_evaluator_is_a_config_error():
    from jssl.validation import ConfigError, validate_config
    from tests.helpers import tiny_config

    with pytest.raises(ConfigError, match="eval.extra_evaluators=.*'lidr'.*unknown evaluator"):
        validate_config(tiny_config("simclr", **{"eval.extra_evaluators": ("lidr",)}))
