"""SCAN / self-labelling losses, clustering plots, and the SeLa and SCAN methods end to end."""

import contextlib
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import data, evaluation, losses, sharding, trainer
from jssl.methods import scan, sela
from tests.helpers import (
    ONE_STAGE,
    TINY,
    assert_fell,
    assert_finished,
    assert_rose,
    leaves_equal,
    log_uniform,
    records,
    set_fields,
    smoke_args,
    tiny_config,
    tiny_flags,
)

# Each smoke run eight steps long at a learning rate at which its method visibly learns;
# the in-process runs below are built with the same fields (the persistent compilation
# cache then gives them the train.py runs' programs).
EIGHT_STEPS = {"num_steps": 8, "log_every": 4, "checkpoint_every": 4}
SELA = {**EIGHT_STEPS, "optim.learning_rate": 0.1}  # x 32 / 256, AdamW
SCAN = {**EIGHT_STEPS, "optim.learning_rate": 0.01}  # not scaled by the batch
# Threshold 0.15 (default 0.99): after eight SCAN steps no prediction is 99% sure, so
# nothing would be self-labelled.
SELFLABEL = {**SCAN, "selflabel.threshold": 0.15}
TRAIN_PY_RUNS = {
    "sela": smoke_args("sela", *tiny_flags(**SELA)),
    # SimCLR in W/scan/pretext, SCAN in W/scan, self-labelling in W: one command.
    "stages": smoke_args(
        "scan",
        *tiny_flags(**SELFLABEL),
        *tiny_flags("stages.scan.", **SCAN),
        *tiny_flags("stages.scan.stages.pretext."),
        arg="digits,selflabel,smoke",
    ),
}


# ----------------------------------------------------------------------------- losses


def test_scan_loss_hand_computed():
    # p_a = [[1/4, 3/4], [2/3, 1/3]], p_n = [[1/2, 1/2], [2/3, 1/3]].
    anchors = jnp.log(jnp.array([[1.0, 3.0], [2.0, 1.0]]))
    neighbors = jnp.log(jnp.array([[1.0, 1.0], [2.0, 1.0]]))
    total, consistency, entropy = losses.scan_loss(anchors, neighbors, entropy_weight=2.0)
    # <p_a, p_n> = 1/8 + 3/8 = 1/2 and 4/9 + 1/9 = 5/9; mean p_a = [11/24, 13/24].
    want_consistency = -(np.log(0.5) + np.log(5 / 9)) / 2
    want_entropy = -(11 / 24 * np.log(11 / 24) + 13 / 24 * np.log(13 / 24))
    np.testing.assert_allclose(consistency, want_consistency, rtol=1e-6)
    np.testing.assert_allclose(entropy, want_entropy, rtol=1e-6)
    np.testing.assert_allclose(total, want_consistency - 2.0 * want_entropy, rtol=1e-6)


def test_scan_loss_heads_axis_equals_per_head_calls():
    rng = np.random.default_rng(0)
    a, n = (jnp.asarray(rng.normal(size=(3, 16, 5)), jnp.float32) for _ in range(2))
    stacked = losses.scan_loss(a, n, entropy_weight=5.0)
    for h in range(3):
        single = losses.scan_loss(a[h], n[h], entropy_weight=5.0)
        for s, t in zip(stacked, single, strict=True):
            np.testing.assert_allclose(s[h], t, rtol=1e-6)


def test_scan_entropy_gradient_pushes_collapsed_mean_toward_uniform():
    # Every anchor puts most of its mass on cluster 0: a collapsed prediction.
    k = 4
    logits = jnp.tile(jnp.array([[4.0, 0.0, 0.5, -0.5]]), (8, 1))
    logits = logits + 0.1 * jax.random.normal(jax.random.PRNGKey(0), logits.shape)

    def minus_weighted_entropy(x):  # the entropy term of the total loss
        return -2.0 * losses.scan_loss(x, x, entropy_weight=2.0)[2]

    grad = jax.grad(minus_weighted_entropy)(logits)
    assert np.all(np.asarray(grad[:, 0]) > 0)  # descent lowers the dominant cluster's logit
    assert np.all(np.asarray(grad[:, 1:]) < 0)  # and raises the others'
    mean_p = lambda x: jnp.mean(jax.nn.softmax(x), axis=0)
    distance = lambda x: float(jnp.sum(jnp.abs(mean_p(x) - 1.0 / k)))
    assert distance(logits - 0.5 * grad) < distance(logits)
    # The full loss, gradients through anchors and neighbours, moves the same way.
    total = jax.grad(lambda x: losses.scan_loss(x, x, entropy_weight=2.0)[0])(logits)
    assert distance(logits - 0.5 * total) < distance(logits)


def test_pseudo_label_cross_entropy_hard_equals_one_hot_soft():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(2, 6, 4)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 4, size=(2, 6)), jnp.int32)
    hard = losses.pseudo_label_cross_entropy(logits, labels)
    soft = losses.pseudo_label_cross_entropy(logits, jax.nn.one_hot(labels, 4))
    assert hard.shape == (2,)
    np.testing.assert_allclose(hard, soft, rtol=1e-6)
    log_p = np.asarray(jax.nn.log_softmax(logits))
    want = -np.mean(np.take_along_axis(log_p, np.asarray(labels)[..., None], -1)[..., 0], -1)
    np.testing.assert_allclose(hard, want, rtol=1e-6)


def test_selflabel_loss_masks_unconfident_and_balances_classes():
    weak = jnp.array([[10.0, 0.0], [10.0, 0.0], [0.0, 10.0], [0.2, 0.0]])  # last one unsure
    strong = jnp.log(jnp.array([[0.5, 0.5], [0.8, 0.2], [0.1, 0.9], [0.5, 0.5]]))
    loss, confident = losses.selflabel_loss(weak, strong, threshold=0.99, class_balance=True)
    np.testing.assert_allclose(confident, 0.75)
    # Class 0 has 2 confident examples (weight 3/2 each), class 1 one (weight 3).
    ce = -np.log([0.5, 0.8, 0.9])
    want = (1.5 * ce[0] + 1.5 * ce[1] + 3 * ce[2]) / 6
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    plain, _ = losses.selflabel_loss(weak, strong, threshold=0.99, class_balance=False)
    np.testing.assert_allclose(plain, ce.mean(), rtol=1e-5)
    none, frac = losses.selflabel_loss(weak * 0, strong, threshold=0.99)
    assert float(none) == 0.0 and float(frac) == 0.0
    # No gradient through the weak view.
    g = jax.grad(lambda w: losses.selflabel_loss(w, strong, threshold=0.99)[0])(weak)
    assert not np.any(np.asarray(g))


def test_largest_cluster_share():
    logits = jax.nn.one_hot(jnp.array([0, 0, 0, 1, 2, 0]), 3)
    np.testing.assert_allclose(losses.largest_cluster_share(logits), 4 / 6)


# ----------------------------------------------------------------------------- plots


def test_cluster_sizes_and_summary():
    sizes = evaluation.cluster_sizes(jnp.array([2, 2, 0, 2]), num_clusters=4)
    np.testing.assert_array_equal(sizes, [1, 0, 3, 0])
    jitted = jax.jit(lambda y: evaluation.cluster_sizes(y, num_clusters=4))(jnp.array([2, 2, 0, 2]))
    np.testing.assert_array_equal(jitted, sizes)
    s = evaluation.cluster_size_summary(sizes)
    assert s["largest_share"] == 0.75 and s["empty_clusters"] == 2
    assert "cluster    2       3 ( 75.0%)" in evaluation.histogram_text(sizes)


def test_confusion_matrix_png_is_diagonal_after_matching(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, size=200)
    perm = np.array([3, 5, 0, 1])  # class c -> cluster perm[c]; clusters 2 and 4 unused
    y_pred = perm[y_true]
    path = str(tmp_path / "plots" / "confusion.png")
    matrix = evaluation.save_confusion_matrix(
        path, y_true, y_pred, num_classes=4, num_clusters=6, class_names=("a", "b", "c", "d")
    )
    assert matrix.shape == (4, 6)
    np.testing.assert_array_equal(matrix[:, :4], np.diag(np.bincount(y_true, minlength=4)))
    assert not matrix[:, 4:].any()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 6 * 20


# ----------------------------------------------------------------------------- SeLa


def sela_smoke(**overrides):
    """The config of the SeLa train.py run."""
    return tiny_config("sela", **SELA, **overrides)


def test_label_update_schedule():
    assert sela.label_update_steps(100, 4) == (1, 25, 50, 75)
    assert sela.label_update_steps(4, 2) == (1, 2)
    assert sela.label_update_steps(3, 10) == (1, 2, 3)


def test_sela_initial_labels_are_random_equipartitions():
    config = sela_smoke()
    hard = sela.initial_labels(103, config)
    assert hard.shape == (2, 103) and hard.dtype == np.int32
    for row in hard:
        np.testing.assert_array_equal(np.sort(np.bincount(row)), [10] * 7 + [11] * 3)
    assert not np.array_equal(hard[0], hard[1])
    config.sela.label_mode = "soft"
    soft = sela.initial_labels(103, config)
    np.testing.assert_array_equal(soft.argmax(-1), hard)


def test_sela_train_py_smoke_and_exact_resume_including_labels(train_py_runs, tmp_path):
    # Straight: 8 steps through the real train.py path (labels updated after steps 1 and 4).
    run = train_py_runs["sela"]
    straight = run.workdir
    assert_finished(run)
    assert "head ACC (Hungarian)" in run.stdout
    assert "head_best" not in run.stdout  # an index is no metric: JSON only
    result = json.load(open(os.path.join(straight, "eval_8.json")))
    assert {"head_acc", "head_nmi", "head_ari", "head_best", "head_largest_share"} <= set(result)
    assert 0.0 <= result["head_acc"] <= 1.0
    train = records(straight)
    assert all("largest_cluster_share" in r and np.isfinite(r["loss"]) for r in train)
    # The heads learned their pseudo-labels: the cross-entropy fell, below ln 10 (uniform
    # predictions). lr 1e-9: 2.323 -> 2.316; here 2.302 -> 2.215.
    assert_fell(train, "loss", by=0.04)
    assert train[-1]["loss"] <= log_uniform(10) - 0.04

    # Interrupted after 2 steps, then resumed in this process, relabelling after step 4:
    # every leaf equal.
    workdir = str(tmp_path / "resumed")
    interrupted = trainer.train_and_evaluate(
        sela_smoke(), workdir, show_progress=False, stop_at_step=2
    )
    assert int(interrupted["state"].step) == 2 and interrupted["eval"] is None
    assert int(interrupted["state"].method_state["label_updates"]) == 1
    resumed = trainer.train_and_evaluate(sela_smoke(), workdir, show_progress=False)
    assert int(resumed["state"].step) == 8
    assert int(resumed["state"].method_state["label_updates"]) == 2
    # params, optimiser, batch stats, labels, head losses, rng, step
    restored = trainer.restore_run(straight)
    exp, state = restored.experiment, restored.state
    leaves_equal(state, resumed["state"])
    assert resumed["eval"]["head_acc"] == result["head_acc"]

    # A labelling step fills every cluster exactly (balanced rounding of the plan).
    new = exp.prepare_host().relabel(state).method_state
    assert int(new["label_updates"]) == 3
    labels = np.asarray(new["labels"])
    n, k = len(exp.train), exp.config.sela.num_clusters
    assert labels.shape == (2, n) and labels.dtype == np.int32
    for row in labels:
        assert set(np.bincount(row, minlength=k)) <= {n // k, n // k + 1}
    # Evaluation writes the matched confusion matrix when it knows the workdir.
    exp.workdir = str(tmp_path)
    metrics = exp.evaluate(state)
    scores = {k: m.value for k, m in metrics.items()}
    assert metrics["head_best"].label is None  # an index: JSON only
    assert os.path.exists(tmp_path / "confusion_8.png")
    assert scores["head_acc"] == result["head_acc"]
    assert scores["head_acc"] <= scores["head_acc_max_over_heads"] <= 1.0


def test_sela_labels_split_over_8_devices_equal_1_device():
    """The label table lives split by example over 8 devices ([H, N / 8] each, N a
    multiple of 8), and one step, a relabelling and a step on the new labels give the
    labels, parameters and loss of 1 device (the [N, H, K] logits never on the host)."""
    config = sela_smoke(**ONE_STAGE, batch_size=32)
    digits = trainer.load_data(config)
    train = data.Split(digits.train.images[:256], digits.train.labels[:256])
    dataset = dataclasses.replace(digits, train=train)
    got = {}
    for devices in (jax.devices()[:1], jax.devices()):
        exp = trainer.Experiment(config, devices, dataset=dataset)
        state = exp.init_state()
        labels = state.method_state["labels"]
        n = len(exp.train)
        if len(devices) == 8:
            assert n % 8 == 0
            assert labels.sharding.spec == jax.sharding.PartitionSpec(None, "data")
            assert {s.data.shape for s in labels.addressable_shards} == {(2, n // 8)}
        state, _ = exp.train_step(state, exp.global_batch(0))
        phases = []
        state = exp.prepare_host(phase=_recording(phases)).relabel(state, 1)
        # the relabelling is shown as a phase, its logits batch by batch up to every image
        assert [name for name, _ in phases] == [
            "SeLa: relabelling the training images after step 1"
        ]
        reports = phases[0][1]
        assert reports[0] == (0, n) and reports[-1] == (n, n) and reports == sorted(reports)
        assert state.method_state["labels"].sharding == labels.sharding
        relabelled = np.asarray(state.method_state["labels"])
        state, metrics = exp.train_step(state, exp.global_batch(1))
        got[len(devices)] = (relabelled, jax.device_get(state.params), float(metrics["loss"]))
    np.testing.assert_array_equal(got[1][0], got[8][0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), got[1][1], got[8][1])
    assert got[1][2] == pytest.approx(got[8][2], rel=1e-4)
    k = config.sela.num_clusters
    assert set(np.bincount(got[8][0][0], minlength=k)) <= {256 // k, 256 // k + 1}


def test_collapse_warning():
    config = tiny_config("sela")
    warn = sela.SELA.collapse_warnings
    assert warn({"largest_cluster_share": 0.2}, config) == []
    assert "collapsing" in warn({"largest_cluster_share": 0.9}, config)[0]


# ----------------------------------------------------------------------------- SCAN


def _recording(phases: list):
    """A ``HostContext.phase`` that records (name, [(done, total), ...]) per phase."""

    @contextlib.contextmanager
    def phase(name):
        reports = []
        phases.append((name, reports))
        yield lambda done, total: reports.append((done, total))

    return phase


def test_mine_neighbors_matches_brute_force():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(37, 6)).astype(np.float32)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    reports = []
    got = scan.mine_neighbors(
        features, k=5, mesh=mesh, chunk_size=16, progress=lambda *a: reports.append(a)
    )
    assert reports == [(16, 37), (32, 37), (37, 37)]
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    want = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(scan.mine_neighbors(features, k=5, chunk_size=64), want)
    assert scan.neighbor_accuracy(want, np.zeros(37, np.int64)) == 1.0


@pytest.mark.parametrize("n, k, chunk", [(24, 10, 7), (40, 6, 40), (35, 4, 8)])
def test_mine_neighbors_sharded_bank_breaks_ties_as_one_top_k(n, k, chunk):
    """One-hot features (exact similarities 0 and 1, ties everywhere): the bank split over
    8 devices (k above a device's 3-5 rows, padding rows, a global jax.Array as given by
    Predictor.sharded) gives exactly the stable brute-force ranking of one device."""
    rng = np.random.default_rng(n)
    unit = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    features = unit * rng.integers(1, 4, (n, 1)).astype(np.float32)  # norms 1-3
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    want = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    mesh = sharding.make_mesh()
    np.testing.assert_array_equal(scan.mine_neighbors(features, k=k, chunk_size=chunk), want)
    got = scan.mine_neighbors(features, k=k, mesh=mesh, chunk_size=chunk)
    np.testing.assert_array_equal(got, want)
    if n % 8 == 0:
        bank = jax.device_put(features, sharding.data_sharded(mesh))
        np.testing.assert_array_equal(
            scan.mine_neighbors(bank, k=k, mesh=mesh, chunk_size=chunk), want
        )


def scan_smoke(**overrides):
    """The config of the SCAN stage of the train.py run (its pretext stage tiny too)."""
    config = tiny_config("scan", **SCAN, **overrides)
    set_fields(config.stages.pretext, **TINY)
    return config


def test_scan_smoke_pretext_init_neighbours_exact_resume_then_selflabel(train_py_runs, tmp_path):
    stages = train_py_runs["stages"]
    assert stages.returncode == 0, stages.stderr[-3000:]
    pretext_dir = os.path.join(stages.workdir, "scan", "pretext")
    scan_dir = os.path.join(stages.workdir, "scan")
    result = json.load(open(os.path.join(scan_dir, "eval_8.json")))
    assert {"head_acc", "head_nmi", "head_ari", "neighbor_acc"} <= set(result)
    train = records(scan_dir)
    assert all(np.isfinite(r["consistency"]) and r["entropy"] > 0 for r in train)
    # The heads learned: consistency - 5 x entropy fell. lr 1e-9: -18.109 -> -18.114;
    # here -18.26 -> -18.42 (the predictions spread over the clusters).
    assert_fell(train, "loss", by=0.06)

    # Interrupted after 2 steps, then resumed in this process: every leaf equal.
    straight = trainer.restore_run(scan_dir).state
    config = scan_smoke(**{"init_from.workdir": pretext_dir})
    workdir = str(tmp_path / "resumed")
    trainer.train_and_evaluate(config, workdir, show_progress=False, stop_at_step=2)
    resumed = trainer.train_and_evaluate(config, workdir, show_progress=False)
    leaves_equal(straight, resumed["state"])  # neighbours drawn from (seed, step)
    assert resumed["eval"]["head_acc"] == result["head_acc"]

    # A fresh SCAN run starts from the pretext backbone (config.init_from), and draws one
    # mined neighbour per example from (seed, step).
    pretext_state = trainer.restore_run(pretext_dir).state
    exp, init_run = trainer.open_run(config, str(tmp_path / "fresh"))
    neighbors = exp.host.neighbors
    assert neighbors.shape == (len(exp.train), 5)
    init = exp.init_state(init_run)
    leaves_equal(init.params["backbone"], pretext_state.params["backbone"])
    leaves_equal(init.batch_stats["backbone"], pretext_state.batch_stats["backbone"])
    # The host object records the table a fresh run trains on, and refuses another one.
    init = exp.host.update(init, 1)
    assert int(init.method_state["neighbors_digest"]) == scan.digest(neighbors)
    other = scan.ScanNeighbors(neighbors[::-1].copy(), exp.config, exp.train, exp.mesh)
    with pytest.raises(Exception, match="neighbours differ"):
        other.update(init, 2)
    b3 = jax.device_get(exp.global_batch(3))
    exp.global_batch(1)
    np.testing.assert_array_equal(jax.device_get(exp.global_batch(3))["neighbor"], b3["neighbor"])
    for i, image in zip(b3["index"][:8], b3["neighbor"][:8], strict=True):
        pool = exp.train.get(neighbors[i])
        assert any(np.array_equal(image, p) for p in pool)

    # Self-labelling starts from the lowest-loss head of the finished SCAN-stage run...
    config = tiny_config("scan", "digits,selflabel,smoke", **{"init_from.workdir": scan_dir})
    exp, init_run = trainer.open_run(config, str(tmp_path / "selflabel"))
    state = exp.init_state(init_run)
    best = int(np.argmin(np.asarray(straight.method_state["head_loss"])))
    np.testing.assert_array_equal(
        state.params["head"]["kernel"][0], straight.params["head"]["kernel"][best]
    )
    # ...and, trained in W (train.py), its predictions became confident on the weak view.
    # lr 1e-9: the confident fraction goes from 0.08 to 0.09; here from 0.49 to 1.0.
    train = records(stages.workdir)
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["confident_fraction"] <= 1.0 for r in train)
    assert_rose(train, "confident_fraction", by=0.2)
    scores = json.load(open(os.path.join(stages.workdir, "eval_8.json")))
    assert scores["head_best"] == 0 and 0.0 <= scores["head_acc"] <= 1.0


def test_scan_without_a_pretext_run_explains_what_to_do(tmp_path):
    config = scan_smoke(**{"init_from.workdir": ""})
    with pytest.raises(Exception, match="init_from.workdir"):
        trainer.open_run(config, str(tmp_path))
    config.init_from.workdir = "stage:nothing"
    with pytest.raises(Exception, match="names no stage"):
        trainer.open_run(config, str(tmp_path))


def test_selflabel_train_py_runs_every_earlier_stage_in_its_workdir(train_py_runs):
    """One command: SimCLR in W/scan/pretext, SCAN in W/scan, self-labelling in W."""
    stages = train_py_runs["stages"]
    workdir = stages.workdir
    assert stages.returncode == 0, stages.stderr[-3000:]
    assert "pretext stage:" in stages.stdout and "scan stage:" in stages.stdout
    for run, step in (("scan/pretext", 4), ("scan", 8), ("", 8)):
        assert os.path.exists(os.path.join(workdir, run, f"eval_{step}.json")), run
    assert os.path.exists(os.path.join(workdir, "scan", scan.NEIGHBORS_FILE))
    result = json.load(open(os.path.join(workdir, "eval_8.json")))
    assert 0.0 <= result["head_acc"] <= 1.0 and "knn_top1" in result
