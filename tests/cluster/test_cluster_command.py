"""python -m jssl.features and python -m jssl.cluster: the feature cache of a real train.py run
(equal to the run's own forward pass, resumable from its chunks), each clustering method on
features with a known answer, over-clustering, the label-free K sweep, scores checked with
scipy / scikit-learn, the report's pictures, and one-line errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import sklearn.metrics
from PIL import Image

from jssl import features
from jssl.cluster import __main__ as cluster_cli
from jssl.cluster import methods, select
from tests.helpers import smoke_args

TRAIN_PY_RUNS = {"simclr": smoke_args("simclr", "--config.data.val_fraction=0.2")}


# ----------------------------------------------------------------------------- helpers


def blobs(n=300, k=5, d=16, seed=0, spread=0.15):
    """n points of k well-separated clusters on the unit sphere, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.arange(n) % k
    x = centres[labels] + spread * rng.normal(size=(n, d)) / np.sqrt(d)
    return x.astype(np.float32), labels.astype(np.int32)


def write_features(path, x, labels, *, split="train", k=None):
    """A feature file of synthetic rows (the format python -m jssl.features writes)."""
    k = k or int(labels.max()) + 1
    meta = {"split": split, "class_names": [str(c) for c in range(k)], "network": "student"}
    np.savez(
        path,
        features=x,
        labels=labels,
        indices=np.arange(len(x)),
        meta=np.asarray(json.dumps(meta)),
    )
    return str(path)


def hungarian_acc(y, pred):
    c = sklearn.metrics.confusion_matrix(y, pred)
    rows, cols = scipy.optimize.linear_sum_assignment(c, maximize=True)
    return c[rows, cols].sum() / len(y)


# Few steps: the blobs are easy, and the suite runs on 2 cores.
FAST = {
    "kmeans": {},
    "scan": {"steps": 300, "learning_rate": 1e-2},
    "sela": {"steps": 300, "learning_rate": 1e-2, "relabels": 10},
    "temi": {"steps": 300, "learning_rate": 1e-2, "hidden": 0, "heads": 4,
             "teacher_momentum": 0.9, "neighbours": 10},
    "turtle": {"outer_steps": 300, "standardize": True, "inner_learning_rate": 1e-2},
}  # fmt: skip


def fast(method, **more):
    return methods.options(method, {n: str(v) for n, v in {**FAST[method], **more}.items()})


# ----------------------------------------------------------------------------- methods


@pytest.mark.parametrize("method", sorted(FAST))
def test_each_method_finds_well_separated_clusters_without_labels(method):
    x, y = blobs()
    fit = methods.fit(method, [x], 5, fast(method), seed=0)
    probs = fit.predict([x])
    assert probs.shape == (300, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    pred = probs.argmax(-1)
    assert hungarian_acc(y, pred) >= 0.95, method
    assert np.isfinite(fit.objective)


def test_turtle_uses_every_space():
    """Two spaces, each of which separates only some classes: TURTLE on both finds all of
    them, and better than on either one alone."""
    x, y = blobs(k=4, d=8)
    rng = np.random.default_rng(3)
    # space a merges classes 0/1, space b merges classes 2/3
    a = x.copy()
    a[y == 1] = x[y == 0][: (y == 1).sum()] + 0.01 * rng.normal(size=((y == 1).sum(), 8))
    b = x.copy()
    b[y == 3] = x[y == 2][: (y == 3).sum()] + 0.01 * rng.normal(size=((y == 3).sum(), 8))
    opts = fast("turtle", outer_steps=600)
    both = methods.fit("turtle", [a, b], 4, opts, seed=0).predict([a, b]).argmax(-1)
    alone = methods.fit("turtle", [a], 4, opts, seed=0).predict([a]).argmax(-1)
    assert hungarian_acc(y, both) >= 0.95
    assert hungarian_acc(y, alone) <= 0.8


def test_methods_are_deterministic_and_seeded():
    x, _ = blobs()
    one = methods.fit("scan", [x], 5, fast("scan"), seed=0).predict([x])
    again = methods.fit("scan", [x], 5, fast("scan"), seed=0).predict([x])
    other = methods.fit("scan", [x], 5, fast("scan"), seed=1).predict([x])
    np.testing.assert_array_equal(one, again)
    assert not np.array_equal(one, other)


def test_temi_chooses_a_head_that_predicts_clusters_not_one_of_lowest_training_loss():
    from jssl import losses
    from jssl.cluster import heads

    y = np.arange(200) % 4
    x = np.eye(4, dtype=np.float32)[y] + 0.05 * np.random.default_rng(0).normal(size=(200, 4))
    x, neighbour = jnp.asarray(x, jnp.float32), jnp.roll(x, -4, axis=0)  # the same blob
    good = 10.0 * np.eye(4)  # cluster = blob
    one = np.tile([[10.0, 0.0, 0.0, 0.0]], (4, 1))  # every row to cluster 0
    last = np.tile([[0.0, 0.0, 0.0, 10.0]], (4, 1))  # every row to cluster 3
    as_heads = lambda *w: {"w": jnp.asarray(np.stack(w)), "b": jnp.zeros((len(w), 4))}
    o = methods.options("temi", {})
    # The training loss of a head whose student predicts the cluster its teacher empties
    # (head 1) is far below a good head's (head 0): the prior is near 0 there.
    teacher, student = as_heads(good, one), as_heads(good, last)
    views = jnp.stack([x, neighbour])
    t_logits = heads.apply(teacher, views)
    prior = jnp.mean(jax.nn.softmax(t_logits / o.teacher_temp, -1), axis=(1, 2))
    _, train_loss = losses.temi_loss(heads.apply(student, views), t_logits, prior)
    assert train_loss[1] < train_loss[0] - 5  # -10.7 against -log 4
    # The score of the heads that predict: the good head is best, the one-cluster head 0.
    scores = np.asarray(methods.temi_head_scores(teacher, x, neighbour, o))
    np.testing.assert_allclose(scores, [-np.log(4), 0.0], atol=0.02)


def test_sela_labels_each_head_with_one_plan_in_memory():
    from jssl import sinkhorn
    from jssl.cluster import heads

    n, d, k, h = 4096, 32, 50, 8
    x = heads.normalize(np.random.default_rng(0).normal(size=(n, d)))
    params = heads.init(jax.random.PRNGKey(0), d, k, num_heads=h)
    labels = jax.jit(lambda p: methods.sela_labels(p, x, epsilon=0.04, num_iters=20))
    got = np.asarray(labels(params))
    for i in range(h):
        log_p = jax.nn.log_softmax(x @ params["w"][i] + params["b"][i], axis=-1)
        plan = sinkhorn.sinkhorn_knopp(log_p, epsilon=0.04, num_iters=20)
        np.testing.assert_array_equal(got[i], np.argmax(plan, axis=-1))
    # A head's [N, K] plan at a time: 2.5 MB of buffers here, where H plans at once took 20.
    temp = labels.lower(params).compile().memory_analysis().temp_size_in_bytes
    assert temp < 4 * n * k * 4 < h * n * k * 4, temp


def test_options_errors_name_the_fields():
    from jssl.errors import UserError

    with pytest.raises(UserError, match="temi has no option 'epochs'.*heads=16"):
        methods.options("temi", {"epochs": "3"})
    with pytest.raises(UserError, match="give a float"):
        methods.options("temi", {"beta": "high"})
    with pytest.raises(UserError, match="use one of kmeans"):
        methods.options("dbscan", {})
    with pytest.raises(UserError, match="give a value > 0"):
        methods.options("scan", {"steps": "0"})
    assert methods.options("temi", {"hidden": "0"}).hidden == 0  # linear heads
    assert methods.options("turtle", {"warm_start": "true"}).warm_start is True
    x, _ = blobs(n=30)
    with pytest.raises(UserError, match="neighbours=50: give fewer than the 30 examples"):
        methods.fit("temi", [x], 3, methods.options("temi", {}))


# ----------------------------------------------------------------------------- scores


def test_metrics_agree_with_scipy_and_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    pred = np.where(rng.random(500) < 0.7, y, rng.integers(0, 4, 500))
    m = select.metrics(y, pred, num_classes=4, num_clusters=4)
    assert m["acc"] == m["acc_hungarian"]
    np.testing.assert_allclose(m["acc"], hungarian_acc(y, pred), rtol=1e-6)
    np.testing.assert_allclose(
        m["nmi"], sklearn.metrics.normalized_mutual_info_score(y, pred), rtol=1e-5
    )
    np.testing.assert_allclose(m["ari"], sklearn.metrics.adjusted_rand_score(y, pred), rtol=1e-4)
    # over-clustering: each cluster votes for its majority class
    over = rng.integers(0, 3, 500) * 4 + y  # 12 clusters, each inside one class
    m = select.metrics(y, over, num_classes=4, num_clusters=12)
    assert m["acc"] == m["acc_many_to_one"] == pytest.approx(1.0)
    assert m["acc_hungarian"] < 0.5


def test_label_free_criteria_prefer_the_true_clusters():
    x, y = blobs()
    wrong = np.random.default_rng(0).integers(0, 5, len(y))
    good = select.criteria(x, y, num_clusters=5, objective=0.0)
    bad = select.criteria(x, wrong, num_clusters=5, objective=1.0)
    for name in select.CRITERIA:
        if name != "balance":  # both are balanced
            assert good[name] > bad[name], name
    assert select.balance(np.zeros(10, int), 5) == 0.0
    assert select.balance(np.arange(10) % 5, 5) == pytest.approx(1.0)
    rows = [
        {"acc": a, **{c: a * s for c in select.CRITERIA}} for a, s in ((0.2, 1), (0.5, 1), (0.9, 1))
    ]
    assert all(v == pytest.approx(1.0) for v in select.correlations(rows).values())


# ----------------------------------------------------------------------------- the command


def test_cluster_command_sweeps_k_and_writes_its_outputs(tmp_path, capsys):
    x, y = blobs()
    train = write_features(tmp_path / "train.npz", x, y)
    hx, hy = blobs(seed=0, n=100)
    held = write_features(tmp_path / "held.npz", hx, hy, split="test")
    out = tmp_path / "out"
    argv = [f"--features={train}", f"--eval_features={held}", "--method=kmeans",
            "--k=3,5,8", f"--out={out}", "--no_report", "--criterion=silhouette"]  # fmt: skip
    assert cluster_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "chosen K=5 by silhouette" in printed
    assert "kmeans K=5 on test (100 images): ACC 1.0000 (Hungarian)" in printed
    result = json.loads((out / "metrics.json").read_text())
    assert result["k"] == 5 and [r["k"] for r in result["sweep"]] == [3, 5, 8]
    saved = np.load(out / "assignments.npz")
    assert saved["cluster"].shape == (100,) and saved["probabilities"].shape == (100, 5)
    assert hungarian_acc(hy, saved["cluster"]) == 1.0


def test_cluster_command_never_reads_training_labels(tmp_path):
    x, y = blobs()
    a = write_features(tmp_path / "a.npz", x, y)
    b = write_features(tmp_path / "b.npz", x, np.random.default_rng(0).permutation(y))
    for name, path in (("a", a), ("b", b)):
        argv = [f"--features={path}", f"--eval_features={a}", "--method=scan", "--k=5",
                f"--out={tmp_path / name}", "--no_report",
                *(f"--set={n}={v}" for n, v in FAST["scan"].items())]  # fmt: skip
        assert cluster_cli.main(argv) == 0
    np.testing.assert_array_equal(
        np.load(tmp_path / "a" / "assignments.npz")["probabilities"],
        np.load(tmp_path / "b" / "assignments.npz")["probabilities"],
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method=temi", "--k=5", "--set=epochs=3"], "temi has no option 'epochs'"),
        (["--method=temi", "--k=1"], "--k=1: give a number of clusters >= 2"),
        (["--method=kmeans", "--k=5", "--oops"], "unrecognized arguments: --oops"),
        (["--method=kmeans", "--k=5", "--eval_features=nope.npz"], "nope.npz: no such feature"),
        (["--method=scan", "--k=5", "--features={f},{f}"], "scan clusters one feature space"),
    ],
)
def test_cluster_command_errors_are_one_line(tmp_path, capsys, argv, message):
    x, y = blobs(n=50)
    f = write_features(tmp_path / "f.npz", x, y)
    argv = [a.format(f=f) for a in argv]
    if not any(a.startswith("--features=") for a in argv):
        argv.append(f"--features={f}")
    try:
        code = cluster_cli.main([f"--out={tmp_path / 'o'}", *argv])
    except SystemExit as e:  # argparse's own errors, one line through jssl.cli
        code = e.code
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


# ----------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def run_dir(train_py_runs):
    return train_py_runs["simclr"].workdir


def test_features_are_the_runs_forward_pass_and_resume_from_chunks(run_dir, tmp_path, capsys):
    from jssl.experiment import load_data, restore_run

    out = str(tmp_path / "val.npz")
    argv = [f"--workdir={run_dir}", "--split=val", f"--out={out}", "--chunk=100"]
    assert features.main(["jssl.features", *argv]) == 0
    ff = features.load(out)
    run = restore_run(run_dir)
    assert run.config.data.val_fraction == 0.2
    source = load_data(features._data_config(run.config, "val", None)).test  # the carved val
    np.testing.assert_array_equal(ff.labels, source.labels)
    np.testing.assert_allclose(ff.features, run.predict(source), rtol=1e-6, atol=1e-6)
    assert ff.meta["split"] == "val" and ff.meta["network"] == "student"
    assert ff.meta["step"] == int(run.state.step)
    one = restore_run(run_dir, devices=jax.devices()[:1])  # 8 devices == 1
    np.testing.assert_allclose(ff.features, one.predict(source), rtol=1e-5, atol=1e-6)
    assert not os.path.exists(out + ".partial")
    images = features.images(ff)
    np.testing.assert_array_equal(images.get(np.arange(3)), source.get(np.arange(3)))
    # A killed command left chunk 1 (rows 100..199) behind: the rerun reads it, computes
    # the others, and the file holds the chunk as saved.
    os.remove(out)
    partial = out + ".partial"
    features._open_partial(partial, _key(ff, 100))
    marked = np.full((100, ff.features.shape[1]), 7.0, np.float32)
    np.save(os.path.join(partial, "chunk_000001.npy"), marked)
    assert features.main(["jssl.features", *argv]) == 0
    resumed = features.load(out)
    np.testing.assert_array_equal(resumed.features[100:200], marked)
    np.testing.assert_array_equal(resumed.features[:100], ff.features[:100])
    # chunks of another file are refused, not mixed in
    features._open_partial(out + ".partial", {**_key(ff, 100), "split": "test"})
    capsys.readouterr()
    assert features.main(["jssl.features", *argv]) == 1
    err = capsys.readouterr().err
    assert "holds the chunks of another feature file" in err and err.count("\n") == 1


def _key(ff, chunk):
    key = {k: ff.meta[k] for k in ("workdir", "split", "network", "representation", "step")}
    return {**key, "config": ff.meta["config"], "chunk": chunk}


def test_cluster_report_of_a_real_run(run_dir, tmp_path, capsys):
    paths = {}
    for split in ("train", "test"):
        paths[split] = str(tmp_path / f"{split}.npz")
        argv = [f"--workdir={run_dir}", f"--split={split}", f"--out={paths[split]}"]
        assert features.main(["jssl.features", *argv]) == 0
    out = tmp_path / "clusters"
    argv = [f"--features={paths['train']}", f"--eval_features={paths['test']}",
            "--method=kmeans", "--k=12", f"--out={out}"]  # fmt: skip
    assert cluster_cli.main(argv) == 0
    printed = capsys.readouterr().out
    test = features.load(paths["test"])
    assert f"kmeans K=12 on test ({len(test.labels)} images): ACC" in printed
    assert "(many-to-one)" in printed
    result = json.loads((out / "metrics.json").read_text())
    pred = np.load(out / "assignments.npz")["cluster"]
    majority = sklearn.metrics.confusion_matrix(test.labels, pred, labels=range(12)).max(0).sum()
    assert result["metrics"]["acc"] == pytest.approx(majority / len(pred), abs=1e-6)
    page = (out / "report.html").read_text()
    for png in ("confusion.png", "cluster_sizes.png", "cluster_images.png"):
        assert png in page
        with Image.open(out / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100


def test_features_command_errors_are_one_line(run_dir, tmp_path, capsys):
    cases = [
        ([f"--workdir={run_dir}", "--split=val", "--out=x.txt"], "give a .npz path"),
        ([f"--workdir={tmp_path}", "--split=train", f"--out={tmp_path / 'f.npz'}"], "no jssl run"),
        (["--split=train", f"--out={tmp_path / 'f.npz'}"], "one of --workdir or --config"),
    ]
    for argv, message in cases:
        assert features.main(["jssl.features", *argv]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_features_of_a_config_without_a_run(tmp_path):
    """--config instead of --workdir: the config's network as initialised (or as loaded
    from config.init_from.weights), on the split --val_fraction carves."""
    from jssl.evaluation import network_variables
    from jssl.experiment import Experiment, load_data

    out = str(tmp_path / "init.npz")
    argv = ["jssl.features", "--config=configs/simclr.py:digits,smoke", "--split=val",
            "--val_fraction=0.1", f"--out={out}"]  # fmt: skip
    assert features.main(argv) == 0
    ff = features.load(out)
    assert ff.meta["workdir"] is None and ff.meta["step"] == 0
    from configs import simclr

    config = features._data_config(simclr.get_config("digits,smoke"), "val", 0.1)
    exp = Experiment(config)
    source = load_data(config).test
    want = exp.predict(network_variables(exp.init_state()), source)
    np.testing.assert_allclose(ff.features, want, rtol=1e-6, atol=1e-6)
    assert len(ff.labels) == 142  # a tenth of each class of the 1,437 training images
