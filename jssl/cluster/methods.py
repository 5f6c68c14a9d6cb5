"""Clustering methods on frozen features: k-means, TEMI, TURTLE, SCAN's and SeLa's heads.

A method is its ``Options`` (fields and official defaults, which ``--set name=value``
overrides) and ``fit(spaces, k, options, seed) -> Fitted``; ``spaces`` are [N, D_s]
feature arrays of the same N examples (several only for TURTLE). No method reads a
label: a head is chosen by its own training loss (TEMI's by ``temi_head_scores``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import sklearn.cluster

from jssl import losses, sinkhorn
from jssl.cluster import heads, select
from jssl.errors import UserError
from jssl.methods.scan import mine_neighbors


@dataclasses.dataclass(frozen=True)
class Fitted:
    """A trained clustering: ``predict(spaces)`` -> probabilities [N, K] of any examples,
    ``objective`` the method's own final loss (lower is better, comparable within a method),
    ``info`` what was chosen (a head, the loss curve's ends)."""

    predict: Callable[[list[np.ndarray]], np.ndarray]
    objective: float
    info: dict


@dataclasses.dataclass(frozen=True)
class Method:
    options: type
    fit: Callable[..., Fitted]
    spaces: str = "one"  # "one", or "many" (TURTLE: one task encoder per space)


def _pairs(key, x, neighbours, batch_size):
    """A batch of rows and one random neighbour of each: (anchors [B, D], neighbours [B, D])."""
    ka, kb = jax.random.split(key)
    idx = jax.random.randint(ka, (batch_size,), 0, len(x))
    pick = jax.random.randint(kb, (batch_size,), 0, neighbours.shape[1])
    return x[idx], x[neighbours[idx, pick]]


def _train_heads(
    x, k, o, seed, loss_fn, extra=None, *, after=None, evaluate=None, temp=1.0, score=None
):
    """H heads (``o.heads``, ``o.hidden``) trained on ``x`` by ``loss_fn`` (``heads.fit``,
    ``o``'s steps, learning rate and weight decay); the head of lowest loss predicts.

    ``extra(params)``: the loop's extra state at the start; ``evaluate(params, extra)``: the
    heads that predict (default: the trained ones); ``temp``: their softmax temperature;
    ``score(params, extra) -> [H]``: the loss that chooses the head (default: each head's
    training loss over the last tenth of the steps).
    """
    kp, kt = jax.random.split(jax.random.PRNGKey(seed))
    params = heads.init(kp, x.shape[1], k, num_heads=o.heads, hidden=o.hidden)
    params, extra, curve, per_head = heads.fit(
        loss_fn, params, extra(params) if extra else (), kt, steps=o.steps,
        learning_rate=o.learning_rate, weight_decay=o.weight_decay, after=after,
    )  # fmt: skip
    tail = heads.tail_loss(per_head)
    scores = tail if score is None else np.asarray(score(params, extra))
    best = int(np.argmin(scores))
    info = {
        "head": best,
        "steps": len(curve),
        "first_loss": float(curve[0]),
        "last_loss": float(curve[-1]),
        "head_losses": [float(v) for v in tail],
    }
    if score is not None:
        info["head_scores"] = [float(v) for v in scores]
    net = evaluate(params, extra) if evaluate else params

    def predict(spaces):
        logits = heads.apply(net, heads.normalize(spaces[0]))[best]
        return np.asarray(jax.nn.softmax(logits / temp, axis=-1))

    return Fitted(predict=predict, objective=float(scores[best]), info=info)


# ----------------------------------------------------------------------------- k-means


@dataclasses.dataclass(frozen=True)
class KMeansOptions:
    n_init: int = 10
    temperature: float = 0.1  # softmax of the cosine to each centre: the confidence


def fit_kmeans(spaces, k: int, o: KMeansOptions, seed: int) -> Fitted:
    """sklearn's k-means (k-means++ init) on the L2-normalised features."""
    x = np.asarray(heads.normalize(spaces[0]))
    km = sklearn.cluster.KMeans(n_clusters=k, n_init=o.n_init, random_state=seed).fit(x)
    centres = heads.normalize(km.cluster_centers_)

    def predict(spaces):
        cos = heads.normalize(spaces[0]) @ centres.T
        return np.asarray(jax.nn.softmax(cos / o.temperature, axis=-1))

    return Fitted(predict=predict, objective=float(km.inertia_ / len(x)), info={})


# ----------------------------------------------------------------------------- TEMI


# The rows (a fixed random subset) on which TEMI's heads are compared after training.
SCORE_ROWS = 8192


@dataclasses.dataclass(frozen=True)
class TemiOptions:
    heads: int = 16
    hidden: int = 512
    beta: float = 0.6
    student_temp: float = 0.1
    teacher_temp: float = 0.1
    prior_momentum: float = 0.9
    teacher_momentum: float = 0.996  # cosine to 1 over training, as DINO
    neighbours: int = 50
    batch_size: int = 256
    steps: int = 2000
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4


def temi_head_scores(teacher: dict, x: jax.Array, neighbour: jax.Array, o: TemiOptions):
    """[H] TEMI's loss of each teacher head (the heads that predict) against itself on rows
    ``x`` and their neighbours, the prior its mean prediction there: what chooses the head.

    The training loss cannot choose: its terms (p_s q_t)^beta / prior have no bound where
    the student predicts a cluster its teacher all but empties, and such degenerate heads
    reach the lowest training loss (K = 50 on digits: -13 against -2.9 for heads that use
    every cluster). With the teacher on both sides and beta >= 1/2, each term is at most
    the number of rows (the prior holds the pair's own predictions), as for a true PMI.
    """
    teacher_logits = heads.apply(teacher, jnp.stack([x, neighbour]))  # [H, 2, N, K]
    q = jax.nn.softmax(teacher_logits / o.teacher_temp, axis=-1)
    _, per_head = losses.temi_loss(
        teacher_logits, teacher_logits, jnp.mean(q, axis=(1, 2)),
        beta=o.beta, student_temp=o.teacher_temp, teacher_temp=o.teacher_temp,
    )  # fmt: skip
    return per_head


def fit_temi(spaces, k: int, o: TemiOptions, seed: int) -> Fitted:
    """TEMI (Adaloglou et al., 2023): H student heads and their EMA teacher on an image and
    one of its nearest neighbours, weighted PMI with beta, the cluster prior as an EMA; the
    head of lowest ``temi_head_scores`` on its rows and their nearest neighbours predicts."""
    x = heads.normalize(spaces[0])
    nbrs = jnp.asarray(mine_neighbors(x, k=o.neighbours))
    b = min(o.batch_size, len(x))

    def loss_fn(params, extra, key, i):
        views = jnp.stack(_pairs(key, x, nbrs, b))  # [2, B, D]: S = T = 2 crops
        student = heads.apply(params, views)
        teacher = jax.lax.stop_gradient(heads.apply(extra["teacher"], views))
        prior = losses.update_cluster_prior(
            extra["prior"], teacher, teacher_temp=o.teacher_temp, momentum=o.prior_momentum
        )
        loss, per_head = losses.temi_loss(
            student, teacher, prior,
            beta=o.beta, student_temp=o.student_temp, teacher_temp=o.teacher_temp,
        )  # fmt: skip
        return loss, ({"teacher": extra["teacher"], "prior": prior}, per_head)

    def after(params, extra, i):
        m = 1.0 - (1.0 - o.teacher_momentum) * (jnp.cos(jnp.pi * i / o.steps) + 1.0) / 2.0
        teacher = jax.tree.map(lambda t, p: m * t + (1.0 - m) * p, extra["teacher"], params)
        return {**extra, "teacher": teacher}

    @jax.jit
    def score(params, extra):
        idx = jax.random.permutation(jax.random.PRNGKey(seed), len(x))[:SCORE_ROWS]
        return temi_head_scores(extra["teacher"], x[idx], x[nbrs[idx, 0]], o)

    return _train_heads(
        x, k, o, seed, loss_fn,
        extra=lambda params: {"teacher": params, "prior": jnp.full((o.heads, k), 1.0 / k)},
        after=after, evaluate=lambda params, extra: extra["teacher"], temp=o.teacher_temp,
        score=score,
    )  # fmt: skip


# ----------------------------------------------------------------------------- SCAN


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    heads: int = 10
    hidden: int = 0
    neighbours: int = 20
    entropy_weight: float = 5.0
    batch_size: int = 256
    steps: int = 2000
    learning_rate: float = 1e-4
    weight_decay: float = 1e-4


def fit_scan(spaces, k: int, o: ScanOptions, seed: int) -> Fitted:
    """SCAN's clustering step (Van Gansbeke et al., 2020) with the backbone frozen: H heads,
    consistency with a mined neighbour minus the entropy of the mean prediction."""
    x = heads.normalize(spaces[0])
    nbrs = jnp.asarray(mine_neighbors(x, k=o.neighbours))
    b = min(o.batch_size, len(x))

    def loss_fn(params, extra, key, i):
        anchors, neighbours = _pairs(key, x, nbrs, b)
        total, _, _ = losses.scan_loss(
            heads.apply(params, anchors), heads.apply(params, neighbours),
            entropy_weight=o.entropy_weight,
        )  # fmt: skip
        return jnp.mean(total), (extra, total)

    return _train_heads(x, k, o, seed, loss_fn)


# ----------------------------------------------------------------------------- SeLa


@dataclasses.dataclass(frozen=True)
class SelaOptions:
    heads: int = 10
    hidden: int = 0
    sinkhorn_lambda: float = 25.0
    sinkhorn_iters: int = 100
    relabels: int = 40  # label assignments over training, evenly spaced (the first at step 0)
    batch_size: int = 256
    steps: int = 2000
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4


def sela_labels(params: dict, x: jax.Array, *, epsilon: float, num_iters: int) -> jax.Array:
    """Every head's equipartitioned labels [H, N] of the rows ``x`` (Sinkhorn-Knopp over all
    N rows), a head at a time (``lax.map``): one [N, K] plan in memory, not H of them."""

    def one(head):
        log_p = jax.nn.log_softmax(heads.apply(head, x)[0], axis=-1)
        plan = sinkhorn.sinkhorn_knopp(log_p, epsilon=epsilon, num_iters=num_iters)
        return jnp.argmax(plan, axis=-1).astype(jnp.int32)

    each = jax.tree.map(lambda a: a[:, None], jax.lax.stop_gradient(params))  # [H, 1, ...]
    return jax.lax.map(one, each)


def fit_sela(spaces, k: int, o: SelaOptions, seed: int) -> Fitted:
    """SeLa (Asano et al., 2020) with the backbone frozen: H heads learn equipartitioned
    pseudo-labels (Sinkhorn-Knopp over every example), relabelled ``relabels`` times."""
    x = heads.normalize(spaces[0])
    n, b = len(x), min(o.batch_size, len(x))
    every = max(1, o.steps // max(1, o.relabels))

    def relabel(params):
        return sela_labels(params, x, epsilon=1.0 / o.sinkhorn_lambda, num_iters=o.sinkhorn_iters)

    def loss_fn(params, labels, key, i):
        labels = jax.lax.cond(i % every == 0, relabel, lambda _: labels, params)
        idx = jax.random.randint(key, (b,), 0, n)
        per_head = losses.pseudo_label_cross_entropy(heads.apply(params, x[idx]), labels[:, idx])
        return jnp.mean(per_head), (labels, per_head)

    return _train_heads(
        x, k, o, seed, loss_fn, extra=lambda params: jnp.zeros((o.heads, n), jnp.int32)
    )


# ----------------------------------------------------------------------------- TURTLE


@dataclasses.dataclass(frozen=True)
class TurtleOptions:
    gamma: float = 10.0
    outer_steps: int = 6000
    inner_steps: int = 10
    learning_rate: float = 1e-3
    inner_learning_rate: float = 1e-3
    batch_size: int = 10000
    warm_start: bool = False
    standardize: bool = False  # each dimension to mean 0, variance 1 (else unit-norm rows)


def _linear_init(key, d: int, c: int) -> dict:
    """PyTorch's nn.Linear initialisation: U(-1/sqrt(d), 1/sqrt(d)) for weight and bias."""
    kw, kb = jax.random.split(key)
    bound = 1.0 / np.sqrt(d)
    return {
        "w": jax.random.uniform(kw, (d, c), minval=-bound, maxval=bound),
        "b": jax.random.uniform(kb, (c,), minval=-bound, maxval=bound),
    }


def _weight_normed(p: dict, z: jax.Array) -> jax.Array:
    """Weight-normed linear layer: each output's weight vector is g * v / ||v||."""
    w = p["g"] * p["v"] / jnp.linalg.norm(p["v"], axis=0, keepdims=True)
    return z @ w + p["b"]


def _standardizer(spaces):
    """The map of spaces to their dimensions standardised with the training rows' statistics."""
    stats = [(np.mean(s, 0), np.std(s, 0) + 1e-6) for s in spaces]
    return lambda sp: [
        jnp.asarray((s - m) / d, jnp.float32) for s, (m, d) in zip(sp, stats, strict=True)
    ]


def fit_turtle(spaces, k: int, o: TurtleOptions, seed: int) -> Fitted:
    """TURTLE (Gadetsky et al., 2024): a labelling of the examples that linear classifiers on
    every representation space can learn; the inner fit (``inner_steps`` full-batch Adam steps
    from a fresh initialisation) gives the first-order hypergradient of the outer objective."""
    import optax

    prepare = (
        _standardizer(spaces) if o.standardize else lambda sp: [heads.normalize(s) for s in sp]
    )
    xs = prepare(spaces)
    n = len(xs[0])
    b = min(o.batch_size, n)
    key = jax.random.PRNGKey(seed)
    params = []
    for x in xs:
        key, sub = jax.random.split(key)
        lin = _linear_init(sub, x.shape[1], k)
        params.append({"v": lin["w"], "g": jnp.linalg.norm(lin["w"], axis=0), "b": lin["b"]})
    inner_tx = optax.adam(o.inner_learning_rate)

    def task_logits(params, zs):
        return jnp.stack([_weight_normed(p, z) for p, z in zip(params, zs, strict=True)])

    def inner_fit(inner, zs, labels):
        def ce(inner):
            logits = [z @ p["w"] + p["b"] for p, z in zip(inner, zs, strict=True)]
            return sum(losses.pseudo_label_cross_entropy(lg, labels) for lg in logits)

        def step(carry, _):
            inner, opt = carry
            grads = jax.grad(ce)(inner)
            updates, opt = inner_tx.update(grads, opt, inner)
            return (optax.apply_updates(inner, updates), opt), None

        (inner, _), _ = jax.lax.scan(step, (inner, inner_tx.init(inner)), None, o.inner_steps)
        return inner

    def loss_fn(params, inner, key, i):
        kb, ki = jax.random.split(key)
        idx = jax.random.permutation(kb, n)[:b]
        zs = [x[idx] for x in xs]
        logits = task_logits(params, zs)
        labels = jax.lax.stop_gradient(losses.turtle_task_labels(logits))
        if not o.warm_start:
            keys = jax.random.split(ki, len(zs))
            inner = [_linear_init(kk, z.shape[1], k) for kk, z in zip(keys, zs, strict=True)]
        inner = inner_fit(inner, zs, labels)
        inner_logits = jnp.stack([z @ p["w"] + p["b"] for p, z in zip(inner, zs, strict=True)])
        loss, _, _ = losses.turtle_loss(logits, inner_logits, gamma=o.gamma)
        return loss, (jax.lax.stop_gradient(inner), loss[None])

    inner0 = [_linear_init(jax.random.PRNGKey(0), x.shape[1], k) for x in xs]
    key, sub = jax.random.split(key)
    params, _, curve, _ = heads.fit(
        loss_fn, params, inner0, sub, steps=o.outer_steps, learning_rate=o.learning_rate
    )

    def predict(spaces):
        return np.asarray(losses.turtle_task_labels(task_logits(params, prepare(spaces))))

    info = {"steps": len(curve), "first_loss": float(curve[0]), "last_loss": float(curve[-1])}
    return Fitted(predict=predict, objective=float(heads.tail_loss(curve)), info=info)


METHODS: dict[str, Method] = {
    "kmeans": Method(KMeansOptions, fit_kmeans),
    "temi": Method(TemiOptions, fit_temi),
    "turtle": Method(TurtleOptions, fit_turtle, spaces="many"),
    "scan": Method(ScanOptions, fit_scan),
    "sela": Method(SelaOptions, fit_sela),
}


# The options that may be 0 (hidden=0: linear heads); every other number must be > 0.
ZERO_ALLOWED = ("hidden",)


def options(method: str, overrides: dict[str, str]):
    """The method's Options with ``name=value`` overrides (UserError naming the fields)."""
    if method not in METHODS:
        raise UserError(f"--method={method}: use one of {', '.join(METHODS)}")
    cls = METHODS[method].options
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for name, text in overrides.items():
        if name not in fields:
            raise UserError(
                f"--set {name}=...: {method} has no option {name!r}; its options: "
                + ", ".join(f"{f}={fields[f].default}" for f in fields)
            )
        kind = type(fields[name].default)
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                values[name] = text.lower() in ("true", "1")
            else:
                values[name] = kind(float(text)) if kind is int else kind(text)
        except ValueError:
            raise UserError(
                f"--set {name}={text}: give a {kind.__name__} (default {fields[name].default})"
            ) from None
        zero_ok = name in ZERO_ALLOWED
        if kind in (int, float) and not (values[name] >= 0 if zero_ok else values[name] > 0):
            raise UserError(f"--set {name}={text}: give a value {'>=' if zero_ok else '>'} 0")
    return cls(**values)


def fit(method: str, spaces: list[np.ndarray], k: int, opts, *, seed: int = 0) -> Fitted:
    """Trains ``method`` with ``opts`` on ``spaces`` for ``k`` clusters."""
    m = METHODS[method]
    if len(spaces) > 1 and m.spaces != "many":
        raise UserError(
            f"--method={method} clusters one feature space; give one --features file "
            "(several spaces: --method=turtle)"
        )
    n = len(spaces[0])
    if not 2 <= k <= n:
        raise UserError(f"--k={k}: give a number of clusters in [2, {n}] (the examples)")
    if not getattr(opts, "neighbours", 1) < n:
        raise UserError(f"--set neighbours={opts.neighbours}: give fewer than the {n} examples")
    return m.fit(spaces, k, opts, seed)


def fit_and_score(
    method: str, opts, train, evals, k: int, *, seed: int = 0
) -> tuple[dict, np.ndarray, Fitted]:
    """``fit`` on the ``train`` feature files (one per space), then the label-free criteria
    on the training rows and the labelled metrics of the ``evals`` files' rows.

    Returns (a row: seconds, every criterion and metric; the evaluated rows' probabilities
    [N, K]; the fit).
    """
    start = time.perf_counter()
    fitted = fit(method, [f.features for f in train], k, opts, seed=seed)
    seconds = time.perf_counter() - start
    train_probs = fitted.predict([f.features for f in train])
    crit = select.criteria(
        train[0].features, train_probs.argmax(-1), num_clusters=k, objective=fitted.objective,
        seed=seed,
    )  # fmt: skip
    probs = train_probs if evals is train else fitted.predict([g.features for g in evals])
    held = evals[0]
    m = select.metrics(held.labels, probs.argmax(-1), num_classes=held.num_classes, num_clusters=k)
    return {"seconds": seconds, **crit, **m}, probs, fitted
