"""python -m jssl.report: the HTML report of real train.py smoke runs (SimCLR with evaluation
during training, SCAN, a decoder; DINO's in tests/methods/test_dino.py, beside its run),
every section and image present and decodable, comparison of two runs, one-line errors,
and a headless Chromium rendering when installed."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jssl import report
from jssl.report import runlog
from tests.helpers import ROOT, smoke_args, tiny_flags
from tests.report.pages import (
    EVERY_RUN,
    assert_images_decode,
    assert_self_contained,
    make,
    sections,
)

SIMCLR_FLAGS = tiny_flags(
    **{
        "num_steps": 8,
        "eval.every_steps": 2,
        "eval.during_max_examples": 128,
        "eval.untrained": True,
    }
)
SCAN = {"num_steps": 8, "log_every": 4, "checkpoint_every": 4, "optim.learning_rate": 0.01}
TRAIN_PY_RUNS = {
    "simclr": ("--config=configs/simclr.py:digits,smoke", *SIMCLR_FLAGS),
    "dino": smoke_args("dino", "--config.optim.learning_rate=0.02"),
    # SimCLR in W/pretext, then SCAN in W.
    "scan": smoke_args("scan", *tiny_flags(**SCAN), *tiny_flags("stages.pretext.")),
    "denoising": smoke_args("denoising", "--config.optim.learning_rate=0.01"),
}
SLOW_RUNS = ("dino", "scan", "denoising")  # read only by tests marked slow


def blob_clustering(folder) -> str:
    """A python -m jssl.cluster --out folder (k-means of 3 blobs of 2-d features), with a
    page of its own beside it."""
    from jssl.cluster import __main__ as cluster_cli

    labels = np.arange(60) % 3
    x = np.eye(3)[labels, :2].astype(np.float32) + 0.01 * (labels[:, None] == 2)
    meta = {"split": "test", "class_names": ["a", "b", "c"], "network": "student"}
    path = os.path.join(folder, "blobs.npz")
    np.savez(path, features=x, labels=labels, indices=np.arange(60), meta=json.dumps(meta))
    out = os.path.join(folder, "kmeans")
    assert cluster_cli.main([f"--features={path}", "--method=kmeans", "--k=3", f"--out={out}",
                             "--no_report"]) == 0  # fmt: skip
    with open(os.path.join(out, "report.html"), "w") as f:
        f.write("<html></html>")  # what jssl.cluster writes without --no_report
    return out


@pytest.fixture(scope="module")
def simclr_report(train_py_runs, tmp_path_factory):
    run = train_py_runs["simclr"]
    assert run.returncode == 0, run.stderr[-3000:]
    clustering = blob_clustering(tmp_path_factory.mktemp("clusters"))
    return run.workdir, *make([run.workdir], None, "--cluster", clustering)


def test_simclr_report_has_every_section(simclr_report):
    workdir, folder, page = simclr_report
    assert folder == os.path.join(workdir, "report")
    assert sections(page) == [*EVERY_RUN, "clusterings"]
    srcs = assert_images_decode(folder, page)
    assert set(srcs) == {
        "curves_train.png",
        "curves_eval_during.png",
        "retrieval.png",
        "embedding_map.png",
        "confusion.png",
        "cluster_sizes.png",
        "cluster_images.png",
        "views.png",
    }
    assert_self_contained(page)
    # The summary table: the printed rows, untrained beside trained, from the run's JSON.
    with open(os.path.join(workdir, "eval_8.json")) as f:
        trained = json.load(f)
    with open(os.path.join(workdir, "eval_untrained.json")) as f:
        untrained = json.load(f)
    row = re.search(r"<tr><td>kNN top-1</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r'<td class="num">(.*?)</td>', row)
    assert cells[:2] == [f"{untrained['knn_top1']:.4f}", f"{trained['knn_top1']:.4f}"]
    labels = re.findall(r"<tr><td>([^<]+)</td>", page.split('id="summary"')[1])
    assert labels[:5] == ["kNN top-1", "linear-probe top-1", "clustering ACC", "NMI", "ARI"]
    # Versions, devices and wall time of the session that trained it.
    assert "8 x cpu" in page and re.search(r"jax \d", page)
    assert re.search(r"\d+\.\d s training in 1 session\(s\)", page)
    assert "config.json of run" in page and "&quot;method&quot;: &quot;simclr&quot;" in page
    # Retrieval and clusters: green and red frames counted in the caption, matched matrix.
    assert re.search(r"\d+\.\d% of the neighbours shown share the query", page)
    assert "k-means (10 clusters)" in page and "ACC" in page
    # The jssl.cluster result given with --cluster: its row, figures and page.
    row = re.search(r"<tr><td>kmeans</td>(.*?)</tr>", page.split('id="clusterings"')[1])
    cells = re.findall(r'<td class="num">(.*?)</td>', row.group(1))
    assert cells[:4] == ["kmeans", "3 (3 classes)", "1.0000 (Hungarian)", "1"], cells
    assert 1.0 <= float(cells[6]) <= 2.0 and cells[7].endswith("blobs.npz"), cells  # 2-d
    assert re.fullmatch(r'<a href="[^"]*kmeans/report.html">clusters</a>', cells[8]), cells


def test_a_cluster_folder_without_results_is_one_error_line(simclr_report, tmp_path, capsys):
    workdir, _, _ = simclr_report
    assert report.main(["--workdir", workdir, "--cluster", str(tmp_path), "--out", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no readable metrics.json" in lines[0], lines
    assert "written by python -m jssl.cluster --out" in lines[0]
    assert not (tmp_path / "index.html").exists()
    (tmp_path / "metrics.json").write_text('{"method": "kmeans"}')  # not jssl.cluster's
    assert report.main(["--workdir", workdir, "--cluster", str(tmp_path), "--out", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no eval_features, k, metrics, num_classes" in lines[0], lines


def test_curves_hold_every_logged_series(simclr_report):
    workdir, _, _ = simclr_report
    log = runlog.read_run(workdir)
    train = log.series["train"]
    assert {"loss", "learning_rate", "grad_norm", "z_std", "h_std"} <= set(train)
    panels = report.curves.panels([log], "train")
    assert [t for t, _ in panels][:3] == ["loss", "learning_rate", "grad_norm"]
    assert "finite" not in [t for t, _ in panels]
    steps, knn = log.series["eval_during"]["knn_top1"]
    assert steps.tolist() == [2, 4, 6, 8] and np.all((knn >= 0) & (knn <= 1))


def test_metrics_log_keeps_the_last_record_of_a_step(tmp_path):
    lines = [
        {"step": 2, "kind": "train", "loss": 3.0},
        {"step": 4, "kind": "train", "loss": 2.0},  # logged, then killed before a checkpoint
        {"step": 2, "kind": "eval_during", "knn_top1": 0.5},
        {"step": 4, "kind": "train", "loss": 2.5},  # the resumed run logs step 4 again
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 6, "ki')  # cut short
    series = runlog.read_metrics(str(path))
    steps, loss = series["train"]["loss"]
    assert steps.tolist() == [2, 4] and loss.tolist() == [3.0, 2.5]
    assert series["eval_during"]["knn_top1"][1].tolist() == [0.5]


@pytest.mark.slow
def test_scan_report_shows_the_heads_clusters_and_neighbour_views(train_py_runs, tmp_path):
    run = train_py_runs["scan"]
    assert run.returncode == 0, run.stderr[-3000:]
    folder, page = make([run.workdir], tmp_path)
    assert sections(page) == list(EVERY_RUN)
    srcs = assert_images_decode(folder, page)
    assert "views.png" in srcs  # anchor and mined-neighbour views (needs the pretext run)
    assert "clustering head" in page and "lowest training loss" in page
    assert "head ACC (Hungarian)" in page  # the method's summary rows


@pytest.mark.slow
def test_decoder_report_has_reconstructions(train_py_runs, tmp_path):
    run = train_py_runs["denoising"]
    assert run.returncode == 0, run.stderr[-3000:]
    folder, page = make([run.workdir], tmp_path)
    assert sections(page) == [*EVERY_RUN, "method"]
    srcs = assert_images_decode(folder, page)
    assert "reconstructions.png" in srcs and "attention.png" not in srcs
    assert "denoising: inputs and outputs" not in page  # the title is in the PNG, not the page
    assert "python -m jssl.visualize reconstructions draws for denoising" in page


@pytest.mark.slow
def test_two_runs_side_by_side(train_py_runs, simclr_report, tmp_path):
    simclr, dino = simclr_report[0], train_py_runs["dino"].workdir
    folder, page = make([simclr, dino], tmp_path)
    ids = sections(page)
    assert ids == ["run", "summary", "curves", *EVERY_RUN[3:], "method"]
    srcs = assert_images_decode(folder, page)
    assert {"run0_retrieval.png", "run1_retrieval.png", "run1_attention.png"} <= set(srcs)
    # Both folders are named "run": the report names them by their parent folders too.
    names = [os.sep.join(w.split(os.sep)[-2:]) for w in (simclr, dino)]
    header = re.search(r'id="summary">.*?<tr>(.*?)</tr>', page, re.S).group(1)
    assert [header.count(f"<th>{n} (") for n in names] == [1, 1]  # a column per run
    # Each kind of picture holds the runs side by side, in the runs' order.
    for kind in EVERY_RUN[3:]:
        body = page.split(f'<section id="{kind}">')[1].split("</section>")[0]
        assert '<div class="runs" style="--runs: 2">' in body
        assert body.index(f"<h3>{names[0]}</h3>") < body.index(f"<h3>{names[1]}</h3>")
    method = page.split('<section id="method">')[1].split("</section>")[0]
    assert "none for this run" in method and "run1_attention.png" in method
    # Curves: a colour per run in every panel, a legend everywhere, and each method's loss
    # on its own axes (SimCLR's and DINO's losses have nothing in common).
    logs = runlog.read_runs([simclr, dino])
    panels = dict(report.curves.panels(logs, "train"))
    assert [s[0] for s in panels["loss (simclr)"]] == [names[0]]
    assert [s[0] for s in panels["loss (dino)"]] == [names[1]]
    assert "loss" not in panels and [s[0] for s in panels["learning_rate"]] == names
    assert report.curves.colors(logs) == {names[0]: "C0", names[1]: "C1"}


def test_runs_are_named_apart_by_as_many_parent_folders_as_it_takes():
    names = runlog.unique_names(["/a/x/run", "/b/x/run", "/c/other"])
    assert names == ["a/x/run", "b/x/run", "/c/other"]
    assert runlog.unique_names(["/w/simclr", "/w/dino"]) == ["simclr", "dino"]
    assert runlog.unique_names(["/w/run", "/w/run"]) == ["/w/run (1)", "/w/run (2)"]


def test_a_folder_without_a_run_is_one_error_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "jssl.report", "--workdir", str(empty)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "holds no jssl run" in lines[0] and "give the workdir of a run" in lines[0]
    assert not (empty / "report").exists()
    assert report.main(["--workdir", str(tmp_path / "missing")]) == 1


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


def test_report_renders_in_headless_chromium(simclr_report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian's chromium package); .ci/run installs it")
    _, folder, _ = simclr_report
    url = "file://" + os.path.join(folder, "index.html")
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr"]
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,4000", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CONSOLE" not in proc.stderr and "Uncaught" not in proc.stderr, proc.stderr[-3000:]
    with Image.open(shot) as im:
        assert im.size == (1200, 4000) and np.asarray(im.convert("L")).std() > 5
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert all(f'id="{s}"' in dom.stdout for s in EVERY_RUN)
