"""The siamese, redundancy-reduction, prototype and queue methods' losses (BYOL, SimSiam,
Barlow Twins, VICReg, SwAV, MoCo v2/v3, NNCLR, MAE, KoLeo, iBOT): golden values by hand,
float64 numpy references written from the authors' code, batch-permutation invariance,
stop-gradients, and 8 devices equal to 1."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jssl import losses, sharding

LN2 = math.log(2.0)
TOL = dict(rtol=1e-5, atol=1e-6)


def close(got, want, **kw):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, **(TOL | kw))


def normal(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def row_ce_diagonal(logits):
    """mean_i -log softmax(logits_i)_i, one row at a time."""
    return np.mean([-log_softmax(logits[i])[i] for i in range(len(logits))])


# ------------------------------------------------------------------ numpy references


def np_byol(p, z):
    return np.mean(
        [
            2 - 2 * (a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
            for a, b in zip(p, z, strict=True)
        ]
    )


def np_simsiam(p, z):
    return -np.mean(
        [(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in zip(p, z, strict=True)]
    )


def np_barlow(z1, z2, lambd):
    n, d = z1.shape
    bn = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)  # np.var is biased
    a, b = bn(z1), bn(z2)
    c = np.array([[np.sum(a[:, i] * b[:, j]) / n for j in range(d)] for i in range(d)])
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lambd * off


def np_vicreg(x, y, sim=25.0, std=25.0, cov=1.0):
    n, d = x.shape
    repr_loss = np.mean((x - y) ** 2)
    x, y = x - x.mean(0), y - y.mean(0)
    std_x, std_y = np.sqrt(x.var(0, ddof=1) + 1e-4), np.sqrt(y.var(0, ddof=1) + 1e-4)
    std_loss = np.mean(np.maximum(0, 1 - std_x)) / 2 + np.mean(np.maximum(0, 1 - std_y)) / 2
    off = lambda c: np.sum(c**2) - np.sum(np.diag(c) ** 2)
    cov_loss = off(np.cov(x, rowvar=False)) / d + off(np.cov(y, rowvar=False)) / d
    return sim * repr_loss + std * std_loss + cov * cov_loss, repr_loss, std_loss, cov_loss


def np_sinkhorn(out, epsilon=0.05, iters=3):
    """SwAV's distributed_sinkhorn on one process, in the probability domain."""
    q = np.exp(out / epsilon).T  # [K, B]
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def np_swav(scores, codes, temperature):
    """SwAV's main_swav loss loop: crops_for_assign = the first T crops."""
    num_crops = len(scores)
    loss = 0.0
    for t, q in enumerate(codes):
        sub = 0.0
        for v in np.delete(np.arange(num_crops), t):
            sub -= np.mean(np.sum(q * log_softmax(scores[v] / temperature), axis=1))
        loss += sub / (num_crops - 1)
    return loss / len(codes)


def np_moco_v3(q, k, temperature):
    return row_ce_diagonal(unit(q) @ unit(k).T / temperature) * 2 * temperature


def np_infonce_queue(q, k, queue, temperature):
    q, k, queue = unit(q), unit(k), unit(queue)
    total = 0.0
    for i in range(len(q)):
        logits = np.concatenate([[q[i] @ k[i]], queue @ q[i]]) / temperature
        total += -log_softmax(logits)[0]
    return total / len(q)


def np_nearest(z, support):
    return np.stack([support[np.argmax([unit(zi) @ unit(s) for s in support])] for zi in z])


def np_nnclr(nn, p, temperature):
    return row_ce_diagonal(unit(nn) @ unit(p).T / temperature)


def np_patchify(images, p):
    """MAE's patchify on the NCHW image (einsum nchpwq->nhwpqc)."""
    x = np.transpose(images, (0, 3, 1, 2))
    n, c, hh, ww = x.shape
    h, w = hh // p, ww // p
    x = x.reshape(n, c, h, p, w, p)
    x = np.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def np_mae(pred, target, mask, norm_pix):
    if norm_pix:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, ddof=1, keepdims=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


def np_koleo(x, eps=1e-8):
    """DINOv2's KoLeoLoss: F.normalize, diagonal -1, PairwiseDistance(eps) = ||a - b + eps||."""
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    dots = x @ x.T
    np.fill_diagonal(dots, -1)
    nn = np.argmax(dots, axis=1)
    dist = np.linalg.norm(x - x[nn] + eps, axis=-1)
    return -np.mean(np.log(dist + eps))


def np_ibot(s, t, mask, center, student_temp, teacher_temp):
    n, length, _ = s.shape
    total = 0.0
    for i in range(n):
        acc = 0.0
        for j in range(length):
            if mask[i, j]:
                q = np.exp(log_softmax((t[i, j] - center) / teacher_temp))
                acc += -np.sum(q * log_softmax(s[i, j] / student_temp))
        total += acc / max(1.0, mask[i].sum())
    return total / n


# ------------------------------------------------------------------ hand-computed values


def test_byol_and_simsiam_hand_computed():
    # Row 0: p = (1, 0), z = (2, 0): cos 1. Row 1: p = (1, 1), z = (0, 3): cos 1/sqrt(2).
    # BYOL: mean(2 - 2, 2 - sqrt(2)) = 1 - 1/sqrt(2) = 0.2928932.
    # SimSiam: -mean(1, 1/sqrt(2)) = -(1 + 1/sqrt(2)) / 2 = -0.8535534.
    p = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    z = jnp.array([[2.0, 0.0], [0.0, 3.0]])
    close(losses.byol_loss(p, z), 1 - 1 / math.sqrt(2))
    close(losses.simsiam_loss(p, z), -(1 + 1 / math.sqrt(2)) / 2)


def test_barlow_twins_hand_computed():
    # N = 2: every column of z1 = [[1, 1], [-1, -1]] and z2 = [[1, -1], [-1, 1]] has mean 0
    # and biased variance 1, so BatchNorm maps +-1 to +-s, s^2 = 1 / (1 + 1e-5).
    # c = z1n^T z2n / 2: c_00 = (s.s + s.s)/2 = s^2, c_01 = -s^2, c_10 = s^2, c_11 = -s^2.
    # on-diagonal: (1 - s^2)^2 + (1 + s^2)^2; off-diagonal: lambda * (s^4 + s^4).
    s2 = 1 / (1 + 1e-5)
    z1 = jnp.array([[1.0, 1.0], [-1.0, -1.0]])
    z2 = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
    on = (1 - s2) ** 2 + (1 + s2) ** 2
    close(losses.barlow_twins_loss(z1, z2), on + 0.0051 * 2 * s2**2)  # = 4.0101598
    close(losses.barlow_twins_loss(z1, z2, lambda_=0.5), on + 0.5 * 2 * s2**2)


def test_vicreg_hand_computed():
    # z1 = [[1, 0], [-1, 0]], z2 = [[1, 1], [-1, -1]] (both already centred), N = 2, D = 2.
    # invariance: differences (0, -1), (0, 1): 2 / 4 elements = 0.5.
    # unbiased variances (N - 1 = 1): z1 (2, 0), z2 (2, 2); std = sqrt(var + 1e-4):
    # z1 (1.414, 0.01) -> mean relu(1 - std) = (0 + 0.99) / 2 = 0.495; z2: 0.
    # variance = 0.495 / 2 + 0 / 2 = 0.2475.
    # covariances z^T z / 1: z1 [[2, 0], [0, 0]] (off-diagonal 0); z2 [[2, 2], [2, 2]]:
    # (2^2 + 2^2) / D = 4. covariance = 0 + 4 = 4.
    # total = 25 * 0.5 + 25 * 0.2475 + 1 * 4 = 22.6875.
    z1 = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    z2 = jnp.array([[1.0, 1.0], [-1.0, -1.0]])
    total, inv, var, cov = losses.vicreg_loss(z1, z2)
    close(inv, 0.5)
    close(var, 0.2475)
    close(cov, 4.0)
    close(total, 22.6875)
    close(losses.vicreg_loss(z1, z2, sim_coeff=1.0, std_coeff=2.0, cov_coeff=0.5)[0], 2.995)


def _logits(probs, temp, shift=0.0):
    """Logits z with softmax((z - shift) / temp) = ``probs``."""
    return temp * np.log(np.asarray(probs, np.float64)) + shift


def test_swav_loss_hand_computed():
    # K = 3, temperature 0.5; crops 0, 1, 2 score example n0 with softmax A, B, C:
    # -log A = ln2 (1, 2, 2), -log B = ln2 (2, 1, 2), -log C = ln2 (2, 2, 1).
    # Codes of the T = 2 global crops for n0: t0 (1/2, 1/2, 0), t1 (0, 0, 1).
    # Pairs v != t: (t0, v1) ln2 (1 + 1/2) = 1.5 ln2; (t0, v2) 2 ln2;
    #               (t1, v0) 2 ln2;                  (t1, v2) 1 ln2.
    # Mean over the 4 pairs: 6.5 / 4 = 1.625 ln2. Example n1 scores every k alike in every
    # crop: each cross-entropy is ln3 whatever the code. Loss = (1.625 ln2 + ln3) / 2.
    a, b, c = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]
    scores = np.stack([np.stack([_logits(p, 0.5), np.full(3, 0.3)]) for p in (a, b, c)])
    codes = np.array([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.2, 0.3, 0.5]]])
    got = losses.swav_loss(jnp.asarray(scores, jnp.float32), jnp.asarray(codes), temperature=0.5)
    close(got, (1.625 * LN2 + math.log(3)) / 2)


def test_swav_codes_hand_computed():
    # Crop 0: scores [[a, 0], [0, a]] with a = 0.05 ln3: exp(s / 0.05) = [[3, 1], [1, 3]]
    # already has equal column sums, so the plan is its row softmax [[3/4, 1/4], [1/4, 3/4]].
    # Crop 1: both examples prefer prototype 0 ([[1, 0], [1, 0]]): equipartition forces
    # columns to sum to N / K = 1, and the two equal rows become (1/2, 1/2).
    a = 0.05 * math.log(3)
    scores = jnp.array([[[a, 0.0], [0.0, a]], [[1.0, 0.0], [1.0, 0.0]]])
    codes = losses.swav_codes(scores)
    close(codes, [[[0.75, 0.25], [0.25, 0.75]], [[0.5, 0.5], [0.5, 0.5]]])


def test_moco_v3_hand_computed():
    # q = I, k = [[2, 0], [0, 1]] -> normalised q k^T = I. T = 0.5: logits 2 I; each row
    # -log(e^2 / (e^2 + 1)) = log(1 + e^-2); times 2T = 1: log(1 + e^-2) = 0.1269280.
    q = jnp.eye(2)
    k = jnp.array([[2.0, 0.0], [0.0, 1.0]])
    close(losses.moco_v3_loss(q, k, temperature=0.5), math.log(1 + math.exp(-2)))
    # T = 1: logits I, each row log(1 + 1/e); times 2: 0.6265234.
    close(losses.moco_v3_loss(q, k, temperature=1.0), 2 * math.log(1 + math.exp(-1)))


def test_infonce_with_queue_hand_computed():
    # q = I, k = [[1, 0], [0, 3]] (q_i . k_i = 1), queue rows (0, 1) and (-2, 0) -> (-1, 0).
    # T = 1. Row 0, q = (1, 0): logits [1, 0, -1] -> -log(e / (e + 1 + 1/e)) = log(1 + 1/e + 1/e^2).
    # Row 1, q = (0, 1): logits [1, 1, 0] -> log((2e + 1) / e) = log(2 + 1/e).
    q = jnp.eye(2)
    k = jnp.array([[1.0, 0.0], [0.0, 3.0]])
    queue = jnp.array([[0.0, 1.0], [-2.0, 0.0]])
    e = math.e
    want = (math.log(1 + 1 / e + 1 / e**2) + math.log(2 + 1 / e)) / 2
    close(losses.infonce_with_queue(q, k, queue, temperature=1.0), want)


def test_nearest_neighbors_and_nnclr_hand_computed():
    # z0 = (0, 1): cosines with the support rows (0, 1), (5, 5), (0.1, -1): 1, 0.707, -0.99
    # -> row 0 (a dot product would pick (5, 5)). z1 = (1, -1): -0.707, 0, 0.77 -> row 2.
    support = jnp.array([[0.0, 1.0], [5.0, 5.0], [0.1, -1.0]])
    nn = losses.nearest_neighbors(jnp.array([[0.0, 1.0], [1.0, -1.0]]), support)
    close(nn, [[0.0, 1.0], [0.1, -1.0]])
    # nnclr: nn = I, p = [[1, 1], [0, 2]] -> normalised (1, 1)/sqrt2, (0, 1). T = 1:
    # logits nn p^T = [[r, 0], [r, 1]], r = 1/sqrt2. Row 0: -log(e^r / (e^r + 1)) = log(1 + e^-r);
    # row 1: -log(e / (e^r + e)) = log(1 + e^(r - 1)).
    r = 1 / math.sqrt(2)
    got = losses.nnclr_loss(jnp.eye(2), jnp.array([[1.0, 1.0], [0.0, 2.0]]), temperature=1.0)
    close(got, (math.log(1 + math.exp(-r)) + math.log(1 + math.exp(r - 1))) / 2)


def test_patchify_hand_computed():
    # One 4x4 single-channel image 0..15 row by row, p = 2: row-major patches of 2x2 pixels.
    images = jnp.arange(16.0).reshape(1, 4, 4, 1)
    want = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    close(losses.patchify(images, 2), [want])
    # Two channels: each pixel's channels are adjacent ((p, p, C) order).
    two = jnp.stack([images[..., 0], 100 + images[..., 0]], axis=-1)
    close(losses.patchify(two, 2)[0, 0], [0, 100, 1, 101, 4, 104, 5, 105])


def test_mae_loss_hand_computed():
    # N = 2 images, L = 2 patches, P = 3 pixels; pred = 0 except image 1 patch 0 (10, 10, 10).
    # Targets: (0, 1, 2) (mean 1, unbiased var 1), (5, 5, 5) (var 0), (2, 4, 6) (var 4),
    # (3, 2, 1) (var 1). mask: image 0 both patches, image 1 patch 1 only.
    # norm_pix: (0,1,2) -> (-1, 0, 1) / sqrt(1 + 1e-6), error mean 2/3 / (1 + 1e-6);
    # (5,5,5) -> 0, error 0; (3,2,1) -> (1, 0, -1) / sqrt(1 + 1e-6), 2/3 / (1 + 1e-6).
    # Image 1 patch 0 (error ~100) is not masked. Mean over 3 masked patches:
    # (4/3) / (1 + 1e-6) / 3 = 4/9 / (1 + 1e-6).
    # Without norm_pix: (0 + 1 + 4)/3 = 5/3, 25, (9 + 4 + 1)/3 = 14/3 -> (5/3 + 25 + 14/3)/3 = 94/9.
    target = jnp.array([[[0.0, 1, 2], [5, 5, 5]], [[2, 4, 6], [3, 2, 1]]])
    pred = jnp.zeros((2, 2, 3)).at[1, 0].set(10.0)
    mask = jnp.array([[1, 1], [0, 1]])
    close(losses.mae_loss(pred, target, mask), 4 / 9 / (1 + 1e-6))
    close(losses.mae_loss(pred, target, mask, norm_pix=False), 94 / 9)


def test_koleo_hand_computed():
    # Rows (1, 0), (0, 2) -> (0, 1), 3 (cos 30, sin 30) -> (cos 30, sin 30) after normalising.
    # Inner products: x0.x1 = 0, x0.x2 = cos 30 = 0.866, x1.x2 = cos 60 = 0.5.
    # nn(0) = 2, nn(1) = 2, nn(2) = 0. Chords: |x0 - x2| = 2 sin 15 deg, |x1 - x2| = 2 sin 30 = 1.
    # loss = -(log(2 sin 15) + log 1 + log(2 sin 15)) / 3 = -(2/3) log(2 sin 15) = 0.4389861.
    c30, s30 = math.cos(math.pi / 6), math.sin(math.pi / 6)
    x = jnp.array([[1.0, 0.0], [0.0, 2.0], [3 * c30, 3 * s30]])
    close(losses.koleo_loss(x), -(2 / 3) * math.log(2 * math.sin(math.pi / 12)))


def test_ibot_patch_loss_hand_computed():
    # K = 3, teacher q and student p from A, B, C with -log A = ln2 (1, 2, 2) etc., so
    # CE(q, A) = ln2 (2 - q_0), CE(q, B) = ln2 (2 - q_1), CE(q, C) = ln2 (2 - q_2).
    # Image 0, both patches masked: (q A, p A) 1.5 ln2, (q C, p B) 1.75 ln2 -> mean 1.625 ln2.
    # Image 1, patch 1 masked: (q B, p C) 1.75 ln2 (patch 0, unmasked, has junk logits).
    # Image 2, nothing masked: 0 (count floored at 1). Mean over 3 images: 3.375/3 = 1.125 ln2.
    a, b, c = [0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]
    center = np.array([0.5, -1.0, 2.0])
    junk = np.array([9.0, -3.0, 0.0])
    teacher = np.stack(
        [
            [_logits(a, 0.04, center), _logits(c, 0.04, center)],
            [junk, _logits(b, 0.04, center)],
            [junk, junk],
        ]
    )
    student = np.stack(
        [[_logits(a, 0.1), _logits(b, 0.1)], [-junk, _logits(c, 0.1)], [junk, -junk]]
    )
    mask = np.array([[1, 1], [0, 1], [0, 0]])
    got = losses.ibot_patch_loss(
        jnp.asarray(student, jnp.float32),
        jnp.asarray(teacher, jnp.float32),
        jnp.asarray(mask),
        jnp.asarray(center, jnp.float32),
        student_temp=0.1,
        teacher_temp=0.04,
    )
    close(got, 1.125 * LN2)


# ------------------------------------------------------------------ numpy references


def test_siamese_match_numpy():
    p, z = normal(0, 2, 12, 6)
    close(losses.byol_loss(p, z), np_byol(*f64(p, z)))
    close(losses.simsiam_loss(p, z), np_simsiam(*f64(p, z)))


@pytest.mark.parametrize("lambd", [0.0051, 0.3])
def test_barlow_twins_matches_numpy(lambd):
    z1, z2 = normal(1, 2, 12, 5)
    z2 = 3.0 * z2 + 1.0  # scale and shift are standardised away per dimension
    close(losses.barlow_twins_loss(z1, z2, lambda_=lambd), np_barlow(*f64(z1, z2), lambd))


def test_vicreg_matches_numpy():
    z1, z2 = normal(2, 2, 12, 5)
    z1 = 0.5 * z1 + 2.0  # std below 1 in every dimension, so the hinge is active
    got = losses.vicreg_loss(z1, z2)
    for g, w in zip(got, np_vicreg(*f64(z1, z2)), strict=True):
        close(g, w)


def test_swav_matches_numpy():
    rng = np.random.default_rng(3)
    scores = rng.uniform(-1, 1, size=(4, 12, 6)).astype(np.float32)  # C = 4, T = 2
    codes = losses.swav_codes(scores[:2])
    want_codes = np.stack([np_sinkhorn(s) for s in f64(*scores[:2])])
    close(codes, want_codes)
    close(jnp.sum(codes, axis=-1), np.ones((2, 12)))
    got = losses.swav_loss(scores, codes, temperature=0.1)
    close(got, np_swav(f64(scores)[0], want_codes, 0.1))


@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_moco_matches_numpy(temperature):
    q, k = normal(4, 2, 12, 6)
    queue = normal(5, 20, 6)
    close(losses.moco_v3_loss(q, k, temperature=temperature), np_moco_v3(*f64(q, k), temperature))
    got = losses.infonce_with_queue(q, k, queue, temperature=temperature)
    close(got, np_infonce_queue(*f64(q, k, queue), temperature))


def test_nnclr_matches_numpy():
    z, p = normal(6, 2, 12, 6)
    support = normal(7, 20, 6)
    nn = losses.nearest_neighbors(z, support)
    close(nn, np_nearest(*f64(z, support)))
    close(losses.nnclr_loss(nn, p, temperature=0.2), np_nnclr(*f64(nn, p), 0.2))


@pytest.mark.parametrize("norm_pix", [True, False])
def test_mae_matches_numpy(norm_pix):
    rng = np.random.default_rng(8)
    images = rng.normal(size=(3, 6, 4, 2)).astype(np.float32)  # H != W, C = 2
    target = losses.patchify(images, 2)
    close(target, np_patchify(f64(images)[0], 2), rtol=0, atol=0)
    pred = rng.normal(size=target.shape).astype(np.float32)
    mask = (rng.uniform(size=target.shape[:2]) < 0.6).astype(np.float32)
    got = losses.mae_loss(pred, target, mask, norm_pix=norm_pix)
    close(got, np_mae(*f64(pred, target, mask), norm_pix))


def test_koleo_matches_numpy():
    x = normal(9, 12, 5)
    close(losses.koleo_loss(x), np_koleo(*f64(x)))


def test_ibot_matches_numpy():
    rng = np.random.default_rng(10)
    s, t = rng.normal(size=(2, 4, 5, 7)).astype(np.float32)
    center = (0.1 * rng.normal(size=7)).astype(np.float32)
    mask = (rng.uniform(size=(4, 5)) < 0.5).astype(np.float32)
    mask[1] = 0.0  # one image without masked patches
    kw = dict(student_temp=0.1, teacher_temp=0.04)
    got = losses.ibot_patch_loss(s, t, mask, center, **kw)
    close(got, np_ibot(*f64(s, t, mask, center), 0.1, 0.04))


# ------------------------------------------------------------------ one table: every loss

BATCH = PartitionSpec("data")
SCORES = PartitionSpec(None, "data")  # [C, N, K]: the batch is axis 1
REPLICATED = PartitionSpec()
IBOT_KW = dict(student_temp=0.1, teacher_temp=0.04)


def _swav(scores):
    codes = losses.swav_codes(scores[:2])
    return losses.swav_loss(scores, codes, temperature=0.1), codes


def _nnclr(z, support, p):
    return losses.nnclr_loss(losses.nearest_neighbors(z, support), p, temperature=0.2), ()


def _mae(pred, images, mask):
    return losses.mae_loss(pred, losses.patchify(images, 2), mask), ()


def _mask(seed, *shape):
    return (np.random.default_rng(seed).uniform(size=shape) < 0.5).astype(np.float32)


# name: (function returning (loss, aux), inputs, batch axis of each input (None: not a
# per-example input), argnums differentiated). N = 16 throughout (2 rows per device).
CASES = {
    "byol": (lambda p, z: (losses.byol_loss(p, z), ()), [*normal(11, 2, 16, 8)], [0, 0], (0, 1)),
    "simsiam": (
        lambda p, z: (losses.simsiam_loss(p, z), ()),
        [*normal(12, 2, 16, 8)],
        [0, 0],
        (0, 1),
    ),
    "barlow_twins": (
        lambda a, b: (losses.barlow_twins_loss(a, b), ()),
        [*normal(13, 2, 16, 8)],
        [0, 0],
        (0, 1),
    ),
    "vicreg": (
        lambda a, b: (lambda out: (out[0], out[1:]))(losses.vicreg_loss(a, b)),
        [*(0.5 * normal(14, 2, 16, 8))],
        [0, 0],
        (0, 1),
    ),
    "swav": (_swav, [np.tanh(normal(15, 4, 16, 6))], [1], (0,)),
    "moco_v3": (
        lambda q, k: (losses.moco_v3_loss(q, k, temperature=0.2), ()),
        [*normal(16, 2, 16, 8)],
        [0, 0],
        (0, 1),
    ),
    "infonce_with_queue": (
        lambda q, k, queue: (losses.infonce_with_queue(q, k, queue, temperature=0.2), ()),
        [*normal(17, 2, 16, 8), normal(18, 24, 8)],
        [0, 0, None],
        (0, 1, 2),
    ),
    "nnclr": (
        _nnclr,
        [normal(19, 16, 8), normal(20, 24, 8), normal(21, 16, 8)],
        [0, None, 0],
        (2,),
    ),
    "mae": (
        _mae,
        [normal(22, 16, 4, 12), normal(23, 16, 4, 4, 3), _mask(24, 16, 4)],
        [0, 0, 0],
        (0,),
    ),
    "koleo": (lambda x: (losses.koleo_loss(x), ()), [normal(25, 16, 8)], [0], (0,)),
    "ibot": (
        lambda s, t, m, c: (losses.ibot_patch_loss(s, t, m, c, **IBOT_KW), ()),
        [*normal(26, 2, 16, 3, 5), _mask(27, 16, 3), 0.1 * normal(28, 5)],
        [0, 0, 0, None],
        (0, 1, 3),
    ),
}


def _spec(axis):
    if axis is None:
        return REPLICATED
    return BATCH if axis == 0 else SCORES


@functools.cache
def _step(name):
    """The one jitted (loss, aux), grads of a case, shared by the tests below."""
    fn, _, _, argnums = CASES[name]
    return jax.jit(jax.value_and_grad(fn, argnums=argnums, has_aux=True))


def _run(name, inputs, devices):
    _, _, axes, _ = CASES[name]
    mesh = sharding.make_mesh(devices)
    put = lambda x, a: jax.device_put(x, NamedSharding(mesh, _spec(a)))
    return _step(name)(*[put(x, a) for x, a in zip(inputs, axes, strict=True)])


@pytest.mark.parametrize("name", sorted(CASES))
def test_8_devices_equal_1_device(name):
    """Loss, aux and gradients of the global batch sharded 8 ways equal those on 1 device."""
    inputs = CASES[name][1]
    assert len(jax.devices()) == 8
    (loss8, aux8), grads8 = _run(name, inputs, jax.devices())
    (loss1, aux1), grads1 = _run(name, inputs, jax.devices()[:1])
    assert loss8.dtype == jnp.float32 and np.isfinite(float(loss8))
    chex.assert_trees_all_close((loss8, aux8, grads8), (loss1, aux1, grads1), **TOL)
    assert any(np.any(np.asarray(g)) for g in grads8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_permutation_invariance(name):
    """Permuting the examples (every per-example input alike; queues, supports and centres
    kept) keeps the loss, and permutes the gradients of the per-example inputs alike."""
    _, inputs, axes, argnums = CASES[name]
    perm = np.random.default_rng(29).permutation(16)
    permute = lambda x, a: x if a is None else np.take(np.asarray(x), perm, axis=a)
    permuted = [permute(x, a) for x, a in zip(inputs, axes, strict=True)]
    (loss, _), grads = _run(name, inputs, jax.devices()[:1])
    (loss_p, _), grads_p = _run(name, permuted, jax.devices()[:1])
    close(loss_p, float(loss))
    for i, g, g_p in zip(argnums, grads, grads_p, strict=True):
        close(g_p, permute(np.asarray(g, np.float64), axes[i]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_inputs_computed_in_float32(name):
    fn, inputs, _, _ = CASES[name]
    loss = fn(*[jnp.asarray(x, jnp.bfloat16) for x in inputs])[0]
    assert loss.dtype == jnp.float32
    close(loss, float(fn(*inputs)[0]), rtol=5e-2, atol=5e-2)


# ------------------------------------------------------------------ stop-gradients


def test_siamese_targets_get_no_gradient():
    p, z = normal(30, 2, 8, 4)
    for loss in (losses.byol_loss, losses.simsiam_loss):
        g_p, g_z = jax.jit(jax.grad(loss, argnums=(0, 1)))(p, z)
        assert not np.any(g_z), loss.__name__
        assert np.any(g_p), loss.__name__


def test_moco_keys_and_queue_get_no_gradient():
    q, k = normal(31, 2, 8, 4)
    queue = normal(32, 10, 4)
    g_q, g_k = jax.jit(jax.grad(lambda a, b: losses.moco_v3_loss(a, b, temperature=0.2), (0, 1)))(
        q, k
    )
    assert not np.any(g_k) and np.any(g_q)
    f = lambda a, b, c: losses.infonce_with_queue(a, b, c, temperature=0.2)
    g_q, g_k, g_queue = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(q, k, queue)
    assert not np.any(g_k) and not np.any(g_queue) and np.any(g_q)


def test_nnclr_neighbours_get_no_gradient():
    z, p = normal(33, 2, 8, 4)
    support = normal(34, 10, 4)
    f = lambda z, s, p: losses.nnclr_loss(losses.nearest_neighbors(z, s), p, temperature=0.2)
    g_z, g_s, g_p = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(z, support, p)
    assert not np.any(g_z) and not np.any(g_s) and np.any(g_p)
    g_nn = jax.jit(jax.grad(lambda nn: losses.nnclr_loss(nn, p, temperature=0.2)))(z)
    assert not np.any(g_nn)


def test_swav_codes_are_targets():
    scores = np.tanh(normal(35, 3, 8, 5))
    g_codes = jax.jit(jax.grad(lambda c: losses.swav_loss(scores, c, temperature=0.1)))(scores[:2])
    assert not np.any(g_codes)
    # Through the full loss (codes computed from the scores) the gradient is the one with
    # the codes held constant: nothing flows back through Sinkhorn.
    codes = losses.swav_codes(scores[:2])
    g_full = jax.jit(jax.grad(lambda s: _swav(s)[0]))(scores)
    g_const = jax.jit(jax.grad(lambda s: losses.swav_loss(s, codes, temperature=0.1)))(scores)
    close(g_full, np.asarray(g_const, np.float64))


def test_ibot_teacher_gets_no_gradient():
    s, t = normal(36, 2, 4, 3, 5)
    mask = np.ones((4, 3), np.float32)
    center = normal(37, 5)
    f = lambda s, t, c: losses.ibot_patch_loss(s, t, mask, c, **IBOT_KW)
    g_s, g_t, g_c = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(s, t, center)
    assert not np.any(g_t) and not np.any(g_c) and np.any(g_s)
    # Unmasked patches get no student gradient either.
    mask[:, 0] = 0.0
    g_s = jax.jit(jax.grad(lambda s: losses.ibot_patch_loss(s, t, mask, center, **IBOT_KW)))(s)
    assert not np.any(g_s[:, 0]) and np.any(g_s[:, 1:])


def test_mae_gradient_only_on_masked_patches():
    pred, target = normal(38, 2, 2, 3, 4)
    mask = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    g = jax.jit(jax.grad(lambda p: losses.mae_loss(p, target, mask)))(pred)
    assert not np.any(g[mask == 0]) and np.all(np.any(g[mask == 1], axis=-1))


def test_koleo_finite_gradient_for_duplicate_rows():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    loss, g = jax.jit(jax.value_and_grad(losses.koleo_loss))(x)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(g))


# ------------------------------------------------------------------ shape errors


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: losses.byol_loss(jnp.zeros((4, 3)), jnp.zeros((5, 3))), "byol_loss"),
        (lambda: losses.vicreg_loss(jnp.zeros((1, 3)), jnp.zeros((1, 3))), "at least 2"),
        (
            lambda: losses.swav_loss(jnp.zeros((2, 4, 3)), jnp.zeros((3, 4, 3)), temperature=0.1),
            "T <= C",
        ),
        (
            lambda: losses.infonce_with_queue(
                jnp.zeros((4, 3)), jnp.zeros((4, 3)), jnp.zeros((6, 2)), temperature=0.1
            ),
            "queue must be",
        ),
        (lambda: losses.patchify(jnp.zeros((1, 5, 4, 1)), 2), "must divide"),
        (
            lambda: losses.mae_loss(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)), jnp.zeros((2, 4))),
            "mask",
        ),
        (lambda: losses.koleo_loss(jnp.zeros((1, 3))), "N >= 2"),
    ],
)
def test_shape_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
