"""TEMI's and TURTLE's losses: golden values by hand, float64 numpy references translated from
the authors' code (HHU-MMBS/TEMI-official-BMVC2023: losses/multihead_losses.py,
losses/loss_utils.py, losses/mi.py; mlbio-epfl/turtle: run_turtle.py), gradients (stopped where
the authors detach, finite differences of the reference elsewhere), dtypes, confident logits,
jit, 8 devices == 1 and invariances."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jssl import losses, sharding

# ---------------------------------------------------------------------------------------------
# float64 references, line by line from the authors' torch code. Crops are a leading axis here
# where the authors chunk a [crops * N, K] tensor; the lists below are those chunks.


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _sim_weight(p1, p2, gamma=1.0):  # loss_utils.sim_weight
    return ((p1 * p2) ** gamma).sum(-1)


def _beta_mi(p1, p2, pk, beta=1.0, clip_min=-np.inf):  # loss_utils.beta_mi
    beta_emi = (((p1 * p2) ** beta) / pk).sum(-1)
    beta_pmi = np.maximum(np.log(beta_emi), clip_min)
    return -beta_pmi


def _update_ema(output, ema, momentum):  # mi.StudentTeacherLoss.update_ema, one process
    output = np.concatenate(output)  # the tuple of crop chunks
    batch_center = output.sum(0) / len(output)
    return ema * momentum + batch_center * (1 - momentum)


def _temi_np(student, teacher, pk, beta=0.6, student_temp=0.1, teacher_temp=0.1, momentum=None):
    """MultiHeadWeightProbBase.forward with TEMI.weight = sim_weight. With ``momentum``, pk is
    the buffer before the step and compute_weight updates it first, as the authors do; without,
    pk is used as given. Returns (loss = per_head.mean() as train_main.py, per_head, pk)."""
    student, teacher = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    pk = np.array(pk, np.float64)
    # compute_weight
    weight_total, weight_count = 0.0, 0
    for idx, t in enumerate(teacher):
        ncrops_teacher = len(t)
        teacher_probs = list(_softmax(t / teacher_temp))
        if momentum is not None:
            pk[idx] = _update_ema(teacher_probs, pk[idx], momentum)
        for v1 in range(ncrops_teacher):
            for v2 in list(range(ncrops_teacher))[v1 + 1 :]:
                weight_total += _sim_weight(teacher_probs[v1], teacher_probs[v2])
                weight_count += 1
    weight = weight_total / weight_count
    # forward
    multi_loss = []
    for idx, (s, t) in enumerate(zip(student, teacher, strict=True)):
        student_probs = list(_softmax(s / student_temp))
        teacher_probs = list(_softmax(t / teacher_temp))
        tmp_loss, count = 0.0, 0
        for w in range(len(t)):
            for v in range(len(s)):
                if v == w:
                    continue
                tmp_loss += (
                    weight * _beta_mi(student_probs[v], teacher_probs[w], pk[idx], beta)
                ).mean()
                count += 1
        multi_loss.append(tmp_loss / count)
    per_head = np.stack(multi_loss)
    return per_head.mean(), per_head, pk


def _entr(x):  # torch.special.entr
    return np.where(x > 0, -x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def _turtle_np(task_logits, inner_logits, gamma=10.0):
    """run_turtle.py: task_encoding (labels), pred_error, entr_reg, the outer loss."""
    task, inner = np.asarray(task_logits, np.float64), np.asarray(inner_logits, np.float64)
    label_per_space = [_softmax(z) for z in task]
    labels = sum(label_per_space) / len(label_per_space)
    # F.cross_entropy(logits, soft targets) = mean_n -sum_c target log_softmax(logits)
    pred_error = sum((-(labels * _log_softmax(w)).sum(-1)).mean() for w in inner)
    entr_reg = sum(_entr(lab.mean(0)).sum() for lab in label_per_space)
    return pred_error - gamma * entr_reg, pred_error, entr_reg, labels


def _rand(seed, *shape, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _temi_inputs(seed, h, s, t, n, k, scale=0.5):
    student, teacher = (
        _rand(seed, h, s, n, k, scale=scale),
        _rand(seed + 1, h, t, n, k, scale=scale),
    )
    prior = np.random.default_rng(seed + 2).dirichlet(np.ones(k), size=h).astype(np.float32)
    return student, teacher, prior


def _numeric_grad(f, x, eps=1e-6):
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


# ---------------------------------------------------------------------------------------------
# Golden values


def test_temi_golden_value_by_hand():
    """H = 1, T = S = 2, N = 2, K = 2, prior (1/2, 1/2), temperatures 1; softmax(log 3, 0) =
    (3/4, 1/4), softmax(0, 0) = (1/2, 1/2), softmax(0, log 3) = (1/4, 3/4).
      teacher n=0: q0 = (3/4, 1/4), q1 = (1/4, 3/4);  n=1: q0 = q1 = (1/2, 1/2)
      student (both n): p0 = (1/2, 1/2), p1 = (3/4, 1/4)
      w = (3/16 + 3/16, 1/4 + 1/4) = (3/8, 1/2)
    beta = 1/2: sum_k sqrt(p q) / (1/2) is 2 where p = q, and 2 (sqrt(3/8) + sqrt(1/8))
      = (1 + sqrt 3) / sqrt 2 for a (3/4, 1/4) against a (1/2, 1/2);
      pair (t0, s1): n0 p1.q0 equal -> -log 2, n1 -> -log((1+sqrt3)/sqrt2)
      pair (t1, s0): n0 -> -log((1+sqrt3)/sqrt2), n1 equal -> -log 2
      per_head = (pair means summed: (3/8 + 1/2)/2 (-log 2 - log((1+sqrt3)/sqrt2))) / 2 pairs
               = -(7/32) log(sqrt2 (1 + sqrt3))
    beta = 1: sum_k p q / (1/2): pair (t0, s1) n0 = 2 (9/16 + 1/16) = 5/4, all others 1
      per_head = (3/8) (-log 5/4) / 2 / 2 = -(3/32) log(5/4)."""
    l3 = math.log(3.0)
    teacher64 = np.array([[[[l3, 0.0], [0.0, 0.0]], [[0.0, l3], [0.0, 0.0]]]])
    student64 = np.array([[[[0.0, 0.0], [0.0, 0.0]], [[l3, 0.0], [l3, 0.0]]]])
    teacher, student = teacher64.astype(np.float32), student64.astype(np.float32)
    prior = np.full((1, 2), 0.5, np.float32)
    temps = dict(student_temp=1.0, teacher_temp=1.0)
    cases = {
        0.5: -(7 / 32) * math.log(math.sqrt(2) * (1 + math.sqrt(3))),
        1.0: -(3 / 32) * math.log(5 / 4),
    }
    for beta, want in cases.items():
        loss, per_head = losses.temi_loss(student, teacher, prior, beta=beta, **temps)
        assert loss.shape == () and per_head.shape == (1,)
        assert loss.dtype == per_head.dtype == jnp.float32
        np.testing.assert_allclose(float(loss), want, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(per_head), [want], rtol=1e-6)
        ref = _temi_np(student64, teacher64, prior, beta, 1.0, 1.0)[0]
        np.testing.assert_allclose(ref, want, rtol=1e-12)
    # The default temperatures 0.1 on logits a tenth as large: the same softmaxes.
    loss, _ = losses.temi_loss(student / 10, teacher / 10, prior, beta=0.5)
    np.testing.assert_allclose(float(loss), cases[0.5], rtol=1e-5)


def test_turtle_golden_value_by_hand():
    """S = 1, N = 2, C = 2: task softmaxes (3/4, 1/4) and (1/2, 1/2); inner log-softmaxes
    (-log 2, -log 2) and (log 3/4, log 1/4).
      prediction_error = mean(log 2, -(1/2)(log 3/4 + log 1/4)) = (3 log 2 - (1/2) log 3) / 2
      entropy = entr(5/8) + entr(3/8) = -(5/8) log(5/8) - (3/8) log(3/8)
      loss = prediction_error - 10 entropy."""
    l3 = math.log(3.0)
    task = np.array([[[l3, 0.0], [0.0, 0.0]]], np.float32)
    inner = np.array([[[0.0, 0.0], [l3, 0.0]]], np.float32)
    pe = (3 * math.log(2) - 0.5 * l3) / 2
    ent = -(5 / 8) * math.log(5 / 8) - (3 / 8) * math.log(3 / 8)
    got = losses.turtle_loss(task, inner)
    for g, want in zip(got, (pe - 10 * ent, pe, ent), strict=True):
        assert g.shape == () and g.dtype == jnp.float32
        np.testing.assert_allclose(float(g), want, rtol=1e-6)
    np.testing.assert_allclose(
        float(losses.turtle_loss(task, inner, gamma=0.5)[0]), pe - ent / 2, 1e-6
    )
    labels = losses.turtle_task_labels(task)
    assert labels.shape == (2, 2) and labels.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(labels), [[0.75, 0.25], [0.5, 0.5]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Against the references


def test_update_cluster_prior_matches_the_reference_and_stays_a_distribution():
    _, teacher, prior = _temi_inputs(10, 3, 3, 3, 5, 4)
    for temp, momentum in ((0.1, 0.9), (0.5, 0.0), (1.0, 0.99)):
        got = losses.update_cluster_prior(prior, teacher, teacher_temp=temp, momentum=momentum)
        want = np.stack(
            [
                _update_ema(list(_softmax(t / temp)), p, momentum)
                for t, p in zip(teacher, prior, strict=True)
            ]
        )
        assert got.shape == (3, 4) and got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, rtol=1e-6)
        assert np.all(np.asarray(got) >= 0)
    # Golden: uniform teacher, prior (1, 0): 0.9 (1, 0) + 0.1 (1/2, 1/2) = (0.95, 0.05).
    got = losses.update_cluster_prior(np.array([[1.0, 0.0]]), np.zeros((1, 2, 3, 2)))
    np.testing.assert_allclose(np.asarray(got), [[0.95, 0.05]], rtol=1e-6)
    with pytest.raises(ValueError, match="prior"):
        losses.update_cluster_prior(prior[:, :3], teacher)


@pytest.mark.parametrize(
    "h,s,t,n,k,kw",
    [
        (1, 2, 2, 4, 3, {}),
        (3, 4, 2, 5, 6, {"beta": 1.0}),
        (2, 3, 3, 4, 5, {"beta": 0.3, "student_temp": 0.2, "teacher_temp": 0.05}),
    ],
)
def test_temi_matches_the_float64_reference(h, s, t, n, k, kw):
    student, teacher, prior = _temi_inputs(20 + h, h, s, t, n, k)
    loss, per_head = losses.temi_loss(student, teacher, prior, **kw)
    want_loss, want_per_head, _ = _temi_np(student, teacher, prior, **kw)
    assert loss.shape == () and per_head.shape == (h,)
    assert loss.dtype == per_head.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(per_head), want_per_head, rtol=1e-5)


def test_temi_step_updates_the_prior_before_the_loss_as_the_authors():
    """The authors' forward updates pk in compute_weight and uses the new pk in the same step:
    update_cluster_prior then temi_loss is that step, not temi_loss on the old prior."""
    student, teacher, old = _temi_inputs(30, 2, 3, 2, 4, 5)
    new = losses.update_cluster_prior(old, teacher)
    loss, per_head = losses.temi_loss(student, teacher, new)
    want_loss, want_per_head, want_pk = _temi_np(student, teacher, old, momentum=0.9)
    np.testing.assert_allclose(np.asarray(new), want_pk, rtol=1e-5)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(per_head), want_per_head, rtol=1e-5)
    stale = _temi_np(student, teacher, old)[0]
    assert abs(stale - want_loss) > 1e-3 * abs(want_loss)


@pytest.mark.parametrize("s,n,c", [(1, 5, 3), (2, 6, 4), (3, 4, 7)])
def test_turtle_matches_the_float64_reference(s, n, c):
    task, inner = _rand(40 + s, s, n, c, scale=2.0), _rand(50 + s, s, n, c, scale=2.0)
    for gamma in (10.0, 0.3):
        got = losses.turtle_loss(task, inner, gamma=gamma)
        want = _turtle_np(task, inner, gamma)
        for g, w in zip(got, want[:3], strict=True):
            assert g.shape == () and g.dtype == jnp.float32
            np.testing.assert_allclose(float(g), w, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(losses.turtle_task_labels(task)), want[3], rtol=1e-5)


def test_shape_errors_are_clear():
    student, teacher, prior = _temi_inputs(60, 2, 3, 2, 4, 5)
    with pytest.raises(ValueError, match="T <= S"):
        losses.temi_loss(student[:, :1], teacher, prior)
    with pytest.raises(ValueError, match="2 <= T"):
        losses.temi_loss(student, teacher[:, :1], prior)
    with pytest.raises(ValueError, match="agree on H, N and K"):
        losses.temi_loss(student[:, :, :3], teacher, prior)
    with pytest.raises(ValueError, match="agree on H, N and K"):
        losses.temi_loss(student, teacher, prior[:1])
    with pytest.raises(ValueError, match=r"\[H, S, N, K\]"):
        losses.temi_loss(student[0], teacher, prior)
    with pytest.raises(ValueError, match="one shape"):
        losses.turtle_loss(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"\[S, N, C\]"):
        losses.turtle_task_labels(np.zeros((3, 4)))


# ---------------------------------------------------------------------------------------------
# Gradients


def test_temi_gradient_only_into_the_student_and_equal_to_the_references():
    student, teacher, prior = _temi_inputs(70, 2, 3, 2, 3, 4, scale=0.3)
    fn = lambda st, te, pr: losses.temi_loss(st, te, pr)[0]
    g_student, g_teacher, g_prior = jax.grad(fn, argnums=(0, 1, 2))(student, teacher, prior)
    assert not np.any(np.asarray(g_teacher)) and not np.any(np.asarray(g_prior))
    assert np.any(np.asarray(g_student))
    want = _numeric_grad(lambda x: _temi_np(x, teacher, prior)[0], student)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(np.asarray(g_student), want, rtol=0, atol=1e-4 * scale)
    # update_cluster_prior passes no gradient either.
    g = jax.grad(lambda p, t: jnp.sum(losses.update_cluster_prior(p, t) ** 2), argnums=(0, 1))
    assert not any(np.any(np.asarray(x)) for x in g(prior, teacher))


def test_turtle_gradient_only_into_the_task_logits_and_equal_to_the_reference():
    task, inner = _rand(80, 2, 4, 3), _rand(81, 2, 4, 3)
    g_task, g_inner = jax.grad(lambda a, b: losses.turtle_loss(a, b)[0], argnums=(0, 1))(
        task, inner
    )
    assert not np.any(np.asarray(g_inner)) and np.any(np.asarray(g_task))
    want = _numeric_grad(lambda x: _turtle_np(x, inner)[0], task)
    scale = np.max(np.abs(want))
    np.testing.assert_allclose(np.asarray(g_task), want, rtol=0, atol=1e-4 * scale)


# ---------------------------------------------------------------------------------------------
# Dtypes, confident logits, jit, devices, invariances


def test_float32_results_for_bf16_inputs_and_finite_for_confident_logits():
    student, teacher, prior = _temi_inputs(90, 2, 3, 2, 4, 5)
    bf = lambda x: jnp.asarray(x, jnp.bfloat16)
    loss, per_head = losses.temi_loss(bf(student), bf(teacher), bf(prior))
    assert loss.dtype == per_head.dtype == jnp.float32
    assert losses.update_cluster_prior(bf(prior), bf(teacher)).dtype == jnp.float32
    task, inner = _rand(91, 2, 4, 3), _rand(92, 2, 4, 3)
    assert all(x.dtype == jnp.float32 for x in losses.turtle_loss(bf(task), jnp.float16(inner)))
    assert losses.turtle_task_labels(bf(task)).dtype == jnp.float32

    # Logits +-1e3: one-hot softmaxes, disagreeing student and teacher, a dead cluster.
    sign = lambda seed, shape: np.where(_rand(seed, *shape) > 0, 1e3, -1e3).astype(np.float32)
    student, teacher = sign(93, (2, 3, 4, 5)), sign(94, (2, 2, 4, 5))
    dead = np.where(np.arange(5) == 0, 0.0, prior).astype(np.float32)  # p(0) underflowed to 0
    for pr in (losses.update_cluster_prior(prior, teacher), dead):
        (loss, per_head), g = jax.value_and_grad(
            lambda st, pr=pr: losses.temi_loss(st, teacher, pr), has_aux=True
        )(student)
        assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(per_head)))
        assert np.all(np.isfinite(np.asarray(g)))
    task = np.zeros((2, 4, 3), np.float32)
    task[..., 0] = 1e3  # every sample in class 0: mean probabilities (1, 0, 0)
    out, g = jax.value_and_grad(lambda a: losses.turtle_loss(a, sign(95, (2, 4, 3)))[0])(task)
    assert np.isfinite(float(out)) and np.all(np.isfinite(np.asarray(g)))
    assert float(losses.turtle_loss(task, inner)[2]) == 0.0


def test_jit_equals_no_jit():
    student, teacher, prior = _temi_inputs(100, 2, 3, 2, 4, 5)
    eager = losses.temi_loss(student, teacher, prior)
    jitted = jax.jit(lambda a, b, c: losses.temi_loss(a, b, c, beta=0.6))(student, teacher, prior)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-6)
    task, inner = _rand(101, 2, 4, 3), _rand(102, 2, 4, 3)
    eager = losses.turtle_loss(task, inner)
    jitted = jax.jit(losses.turtle_loss)(task, inner)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(float(j), float(e), rtol=1e-6)


def test_loss_and_gradient_on_8_devices_equal_1_device():
    """The images (axis N) sharded over 8 devices: the weight, the pair means and TURTLE's
    labels and marginals are global, so the losses and gradients are one device's."""
    student, teacher, prior = _temi_inputs(110, 2, 3, 2, 16, 5)
    task, inner = _rand(111, 2, 16, 4, scale=2.0), _rand(112, 2, 16, 4, scale=2.0)

    def run(devices):
        mesh = sharding.make_mesh(devices)
        put = lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec))
        n4, n3 = PartitionSpec(None, None, "data"), PartitionSpec(None, "data")
        temi = jax.jit(jax.value_and_grad(lambda a, b, c: losses.temi_loss(a, b, c)[0]))
        turtle = jax.jit(jax.value_and_grad(lambda a, b: losses.turtle_loss(a, b)[0]))
        return (
            temi(put(student, n4), put(teacher, n4), put(prior, PartitionSpec())),
            turtle(put(task, n3), put(inner, n3)),
        )

    assert len(jax.devices()) == 8
    for (loss8, grad8), (loss1, grad1) in zip(
        run(jax.devices()), run(jax.devices()[:1]), strict=True
    ):
        np.testing.assert_allclose(float(loss8), float(loss1), rtol=1e-6)
        scale = np.max(np.abs(np.asarray(grad1)))
        assert scale > 0
        np.testing.assert_allclose(np.asarray(grad8), np.asarray(grad1), rtol=0, atol=1e-6 * scale)


def test_invariances():
    rng = np.random.default_rng(120)
    student, teacher, prior = _temi_inputs(121, 3, 3, 2, 6, 5)
    loss, per_head = losses.temi_loss(student, teacher, prior)
    n, k, h = rng.permutation(6), rng.permutation(5), rng.permutation(3)
    for args in (
        (student[:, :, n], teacher[:, :, n], prior),  # images
        (student[..., k], teacher[..., k], prior[:, k]),  # clusters, all three together
    ):
        got_loss, got_per_head = losses.temi_loss(*args)
        np.testing.assert_allclose(float(got_loss), float(loss), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(got_per_head), np.asarray(per_head), rtol=1e-6)
    got_loss, got_per_head = losses.temi_loss(student[h], teacher[h], prior[h])  # heads
    np.testing.assert_allclose(float(got_loss), float(loss), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(got_per_head), np.asarray(per_head)[h], rtol=1e-6)

    task, inner = _rand(122, 3, 6, 4, scale=2.0), _rand(123, 3, 6, 4, scale=2.0)
    want = losses.turtle_loss(task, inner)
    n, c, s = rng.permutation(6), rng.permutation(4), rng.permutation(3)
    for a, b in ((task[:, n], inner[:, n]), (task[..., c], inner[..., c]), (task[s], inner[s])):
        for g, w in zip(losses.turtle_loss(a, b), want, strict=True):
            np.testing.assert_allclose(float(g), float(w), rtol=1e-6)
