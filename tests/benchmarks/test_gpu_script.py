"""benchmarks/gpu.sh --dry-run: every piece of the GPU comparison at tiny sizes on the CPU.

The GPU run (benchmarks/gpu_compare.py) can only run where a GPU is lent; this
keeps its code from rotting in between: the jssl train steps of the three
workloads, the PyTorch references (when PyTorch is installed), the end-to-end
run with its kNN on a tiny JPEG folder, and the JSON and markdown it writes.
"""

import importlib.util
import json
import math
import pathlib
import sys

import pytest

WORKLOADS = ("simclr_resnet18_cifar", "simclr_resnet50_224", "dino_vits16_224")
HAS_TORCH = importlib.util.find_spec("torch") is not None
pytestmark = pytest.mark.slow  # a 90 s dry run of a script only a lent GPU runs for real


# The dry run goes on in the background from the start of the session (conftest.py).
BACKGROUND_COMMANDS = {
    "dry_run": [
        "env",
        f"PYTHON={sys.executable}",
        "bash",
        "benchmarks/gpu.sh",
        "{folder}",
        "--dry-run",
    ],
}


@pytest.fixture(scope="module")
def dry_run(train_py_runs):
    run = train_py_runs["dry_run"]
    out = pathlib.Path(run.workdir)
    result_path = out / "gpu_compare.json"
    assert result_path.exists(), run.stdout + run.stderr
    with open(result_path) as f:
        result = json.load(f)
    return run, result, (out / "gpu_compare.md").read_text(), out


def test_dry_run_jssl_and_end_to_end(dry_run):
    run, result, markdown, out = dry_run
    assert run.returncode == 0, run.stdout + run.stderr
    verdicts = json.loads((out / "check.json").read_text())  # python -m jssl.check first
    assert {v["name"] for v in verdicts} >= {"machine", "numerics", "speed", "input", "program"}
    assert not any(v["ok"] is False for v in verdicts), (out / "check.txt").read_text()
    assert result["meta"]["dry_run"] is True
    jssl = result["parts"]["jssl"]
    assert "error" not in jssl, jssl
    assert [row["name"] for row in result["workloads"]] == list(WORKLOADS)
    for name in WORKLOADS:
        r = jssl["workloads"][name]
        assert r["finite"] and math.isfinite(r["loss"]), (name, r)
        assert r["images_per_sec"] > 0 and r["flops_per_step"] > 0, (name, r)
        assert r["utilisation_vs_bf16_matmul"] > 0 and r["augment_seconds"] > 0
        assert r["dtype"] == "bfloat16"
    e2e = result["parts"]["e2e"]
    assert "error" not in e2e, e2e
    assert e2e["steps"] >= 2 and 0.0 <= e2e["knn_top1"] <= 1.0
    assert e2e["projected_recipe_hours"] > 0
    assert "DRY RUN" in markdown and "kNN top-1" in markdown
    for row in result["workloads"]:
        assert row["description"] in markdown


@pytest.mark.skipif(
    not HAS_TORCH,
    reason="PyTorch is not installed here (a benchmark-only dependency: the dry run records "
    "the PyTorch half as skipped); run this test in a venv with torch to cover it",
)
def test_dry_run_torch_reference(dry_run):
    _, result, markdown, _ = dry_run
    torch_part = result["parts"]["torch"]
    assert "error" not in torch_part and "skipped" not in torch_part, torch_part
    for row in result["workloads"]:
        r = row["torch"]
        assert r["images_per_sec"] > 0 and math.isfinite(r["loss"]), row
        assert r["flops_per_step"] > 0
        assert row["ratio"] > 0
        # The same network on both sides, at the tiny and at the real size.
        assert row["params_match"], (row["jssl"]["param_count"], r["param_count"])
        assert row["full_size_params_match"], (
            row["jssl"]["full_size_param_count"],
            r["full_size_param_count"],
        )


def test_dry_run_without_torch_says_so(dry_run):
    if HAS_TORCH:
        pytest.skip("PyTorch is installed: test_dry_run_torch_reference covers the torch half")
    _, result, markdown, _ = dry_run
    assert "not installed" in result["parts"]["torch"]["skipped"]
    assert "not installed" in markdown
