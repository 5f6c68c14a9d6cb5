"""The benchmark scripts run (numbers are reported by them, never asserted here)."""

import json
import os

import pytest

from benchmarks import budget, compare_pytorch, throughput

ARCHIVE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "datasets", "cifar10-jpeg.tar.gz"
)


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
            f"--out={out}",
            f"--workdir={tmp_path / 'run'}",
        ]
    )
    assert result["steps"] >= 1
    assert 0.40 < result["raw_pixel_knn_top1"] < 0.50  # 45.8% on this copy
    assert 0.1 < result["knn_top1"] <= 1.0
    assert json.loads(out.read_text())["method"] == "simclr"


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
    assert "torch" not in result and json.loads(out.read_text())["batch_size"] == 8


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
