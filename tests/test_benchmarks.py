"""The benchmark scripts run (numbers are reported by them, never asserted here)."""

import json
import os

import pytest

from benchmarks import budget, throughput

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
