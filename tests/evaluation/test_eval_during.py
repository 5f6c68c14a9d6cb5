"""Evaluation during training (config.eval.every_steps): logged every N steps, the training
trajectory and the final evaluation unchanged, the history kept exactly across a resume."""

import glob
import json
import os
import re

import numpy as np
import pytest

from jssl import metrics_log, trainer
from jssl.validation import ConfigError, validate_config
from tests.helpers import leaves_equal, records, tiny_config

KIND = "eval_during"
RUN = {
    "num_steps": 6,
    "log_every": 2,
    "checkpoint_every": 2,
    "keep_checkpoints": 4,
    "eval.during_max_examples": 128,
}


def test_eval_during_leaves_training_bit_identical_and_survives_resume(tmp_path):
    plain = trainer.train_and_evaluate(
        tiny_config("simclr", **RUN), str(tmp_path / "plain"), show_progress=False
    )
    assert records(tmp_path / "plain", KIND) == []  # 0 = off, the default

    config = tiny_config("simclr", **RUN, **{"eval.every_steps": 2})
    workdir = str(tmp_path / "during")
    interrupted = trainer.train_and_evaluate(config, workdir, show_progress=False, stop_at_step=3)
    assert interrupted["eval"] is None
    assert [r["step"] for r in records(workdir, KIND)] == [2]
    resumed = trainer.train_and_evaluate(config, workdir, show_progress=False)

    # Same parameters, batch statistics, optimiser and method state, bit for bit.
    leaves_equal(plain["state"], resumed["state"])
    # The final evaluation is unchanged.
    for key, value in plain["eval"].items():
        if key != "eval_seconds":
            assert resumed["eval"][key] == value, key
    # The history: every multiple of 2 once, no point lost or repeated by the resume.
    during = records(workdir, KIND)
    assert [r["step"] for r in during] == [2, 4, 6]
    for r in during:
        assert set(r) == {"step", "kind", "knn_top1", "rankme"}
        assert 0.0 <= r["knn_top1"] <= 1.0
        assert 1.0 <= r["rankme"] <= 128  # the tiny ConvNet's feature width
    # A kNN on a trained network is above chance (10 classes) on the fixed subset.
    assert during[-1]["knn_top1"] > 0.2, during
    # TensorBoard got the same scalars.
    events = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    assert any(b"eval_during/knn_top1" in open(p, "rb").read() for p in events)


def test_eval_during_scores_a_fixed_subset(tmp_path):
    """The subsets are drawn once from the seed: the same state scores the same twice, and
    the subsets have at most during_max_examples examples."""
    config = tiny_config("simclr", **{"eval.during_max_examples": 64})
    exp = trainer.Experiment(config)
    state = exp.init_state()
    first = exp.evaluate_during(state)
    again = trainer.Experiment(config).evaluate_during(state)
    assert first == again
    assert len(exp._during.train) == len(exp._during.test) == 64
    assert not np.array_equal(exp._during.train.labels[:64], exp._during.test.labels[:64])


def test_rankme_during_training_warns_when_it_falls_under_a_quarter_of_its_first_value():
    """The label-free collapse monitor of every method: RankMe of the subset's test features,
    with a warning (shown by the trainer as a method's own) once it is under
    RANKME_WARN_FRACTION of the first value measured."""
    from jssl.evaluation import during, rankme
    from jssl.evaluation.predict import network_variables

    config = tiny_config("simclr", **{"eval.during_max_examples": 64})
    exp = trainer.Experiment(config)
    state = exp.init_state()
    first = exp.evaluate_during(state)
    features = exp._during.predict(network_variables(state), exp._during.test)
    np.testing.assert_allclose(first["rankme"], rankme(features), rtol=1e-5)
    assert exp.during_warnings(first) == []
    assert exp._during.first_rankme == first["rankme"]
    again = exp.evaluate_during(state)
    assert exp.during_warnings(again) == []
    exp._during.first_rankme = first["rankme"] / during.RANKME_WARN_FRACTION * 1.01
    (warning,) = exp.during_warnings(exp.evaluate_during(state))
    assert "fell under 0.25 of its first value" in warning


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eval.every_steps": -1}, "eval.every_steps=-1: must be an integer in [0, "),
        ({"eval.during_max_examples": 0}, "eval.during_max_examples=0: must be an integer >= 1"),
    ],
)
def test_bad_eval_during_fields_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(tiny_config("simclr", **overrides))


def test_a_kill_after_the_last_checkpoint_leaves_each_point_once(tmp_path, monkeypatch):
    """As kill -9 after step 4 was logged but before its checkpoint was complete: the resumed
    run starts from step 2, logs steps 3 and 4 again, and metrics.jsonl holds each once, with
    the values of the first time (resume is exact); its RankMe warnings are against the
    run's first value."""
    import shutil

    config = tiny_config("simclr", **{**RUN, "eval.every_steps": 1})
    workdir = tmp_path / "run"
    trainer.train_and_evaluate(config, str(workdir), show_progress=False, stop_at_step=4)
    before = {r["step"]: r["knn_top1"] for r in records(workdir, KIND)}
    assert sorted(before) == [1, 2, 3, 4]
    shutil.rmtree(workdir / "checkpoints" / "4")  # the save the kill interrupted
    # The resumed run's collapse warning compares RankMe with the run's first value, from
    # metrics.jsonl (not the first this process measures): made 1e6 here, it warns.
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if f'"kind": "{KIND}"' in line)
    lines[at] = json.dumps({**json.loads(lines[at]), "rankme": 1e6}) + "\n"
    path.write_text("".join(lines) + '{"step": 5, "kind": "tra')  # and a line cut short
    warned = []
    monkeypatch.setattr(trainer, "_warn", lambda bar, step, w: warned.extend(w))
    trainer.train_and_evaluate(config, str(workdir), show_progress=False)
    during = records(workdir, KIND)
    assert [r["step"] for r in during] == [1, 2, 3, 4, 5, 6]
    assert {r["step"]: r["knn_top1"] for r in during if r["step"] <= 4} == before
    assert [r["step"] for r in records(workdir)] == [2, 4, 6]
    assert len(warned) == 4 and all("first value (1000000.00)" in w for w in warned), warned
    assert metrics_log.first(str(workdir), KIND, "rankme") == 1e6
    assert metrics_log.first(str(workdir), KIND, "no_such_key") is None
    assert metrics_log.first(str(tmp_path / "nothing"), KIND, "rankme") is None
