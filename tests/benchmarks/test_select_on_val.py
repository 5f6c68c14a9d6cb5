"""benchmarks/select_on_val.py: a hyperparameter chosen on the validation split over seeds,
then scored once on the test split (a tiny SCAN sweep of the neighbour count)."""

import json
import pathlib
import sys

import pytest

from benchmarks import select_on_val
from tests.helpers import tiny_flags

FLAGS = [*tiny_flags(), "--config.eval.untrained=False"]
SWEEP = ["--config=configs/scan.py:digits,smoke", "--values=2,3", "--seeds=0"]
SWEEP += ["--pretext=configs/simclr.py:digits,smoke", "--test"]
SWEEP += [f"--set={f}" for f in FLAGS] + [f"--pretext_set={f}" for f in FLAGS]
# The sweep (five train.py runs) goes on in the background from the start of the session.
BACKGROUND_COMMANDS = {
    "sweep": [sys.executable, "benchmarks/select_on_val.py", "--root={folder}", *SWEEP]
}


def test_choice_and_table():
    by_value = {
        "5": select_on_val.summary({0: 0.5, 1: 0.7}),
        "20": select_on_val.summary({0: 0.8, 1: 0.6}),
    }
    assert by_value["5"]["mean"] == 0.6 and abs(by_value["5"]["std"] - 0.1414) < 1e-3
    assert select_on_val.choose(by_value) == "20"
    text = select_on_val.table("scan.num_neighbors", "head_acc", by_value, "20")
    assert "| 20 (chosen) | 0.700 ± 0.141 | 0.800, 0.600 |" in text


@pytest.mark.slow  # five train.py runs
def test_tiny_scan_sweep_on_the_validation_split(train_py_runs, capsys):
    run = train_py_runs["sweep"]
    assert run.returncode == 0, run.stderr[-3000:]
    root = pathlib.Path(run.workdir)
    with open(root / "selection.json") as f:
        out = json.load(f)
    assert set(out["validation"]) == {"2", "3"} and out["chosen"] in ("2", "3")
    for value in ("2", "3"):  # scored on the carved validation split
        workdir = root / "val" / f"scan.num_neighbors={value}_seed0"
        with open(workdir / "config.json") as f:
            config = json.load(f)
        assert config["eval"]["split"] == "val" and config["data"]["val_fraction"] == 0.1
        assert config["scan"]["num_neighbors"] == int(value)
        assert config["init_from"]["workdir"] == str(root / "val" / "pretext_seed0")
        score = out["validation"][value]["seeds"]["0"]
        assert 0.0 <= score <= 1.0
    test_run = root / "test" / f"scan.num_neighbors={out['chosen']}_seed0"
    with open(test_run / "config.json") as f:
        config = json.load(f)
    assert config["eval"]["split"] == "test" and config["data"]["val_fraction"] == 0.0
    assert f"scan.num_neighbors={out['chosen']} (chosen on validation)" in run.stdout
    # A second call reads the finished runs instead of training again.
    assert select_on_val.main([f"--root={root}", *SWEEP]) == out
    assert "scan.num_neighbors" in capsys.readouterr().out
