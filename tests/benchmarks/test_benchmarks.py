"""The benchmark scripts run (numbers are reported by them, never asserted here)."""

import json
import os
import time
import xml.etree.ElementTree as ET

import jax
import numpy as np
import pytest

from benchmarks import (
    budget,
    common,
    compare_pytorch,
    conv_impl,
    projection_head,
    render_results,
    rotation_heads,
    throughput,
    torch_reference,
)
from configs import rotation as rotation_config
from configs import simclr as simclr_config
from jssl import augment, data, pretext, trainer
from tests.helpers import ROOT

ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")


@pytest.mark.slow
def test_throughput_script(tmp_path):
    out = tmp_path / "t.json"
    result = throughput.main(
        ["--config=configs/simclr.py:digits,smoke", "--batch_size=16", "--steps=2", f"--out={out}"]
    )
    assert result["images_per_sec"] > 0 and result["xla_flops_per_step"] > 0
    assert 0 < result["utilisation_vs_matmul"] < 10
    assert json.loads(out.read_text())["batch_size"] == 16


@pytest.mark.skipif(
    not os.path.exists(ARCHIVE), reason="CIFAR-10 JPEG copy (../shared/datasets) absent"
)
def test_budget_script_on_cifar10_jpeg(tmp_path):
    out = tmp_path / "b.json"
    result = budget.main(
        [
            "--minutes=0.05",
            "--batch_size=64",
            "--max_eval_train=2000",
            "--curve_points=2",
            "--curve_train=1000",
            "--curve_test=500",
            f"--out={out}",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    assert result["steps"] >= 1
    assert 0.40 < result["raw_pixel_knn_top1"] < 0.50  # 45.8% on this copy
    assert 0.15 < result["raw_pixel_kmeans_test"]["acc"] < 0.30  # 0.205 on this copy
    assert 0.1 < result["knn_top1"] <= 1.0
    saved = json.loads(out.read_text())
    assert saved["method"] == "simclr" and saved["framework"] == "jssl"
    curve = saved["curve"]  # the initial state, the kept states, the end
    assert curve[0]["step"] == 0 and curve[-1]["step"] == result["steps"] and len(curve) >= 2
    assert [p["minutes"] for p in curve] == sorted(p["minutes"] for p in curve)
    assert all(0.0 < p["knn_top1"] <= 1.0 for p in curve)
    assert saved["curve_subset"] == {"train": 1000, "test": 500, "seed": budget.CURVE_SEED}


@pytest.mark.slow
def test_conv_impl_script(tmp_path):
    result = conv_impl.main(
        ["--width=4", "--batch=4", "--repeats=1", f"--out={tmp_path / 'c.json'}"]
    )
    # stem; stage 1's two identical convs (counted twice); 3x3 s2, 3x3 s1, 1x1 s2 per later stage
    assert len(result["convs"]) == 1 + 1 + 3 * 3
    assert sorted(r["uses"] for r in result["convs"]) == [1] * 10 + [2]
    impls = {"xla", "im2col", "im2col_strided", "chunked_grad"}
    assert all(r[f"{impl}_gflops"] > 0 for r in result["convs"] for impl in impls)
    assert all(r["fastest"] in impls for r in result["convs"])
    assert set(result["seconds_per_pass"]) == impls


def test_budget_overrides():
    config = budget.budget_config("sela", "/nonexistent", 32)
    budget.apply_overrides(
        config, ["sela.num_label_updates=4", "optim.learning_rate=0.1", "sela.label_mode=soft"]
    )
    assert config.sela.num_label_updates == 4 and config.optim.learning_rate == 0.1
    assert config.sela.label_mode == "soft"
    for bad in ["sela.no_such_field=1", "nope.x=1", "sela.lam"]:
        with pytest.raises(SystemExit, match="error: --set"):
            budget.apply_overrides(config, [bad])


@pytest.mark.parametrize("method", ["byol", "mocov3", "swav", "barlow_twins", "vicreg", "mae"])
def test_budget_configs_of_the_new_methods_are_cpu_sized_and_valid(method):
    from jssl import validation

    config = budget.budget_config(method, "/nonexistent", 256)
    validation.validate_config(config)
    kwargs = config.model.kwargs
    if method == "mae":  # ViT-Tiny's width at half its depth, a small decoder
        assert (kwargs.hidden, kwargs.depth, config.mae.decoder_depth) == (192, 6, 2)
    else:
        assert (kwargs.width, tuple(kwargs.stage_sizes)) == (16, (1, 1, 1, 1))


def test_raw_pixel_kmeans_floor_scores_like_sklearn():
    import sklearn.cluster
    import sklearn.metrics

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20).astype(np.int32)
    centres = rng.integers(0, 256, size=(3, 4, 4, 3))
    images = np.clip(centres[labels] + rng.normal(0, 30, (60, 4, 4, 3)), 0, 255).astype(np.uint8)
    split = data.Split(images=images, labels=labels)
    dataset = data.Dataset(
        name="t", train=split, test=split, num_classes=3, class_names=("a", "b", "c")
    )
    floor = budget.raw_pixel_kmeans(dataset)
    pred = sklearn.cluster.KMeans(n_clusters=3, n_init=3, random_state=0).fit_predict(
        images.reshape(60, -1).astype(np.float32) / 255.0
    )
    assert floor["nmi"] == pytest.approx(sklearn.metrics.normalized_mutual_info_score(labels, pred))
    assert floor["ari"] == pytest.approx(sklearn.metrics.adjusted_rand_score(labels, pred))
    assert floor["acc"] == pytest.approx(1.0)  # three well-separated blobs


@pytest.mark.slow
def test_compare_pytorch_jssl_half(tmp_path):
    out = tmp_path / "c.json"
    result = compare_pytorch.main(
        [
            "--frameworks=jssl",
            "--devices=1",  # one XLA program instead of an 8-way partitioned one: faster compile
            "--synthetic",
            "--batch_size=8",
            "--width=4",
            "--stage_sizes=1",
            "--warmup=1",
            "--steps=1",
            "--e2e_steps=1",
            "--quick",
            f"--out={out}",
        ]
    )
    j = result["jssl"]
    assert j["step_images_per_sec"] > 0 and j["e2e_images_per_sec"] > 0
    assert j["param_count"] == 17_700  # the PyTorch reference's count (checked in the torch test)
    assert set(j["step_cpu"]) == set(j["e2e_cpu"]) == {"own_cores", "others_cores"}
    assert j["step_cpu"]["own_cores"] >= 0 and j["e2e_cpu"]["others_cores"] >= 0
    assert "torch" not in result and json.loads(out.read_text())["batch_size"] == 8


_PROFILE_A_CONV = """
import json, sys
import jax, jax.numpy as jnp
from benchmarks import compare_pytorch

def loss(x, w):
    dn = ("NHWC", "HWIO", "NHWC")
    return jnp.sum(jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dn) ** 2)

step = jax.jit(jax.grad(loss, argnums=(0, 1)))
x, w = jnp.ones((8, 16, 16, 8)), jnp.ones((3, 3, 8, 8))
jax.block_until_ready(step(x, w))
profile = compare_pytorch.xla_profile(lambda i: jax.block_until_ready(step(x, w)), 3, sys.argv[1])
print(json.dumps(profile))
"""


def test_xla_profile_names_the_ops_of_a_step(tmp_path):
    """--profile's per-op table: XLA:CPU's thunks by HLO name, their CPU time per step."""
    import subprocess
    import sys

    flags = "--xla_cpu_enable_xprof_traceme=true --xla_force_host_platform_device_count=1"
    proc = subprocess.run(
        [sys.executable, "-c", _PROFILE_A_CONV, str(tmp_path / "trace")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    profile = json.loads(proc.stdout.strip().splitlines()[-1])
    kinds = {row["op"] for row in profile["by_kind"]}
    assert any("conv" in k or "ynn" in k for k in kinds), kinds  # the convolutions are named
    assert profile["cpu_ms_per_step"] > 0
    shares = [row["share"] for row in profile["by_kind"]]
    assert shares == sorted(shares, reverse=True) and 0.99 <= sum(shares) <= 1.0 + 1e-9
    assert all("Execute" not in row["op"] for row in profile["by_op"])  # ops, not wrappers


def test_compare_pytorch_torch_half(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    result = compare_pytorch.main(
        [
            "--frameworks=torch",
            "--synthetic",
            "--batch_size=8",
            "--width=4",
            "--stage_sizes=1",
            "--warmup=1",
            "--steps=1",
            "--e2e_steps=1",
            "--workers=1",
            "--quick",
            f"--out={tmp_path / 'c.json'}",
        ]
    )
    t = result["torch"]
    assert t["param_count"] == 17_700  # the same network as jssl's (see the test above)
    assert t["step_images_per_sec"] > 0 and t["e2e_images_per_sec"] > 0


def _budget_json(path, framework, minutes, knn, **extra):
    curve = [
        {"step": 10 * i, "minutes": m, "knn_top1": k}
        for i, (m, k) in enumerate(zip(minutes, knn, strict=True))
    ]
    path.write_text(
        json.dumps(
            {
                "method": "simclr",
                "framework": framework,
                "minutes_budget": 2.0,
                "steps": curve[-1]["step"],
                "epochs": 0.5,
                "train_seconds": 60 * minutes[-1],
                "knn_top1": knn[-1],
                "linear_top1": 0.5,
                "cluster_acc": 0.25,
                "raw_pixel_knn_top1": 0.458,
                "curve": curve,
                "loadavg_1_5_15_before": [1.0, 1.0, 1.0],
                "loadavg_1_5_15_after": [2.0, 1.5, 1.0],
                "cpu_during_train": {"own_cores": 1.9, "others_cores": 0.05},
                "date": "2026-11-28T05:00:00+00:00",
                "command": f"python benchmarks/budget.py --framework {framework} --minutes 2",
                **extra,
            }
        )
    )


def test_render_results_shows_the_command_a_reader_reruns():
    import tempfile

    archive = os.path.join(render_results.ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")
    scratch = os.path.join(tempfile.gettempdir(), "budget_runs", "byol")
    run = {"command": f"python b.py --method byol --data {archive} --workdir {scratch} --x 1"}
    assert render_results.shown_command(run) == "python b.py --method byol --x 1"
    kept = {"command": "python b.py --data /elsewhere --workdir runs/w"}
    assert render_results.shown_command(kept) == kept["command"]


def test_render_results(tmp_path, capsys):
    _budget_json(tmp_path / "budget_jssl_a.json", "jssl", [0.0, 1.0, 2.0], [0.30, 0.40, 0.45])
    _budget_json(tmp_path / "budget_torch_a.json", "torch", [0.0, 1.1, 2.0], [0.30, 0.38, 0.42])
    (tmp_path / "other.json").write_text("{}")  # not a budget result: ignored
    svg_path = tmp_path / "plot.svg"
    text = render_results.main([f"--results={tmp_path}", f"--svg={svg_path}"])
    assert text in capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 3  # header + two runs
    assert rows[1].startswith("| jssl | simclr | 2 ") and "45.0%" in rows[1]
    assert rows[2].startswith("| PyTorch | simclr | 2 ") and "42.0%" in rows[2]
    assert "1.0 → 2.0" in rows[1] and "`python benchmarks/budget.py --framework torch" in rows[2]
    root = ET.fromstring(svg_path.read_text())  # matplotlib's SVG, well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # The figure: a 3-point curve per run (in %), a square at each final figure, a legend
    # entry per run naming its final figure.
    ax = render_results.plot(render_results.load_runs(str(tmp_path))).axes[0]
    curves = sorted(tuple(line.get_ydata()) for line in ax.lines if len(line.get_xdata()) == 3)
    np.testing.assert_allclose(curves, [[30.0, 38.0, 42.0], [30.0, 40.0, 45.0]])
    squares = [line for line in ax.lines if line.get_marker() == "s" and len(line.get_xdata())]
    assert sorted(float(line.get_ydata()[0]) for line in squares) == [42.0, 45.0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 2 and any("final 45.0% at 2.0 min" in t for t in legend)
    png = tmp_path / "plot.png"  # a PNG by the extension
    render_results.main([f"--results={tmp_path}", f"--svg={png}"])
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG"
    # A result written before budget.py kept a curve is one point at its final time.
    old = {"framework": "jax", "minutes_budget": 20.0, "knn_top1": 0.45}
    assert render_results.curve(old) == [] and render_results.final_point(old) == (20.0, 45.0)
    assert render_results.framework(old) == "jssl"
    ax = render_results.plot([old]).axes[0]
    assert [len(line.get_xdata()) for line in ax.lines] == [1, 0]  # its square, its legend
    assert "20 min" in ax.get_legend().get_texts()[0].get_text()
    # A clustering method's own head is shown beside k-means, and the k-means floor below.
    floor = {"acc": 0.205, "nmi": 0.084, "ari": 0.043}
    _budget_json(
        tmp_path / "budget_jssl_b.json",
        "jssl",
        [0.0, 2.0],
        [0.3, 0.35],
        method="sela",
        head_acc=0.271,
        raw_pixel_kmeans_test=floor,
    )
    text = render_results.main([f"--results={tmp_path}", f"--svg={svg_path}"])
    assert "| 0.250 (head 0.271) |" in text
    assert "Raw-pixel k-means floor (test split, Hungarian-matched): ACC 0.205, NMI 0.084" in text


def _tiny_image_folder(root, n_train=48, n_test=16):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(("dark", "light")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n // 2):
                pixels = rng.integers(0, 128, (32, 32, 3)) + 127 * c
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.jpg")
    return root


def test_torch_lars_matches_optax():
    torch = pytest.importorskip("torch")
    import optax

    config = budget.budget_config("simclr", "", 256)  # LARS, lr 1.0, wd 1e-6, momentum 0.9
    config.optim.weight_decay = 0.1  # large enough to matter in three steps
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    grads = [(rng.normal(size=(2, 3)), rng.normal(size=2)) for _ in range(3)]
    lrs = [0.5, 1.0, 0.25]

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w))
        model.bias.copy_(torch.from_numpy(b))
    opt = torch_reference.torch_optimizer(torch, model, config)
    for (gw, gb), lr in zip(grads, lrs, strict=True):
        model.weight.grad = torch.tensor(gw, dtype=torch.float32)
        model.bias.grad = torch.tensor(gb, dtype=torch.float32)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()

    oc = config.optim
    tx = optax.lars(
        lambda count: np.asarray(lrs)[count],
        weight_decay=oc.weight_decay,
        weight_decay_mask={"kernel": True, "bias": False},
        trust_ratio_mask={"kernel": True, "bias": False},
        momentum=oc.momentum,
    )
    params = {"kernel": w, "bias": b}
    state = tx.init(params)
    for gw, gb in grads:
        g = {"kernel": gw.astype(np.float32), "bias": gb.astype(np.float32)}
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(model.weight.detach().numpy(), params["kernel"], rtol=1e-5)
    np.testing.assert_allclose(model.bias.detach().numpy(), params["bias"], rtol=1e-5)


def test_budget_torch_on_tiny_folder(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    monkeypatch.setenv("JSSL_CACHE_DIR", str(tmp_path / "cache"))
    folder = _tiny_image_folder(tmp_path / "images")
    out = tmp_path / "t.json"
    result = budget.main(
        [
            "--framework=torch",
            f"--data={folder}",
            "--minutes=0.02",
            "--batch_size=16",
            "--workers=1",
            "--threads=1",
            "--curve_points=2",
            f"--out={out}",
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["framework"] == "torch" and saved["param_count"] == 340_688  # jssl's count
    assert result["steps"] >= 1 and saved["curve"][0]["step"] == 0
    assert saved["curve"][-1]["step"] == result["steps"]
    assert all(0.0 <= p["knn_top1"] <= 1.0 for p in saved["curve"])
    assert 0.0 <= result["knn_top1"] <= 1.0 and 0.0 <= result["cluster_acc"] <= 1.0
    # Scored by the evaluators jssl's trainer runs for SimCLR (through TorchPredictor).
    assert {"knn_top1", "linear_top1", "cluster_acc", "nmi", "ari", "eval_seconds"} <= set(saved)
    assert saved["versions"]["torch"] and saved["loadavg_1_5_15_after"]


def _smoke_config(module, **overrides):
    """A digits smoke config with a one-stage ConvNet (quick to compile); dotted-key overrides."""
    config = module.get_config("digits,smoke")
    config.model.kwargs.widths = (8,)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


def test_cpu_sampler_phase_and_window():
    sampler = common.CpuSampler(every=0.05)
    with sampler.phase() as cpu:
        sum(i * i for i in range(200_000))  # some CPU work of this process
    assert set(cpu) == {"own_cores", "others_cores"}
    assert cpu["own_cores"] > 0 and cpu["others_cores"] >= 0
    with sampler:  # the sampling thread: shares of windows known only afterwards
        t0 = time.perf_counter()
        sum(i * i for i in range(500_000))
        t1 = time.perf_counter()
    share = sampler.share(t0, t1)
    assert set(share) == {"own_cores", "others_cores"} and share["own_cores"] > 0
    assert sampler.share(t1 + 100, t1 + 200) is None  # no samples in that window
    assert len(sampler.loadavg_at(t0)) == 3


def test_all_images_reads_the_source():
    rng = np.random.default_rng(0)
    split = data.Split(
        images=rng.integers(0, 256, (10, 4, 4, 1), dtype=np.uint8),
        labels=np.arange(10, dtype=np.int32),
    )
    sub = data.take_subset(split, 4, seed=3)
    np.testing.assert_array_equal(common.all_images(sub), split.images[sub.indices])
    assert budget.pixels(sub).shape == (4, 16) and budget.pixels(sub).max() <= 1.0


def test_budget_scores_are_the_trainers_evaluation():
    """The scoring both frameworks' figures go through is Experiment.evaluate's."""
    config = _smoke_config(simclr_config, **{"eval.max_train_examples": 200})
    exp = trainer.Experiment(config)
    state = exp.init_state()
    train = budget.eval_train_split(exp.dataset, config)
    assert len(train) == 200
    np.testing.assert_array_equal(
        train.labels, data.take_subset(exp.train, 200, seed=config.seed).labels
    )
    got = budget.scores(
        exp.predict, state, train, exp.dataset.test, config, exp.dataset, exp.method.evaluators
    )
    want = {k: m.value for k, m in exp.evaluate(state).items()}
    assert set(got) == set(want) >= {"knn_top1", "linear_top1", "cluster_acc", "nmi", "ari"}
    assert got == pytest.approx(want, abs=1e-6)
    subsets = budget.curve_subsets(exp.dataset, 100, 50)
    assert [len(s) for s in subsets] == [100, 50]
    knn = budget.subset_knn(exp.predict, state, subsets, config, exp.dataset)
    assert 0.0 <= knn <= 1.0


def test_rotation_heads_heldout_accuracy_matches_a_direct_count():
    config = _smoke_config(rotation_config, **{"rotation.head": "gap"})
    exp = trainer.Experiment(config)
    state = exp.init_state()
    got = rotation_heads.heldout_rotation_accuracy(exp, state)
    size = config.augment.crop_size
    images = exp.dataset.test.get(np.arange(len(exp.dataset.test)))
    x, labels = pretext.all_rotations(augment.eval_view(images, size=(size, size)))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits, _ = exp.model.apply(jax.device_get(variables), x, train=False)
    want = np.argmax(np.asarray(logits), -1) == np.asarray(labels)  # [4N], example-major
    # Per example, through the Predictor (360 test images: the last batch is padded).
    hits = exp.predict(variables, exp.dataset.test, rotation_heads.rotation_hits)
    np.testing.assert_array_equal(hits, want.reshape(-1, 4).astype(np.float32))
    assert got == pytest.approx(float(np.mean(want)), abs=1e-6)


@pytest.mark.slow
def test_projection_head_script(tmp_path):
    workdir = tmp_path / "run"
    config = _smoke_config(simclr_config, **{"eval.untrained": False})
    trained = trainer.train_and_evaluate(config, str(workdir), show_progress=False)
    out = tmp_path / "p.json"
    result = projection_head.main([f"--workdir={workdir}", f"--out={out}"])
    assert json.loads(out.read_text()) == result
    h, z = result["rows"]["h (before the head)"], result["rows"]["z (after the head)"]
    assert set(h) == set(z) == set(projection_head.METRICS)
    assert all(0.0 <= v <= 1.0 for v in (*h.values(), *z.values()))
    # h is what the trainer evaluates: the restored run reproduces its final figures.
    assert h == pytest.approx({k: trained["eval"][k] for k in projection_head.METRICS}, abs=1e-6)
    assert result["step"] == config.num_steps and result["method"] == "simclr"


def _numbers(tree, key=""):
    """(key, value) of every number in a JSON tree (bools are not numbers here)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, k)
    elif isinstance(tree, list):
        for v in tree:
            yield from _numbers(v, key)
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield key, tree


@pytest.mark.slow
def test_input_pipeline_tiny(tmp_path):
    import math

    from benchmarks import input_pipeline

    out = tmp_path / "ip.json"
    result = input_pipeline.main(["--tiny", f"--out={out}"])
    saved = json.loads(out.read_text())
    assert saved["summary"] == pytest.approx(result["summary"])
    assert {
        "command",
        "date",
        "machine",
        "versions",
        "data",
        "decode",
        "pipeline",
        "step",
        "matmul_flops_per_sec",
        "baseline",
        "summary",
        "ratios_vs_baseline",
        "ratios_vs_baseline_per_core_second",
        "total_seconds",
    } <= set(saved)
    assert {"cpu_count", "description", "loadavg_1_5_15_before", "loadavg_1_5_15_after"} <= set(
        saved["machine"]
    )
    assert [(r["draft"], r["image_size"]) for r in saved["decode"]] == [
        (False, 64),
        (True, 64),
        (False, 32),
        (True, 32),
    ]
    assert [(r["threads"], r["workers"]) for r in saved["pipeline"]] == [(1, 0), (1, 1)]
    timed = {"images_per_sec", "own_cores", "others_cores", "images_per_core_second", "seconds"}
    for row in saved["decode"] + saved["pipeline"] + [saved["data"]["prepare"]]:
        assert timed <= set(row)
    assert {"images_per_sec", "xla_flops_per_image", "compile_seconds"} <= set(saved["step"])
    assert {"host_cores_for_step", "host_cores_per_1000_images_per_sec"} <= set(saved["summary"])
    # 500x375 JPEGs decoded at 64 and 32 px: draft decodes them at 1/4 and 1/8 scale.
    assert [r["draft_scales"] for r in saved["decode"] if r["draft"]] == [[4], [8]]
    numbers = [
        (k, v)
        for section in (
            "data",
            "decode",
            "pipeline",
            "step",
            "summary",
            "ratios_vs_baseline",
            "ratios_vs_baseline_per_core_second",
        )
        for k, v in _numbers(saved[section])
    ]
    assert len(numbers) > 50
    for key, value in numbers:
        assert math.isfinite(value), key
        # 0 workers means threads; the CPU others took and the load may be 0 on an idle machine
        zero_ok = key in ("workers", "others_cores", "loadavg_1min")
        assert value >= 0 if zero_ok else value > 0, (key, value)
    assert saved["baseline"]["images_per_sec"] > 0 and saved["matmul_flops_per_sec"] > 0
