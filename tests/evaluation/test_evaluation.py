"""Tests for jssl.evaluation: kNN, linear probe, clustering metrics, feature extraction."""

import functools
import itertools
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from jssl import data, evaluation, sharding
from jssl.evaluation import knn as knn_lib


def _blobs(n, num_classes, dim, seed, spread=0.1):
    """Gaussian blobs around random unit-norm centres: [n, dim] features, [n] labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, num_classes, n)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


# ----------------------------------------------------------------------------- kNN


def _knn_reference(train_x, train_y, test_x, test_y, num_classes, k, temperature):
    """Plain numpy DINO kNN: one test example at a time."""
    train_x = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    test_x = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    correct = 0
    for x, y in zip(test_x, test_y, strict=True):
        sim = train_x.astype(np.float64) @ x
        nearest = np.argsort(-sim)[:k]
        votes = np.zeros(num_classes)
        np.add.at(votes, train_y[nearest], np.exp(sim[nearest] / temperature))
        correct += int(np.argmax(votes) == y)
    return correct / len(test_y)


@pytest.mark.parametrize("chunk_size", [64, 1024])  # several chunks with a remainder; one chunk
def test_knn_matches_numpy_reference(chunk_size):
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(200, 16)), rng.normal(size=(150, 16))
    train_y, test_y = rng.integers(0, 5, 200), rng.integers(0, 5, 150)
    want = _knn_reference(train_x, train_y, test_x, test_y, 5, 10, 0.1)
    got = evaluation.knn_accuracy(
        train_x, train_y, test_x, test_y, num_classes=5, k=10, temperature=0.1,
        chunk_size=chunk_size,
    )  # fmt: skip
    assert isinstance(got, float)
    assert got == pytest.approx(want)


def test_knn_hand_checked_weighting_and_k_clamp():
    # Class 0 at (1, 0); class 1 twice at (0, 1); class 2 at (-1, 0). Test (1, 0.5) has
    # cosine 0.894 to class 0, 0.447 to both class-1 points and -0.894 to class 2.
    train_x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [-1.0, 0.0]])
    train_y = np.array([0, 1, 1, 2])
    test_x, test_y = np.array([[1.0, 0.5]]), np.array([0])
    knn = functools.partial(
        evaluation.knn_accuracy, train_x, train_y, test_x, test_y, num_classes=3
    )
    # k=3, T=0.1: class 0 gets exp(8.94) ~ 7.6e3, class 1 gets 2 exp(4.47) ~ 175: correct.
    assert knn(k=3, temperature=0.1) == 1.0
    # T=10: class 0 gets exp(0.089) = 1.09, class 1 gets 2 exp(0.045) = 2.09: the majority wins.
    assert knn(k=3, temperature=10.0) == 0.0
    # k=1 is plain nearest neighbour; k > N_train is clamped to all 4 neighbours.
    assert knn(k=1, temperature=10.0) == 1.0
    assert knn(k=100, temperature=10.0) == knn(k=4, temperature=10.0) == 0.0


def test_knn_compiles_once_for_all_chunks(monkeypatch):
    x, y = _blobs(170, 4, 8, seed=1)
    train_x, train_y, test_x, test_y = x[:100], y[:100], x[100:], y[100:]
    # The chunk function traced at most once for all 5 chunks (the last one padded).
    raw = knn_lib._knn_predict_chunk.__wrapped__
    once = jax.jit(
        chex.assert_max_traces(raw, n=1), static_argnames=("k", "temperature", "num_classes")
    )
    monkeypatch.setattr(knn_lib, "_knn_predict_chunk", once)
    acc = evaluation.knn_accuracy(
        train_x, train_y, test_x, test_y, num_classes=4, k=5, chunk_size=16
    )
    assert acc == 1.0


# ---------------------------------------------------------------------- linear probe


@pytest.mark.parametrize("n_train", [50, 600])  # fewer and more examples than one batch
def test_linear_probe_separable(n_train):
    x, y = _blobs(n_train + 200, 3, 8, seed=0)
    got = evaluation.linear_probe(
        x[:n_train], y[:n_train], x[n_train:], y[n_train:], num_classes=3, epochs=30
    )
    assert set(got) == {"train_top1", "test_top1"}
    assert got["train_top1"] == 1.0
    assert got["test_top1"] >= 0.99


def test_linear_probe_in_calls_of_some_epochs_equals_one_call(monkeypatch):
    """The probe trains in about ten jitted calls and reports each; the result is the one
    of a single call of every epoch, bit for bit."""
    import jssl.evaluation.linear_probe  # noqa: F401 (the module, not the function)

    module = sys.modules["jssl.evaluation.linear_probe"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    args = (x[:200], y[:200], x[200:], y[200:])
    seen = []
    chunked = evaluation.linear_probe(
        *args, num_classes=4, epochs=23, batch_size=64, progress=lambda *a: seen.append(a)
    )
    assert seen == [(e, 23) for e in (3, 6, 9, 12, 15, 18, 21, 23)]
    monkeypatch.setattr(module, "PROGRESS_STEPS", 1)
    assert evaluation.linear_probe(*args, num_classes=4, epochs=23, batch_size=64) == chunked


def test_linear_probe_digits_and_determinism():
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=0
    )
    probe = functools.partial(
        evaluation.linear_probe, x_train, y_train, x_test, y_test, num_classes=10
    )
    got = probe(seed=0)
    assert got["test_top1"] >= 0.93  # sklearn's LogisticRegression: 0.958.
    assert probe(seed=0) == got


# -------------------------------------------------------------------------- clustering


def test_kmeans_recovers_blobs():
    x, y = _blobs(120, 4, 6, seed=3, spread=0.05)
    assign = evaluation.kmeans(x, num_clusters=4, seed=0)
    assert assign.shape == (120,)
    assert assign.dtype == np.int32
    assert float(evaluation.cluster_accuracy(y, assign, num_classes=4)) == 1.0


def _brute_force_accuracy(y_true, y_pred, num_classes, num_clusters):
    counts = np.zeros((num_clusters, num_classes), int)
    np.add.at(counts, (y_pred, y_true), 1)
    if num_clusters <= num_classes:  # Cluster i -> class perm[i].
        perms = itertools.permutations(range(num_classes), num_clusters)
        best = max(counts[np.arange(num_clusters), list(p)].sum() for p in perms)
    else:  # Class j -> cluster perm[j].
        perms = itertools.permutations(range(num_clusters), num_classes)
        best = max(counts[list(p), np.arange(num_classes)].sum() for p in perms)
    return best / len(y_true)


def test_cluster_accuracy_of_permuted_labels_is_one():
    y = np.random.default_rng(0).integers(0, 6, 100)
    perm = np.array([3, 5, 0, 1, 4, 2])
    assert float(evaluation.cluster_accuracy(y, perm[y], num_classes=6)) == 1.0


def test_cluster_accuracy_hand_computed():
    # Cluster 1 holds two of class 0, cluster 0 holds one of class 0 and two of class 1,
    # cluster 2 one of class 2: match 1->0, 0->1, 2->2 for 2 + 2 + 1 = 5 of 6.
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([1, 1, 0, 0, 0, 2])
    got = evaluation.cluster_accuracy(y_true, y_pred, num_classes=3)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, 5 / 6, rtol=1e-6)


@pytest.mark.parametrize("num_classes,num_clusters", [(4, 4), (4, 3), (3, 5)])
def test_cluster_accuracy_matches_brute_force(num_classes, num_clusters):
    rng = np.random.default_rng(num_classes * 10 + num_clusters)
    for _ in range(5):
        y_true = rng.integers(0, num_classes, 20)
        y_pred = rng.integers(0, num_clusters, 20)
        want = _brute_force_accuracy(y_true, y_pred, num_classes, num_clusters)
        got = evaluation.cluster_accuracy(
            y_true, y_pred, num_classes=num_classes, num_clusters=num_clusters
        )
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_cluster_accuracy_more_and_fewer_clusters_by_hand():
    # Over-clustering: class 0 split over clusters 0 and 1, class 1 over clusters 2 and 3.
    y_true = np.array([0, 0, 1, 1, 1, 1])
    y_pred = np.array([0, 1, 2, 2, 3, 3])
    # One-to-one: one cluster per class, the others count as wrong: (1 + 2) / 6.
    one_to_one = evaluation.cluster_accuracy(y_true, y_pred, num_classes=2, num_clusters=4)
    np.testing.assert_allclose(one_to_one, 0.5, rtol=1e-6)
    many = evaluation.cluster_accuracy_many_to_one(y_true, y_pred, num_classes=2, num_clusters=4)
    np.testing.assert_allclose(many, 1.0, rtol=1e-6)
    # Fewer clusters than classes: classes 0 and 1 share cluster 0, class 2 has cluster 1.
    fewer = evaluation.cluster_accuracy([0, 1, 2, 2], [0, 0, 1, 1], num_classes=3, num_clusters=2)
    np.testing.assert_allclose(fewer, 0.75, rtol=1e-6)


def test_cluster_metrics_under_jit_vmap_and_sharding():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 64)
    y_pred = rng.integers(0, 6, 64)
    counts = dict(num_classes=4, num_clusters=6)
    eager = {
        f: getattr(evaluation, f)(y_true, y_pred, **counts)
        for f in ["cluster_accuracy", "cluster_accuracy_many_to_one", "nmi", "ari"]
    }

    @jax.jit
    def all_metrics(t, p):
        return {name: getattr(evaluation, name)(t, p, **counts) for name in eager}

    # An Auto-axis mesh as jssl.sharding builds it (jax.make_mesh defaults to Explicit axes).
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    for t, p in [
        (jnp.asarray(y_true), jnp.asarray(y_pred)),
        (jax.device_put(y_true, sharding), jax.device_put(y_pred, sharding)),
    ]:
        got = all_metrics(t, p)
        for name, want in eager.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-6, err_msg=name)

    batched = jax.vmap(functools.partial(evaluation.cluster_accuracy, **counts))(
        jnp.stack([y_true, y_true]), jnp.stack([y_pred, y_true])
    )
    np.testing.assert_allclose(batched, [eager["cluster_accuracy"], 1.0], rtol=1e-6)


def test_cluster_metrics_reject_bad_labels():
    with pytest.raises(ValueError, match="num_clusters"):
        evaluation.cluster_accuracy([0, 1, 2], [0, 1, 3], num_classes=3)
    with pytest.raises(ValueError, match="non-negative"):
        evaluation.nmi([0, 1, -1], [0, 1, 1])
    with pytest.raises(ValueError, match="num_classes="):
        jax.jit(evaluation.ari)(jnp.array([0, 1]), jnp.array([0, 1]))


@pytest.mark.parametrize("seed", range(4))
def test_nmi_ari_match_sklearn_on_random_labels(seed):
    rng = np.random.default_rng(seed)
    n, num_classes, num_clusters = [(50, 3, 3), (200, 5, 8), (300, 10, 4), (7, 2, 6)][seed]
    y_true = rng.integers(0, num_classes, n)
    y_pred = rng.integers(0, num_clusters, n)
    np.testing.assert_allclose(
        evaluation.nmi(y_true, y_pred), metrics.normalized_mutual_info_score(y_true, y_pred),
        atol=1e-5,
    )  # fmt: skip
    np.testing.assert_allclose(
        evaluation.ari(y_true, y_pred), metrics.adjusted_rand_score(y_true, y_pred), atol=1e-5
    )


@pytest.mark.parametrize(
    "y_true,y_pred",
    [
        ([0, 1, 2, 2, 1, 0], [0, 1, 2, 2, 1, 0]),  # identical
        ([0, 1, 2, 2, 1, 0], [5, 3, 1, 1, 3, 5]),  # renamed
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # both constant
        ([0, 1, 2, 3], [3, 2, 1, 0]),  # both all singletons
        ([0, 0, 0, 0], [0, 1, 2, 3]),  # one constant, one all singletons
        ([0, 0, 1, 1], [0, 1, 0, 1]),  # sklearn's example: ARI -0.5
        ([1, 1, 0, 0, 2], [0, 0, 0, 1, 1]),
        ([0], [0]),  # one example
    ],
)
def test_nmi_ari_edge_cases_match_sklearn(y_true, y_pred):
    for ours, theirs in [
        (evaluation.nmi, metrics.normalized_mutual_info_score),
        (evaluation.ari, metrics.adjusted_rand_score),
    ]:
        want = theirs(y_true, y_pred)
        np.testing.assert_allclose(ours(np.array(y_true), np.array(y_pred)), want, atol=1e-6)


def test_nmi_ari_identical_labelings_are_one():
    y = np.random.default_rng(0).integers(0, 7, 500)
    assert float(evaluation.nmi(y, y)) == pytest.approx(1.0, abs=1e-6)
    assert float(evaluation.ari(y, y)) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------- features, summary


class _Flatten(nn.Module):
    """(out, aux) like jssl's models: a dense map of the flattened image; features = out."""

    @nn.compact
    def __call__(self, x, *, train):
        out = nn.Dense(3)(x.reshape(x.shape[0], -1))
        return out, {"features": out}


@pytest.mark.parametrize("n, batch_size", [(40, 16), (24, 64), (8, 8), (48, 20)])
def test_predictor_sharded_equals_gathered(n, batch_size):
    """Predictor.sharded keeps device d's contiguous block of rows on device d, equal to
    the gathered output (last batches padded per device, more batch than rows)."""
    images = np.random.default_rng(n).integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    source = data.Split(images, np.zeros(n, np.int32))
    mesh = sharding.make_mesh()
    model = _Flatten()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 1)), train=False)
    predict = evaluation.Predictor(model, mesh, crop_size=4, batch_size=batch_size)
    seen = {"gathered": [], "sharded": []}
    want = predict(variables, source, progress=lambda *a: seen["gathered"].append(a))
    got = predict.sharded(variables, source, progress=lambda *a: seen["sharded"].append(a))
    for calls in seen.values():  # from (0, n) to (n, n), a call per batch
        done = [d for d, total in calls if total == n]
        assert len(done) == len(calls) >= 2 and done[0] == 0 and done[-1] == n
        assert done == sorted(done)
    assert len(seen["gathered"]) == -(-n // (-(-min(batch_size, n) // 8) * 8)) + 1
    assert got.shape == want.shape and got.dtype == jnp.float32
    assert got.sharding == sharding.data_sharded(mesh)
    block = n // 8
    for shard in got.addressable_shards:
        d = list(mesh.devices.flat).index(shard.device)
        assert shard.index[0] == slice(d * block, (d + 1) * block)
        np.testing.assert_array_equal(np.asarray(shard.data), want[d * block : (d + 1) * block])
    idx = np.arange(n)[::-1].copy()
    np.testing.assert_array_equal(
        np.asarray(predict.sharded(variables, source, indices=idx)), want[idx]
    )
    with pytest.raises(ValueError, match="multiple of 8"):
        predict.sharded(variables, source, indices=np.arange(n - 1))
