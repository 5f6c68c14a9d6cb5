"""The generic train step and trainer: sharding equivalence, exact resume, train.py end to end."""

import dataclasses
import json
import math
import os

import chex
import jax
import numpy as np
import pytest

from jssl import resume, trainer
from jssl.methods import METHODS
from tests.helpers import assert_fell, leaves_equal, records, tiny_config

# The README's smoke command, eight steps long at a higher learning rate: NT-Xent over 32
# pairs moves by about 0.1 from batch to batch, so four steps show no clear fall.
SMOKE = ("--config=configs/simclr.py:digits,smoke",)
LEARNS = (
    "--config.num_steps=8",
    "--config.log_every=4",
    "--config.checkpoint_every=4",
    "--config.optim.learning_rate=0.05",
)
TRAIN_PY_RUNS = {"simclr": (*SMOKE, *LEARNS)}


# SimCLR on 1, 2, 4 and 8 devices, every leaf of the state after a step: tests/test_check.py.


def test_step_compiles_once_and_is_deterministic(monkeypatch):
    # make_views runs once per trace of the step: at most one trace, no recompilation.
    simclr = METHODS["simclr"]
    traced = dataclasses.replace(simclr, make_views=chex.assert_max_traces(simclr.make_views, n=1))
    monkeypatch.setitem(METHODS, "simclr", traced)
    config = tiny_config("simclr")
    exp = trainer.Experiment(config)
    state = exp.init_state()
    losses = []
    for step in range(3):
        state, metrics = exp.train_step(state, exp.global_batch(step))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 3
    assert all(np.isfinite(losses))
    for key in ("loss", "grad_norm", "param_norm", "learning_rate", "z_std", "h_std"):
        assert key in metrics
    # Same seed and step -> same batch and same update.
    again = exp.init_state()
    again, m0 = exp.train_step(again, exp.global_batch(0))
    assert float(m0["loss"]) == losses[0]


def test_bfloat16_compute_trains_float32_master_weights_and_losses():
    """The accelerator path: bf16 activations, float32 parameters, optimiser state and loss."""
    config = tiny_config("simclr", **{"model.dtype": "bfloat16"})
    exp = trainer.Experiment(config)
    state = exp.init_state()
    before = jax.device_get(state.params)
    for step in range(2):
        state, metrics = exp.train_step(state, exp.global_batch(step))
    assert metrics["loss"].dtype == np.float32 and np.isfinite(float(metrics["loss"]))
    for tree in (state.params, state.opt_state):
        for leaf in jax.tree.leaves(tree):
            if jax.numpy.issubdtype(leaf.dtype, jax.numpy.floating):
                assert leaf.dtype == np.float32, leaf.dtype
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), before, state.params)
    assert max(jax.tree.leaves(moved)) > 0  # the float32 master weights took the updates


def test_non_finite_update_from_finite_gradients_is_not_applied():
    config = tiny_config(
        "simclr", **{"optim.learning_rate": float("inf"), "model.kwargs.widths": (8,)}
    )
    exp = trainer.Experiment(config)
    state = exp.init_state()
    before = jax.device_get(state.params)
    state, metrics = exp.train_step(state, exp.global_batch(0))
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert int(state.nonfinite_steps) == 1 and float(metrics["finite"]) == 0.0
    leaves_equal(before, state.params)


def test_exact_resume(tmp_path):
    straight = trainer.train_and_evaluate(
        tiny_config("simclr", num_steps=4), str(tmp_path / "a"), show_progress=False
    )["state"]
    interrupted = trainer.train_and_evaluate(
        tiny_config("simclr", num_steps=4), str(tmp_path / "b"), show_progress=False, stop_at_step=2
    )
    assert int(interrupted["state"].step) == 2 and interrupted["eval"] is None
    resumed = trainer.train_and_evaluate(
        tiny_config("simclr", num_steps=4), str(tmp_path / "b"), show_progress=False
    )["state"]
    assert int(resumed.step) == int(straight.step) == 4
    leaves_equal(
        (straight.params, straight.opt_state, straight.batch_stats, straight.rng),
        (resumed.params, resumed.opt_state, resumed.batch_stats, resumed.rng),
    )


def test_resume_refuses_changed_config(tmp_path):
    # 2 of the 4 steps: the step the other 4-step runs here compiled is reused.
    trainer.train_and_evaluate(
        tiny_config("simclr"), str(tmp_path), show_progress=False, stop_at_step=2
    )
    with pytest.raises(trainer.ConfigMismatchError, match="simclr.temperature"):
        trainer.train_and_evaluate(
            tiny_config("simclr", num_steps=4, **{"simclr.temperature": 0.2}),
            str(tmp_path),
            show_progress=False,
        )
    # Evaluating the run under another config: the fix is the run's own --config.
    argv = ["train.py", "--config=configs/simclr.py:digits,smoke"]
    (tmp_path / "run_info.json").write_text(json.dumps({"sessions": [{"argv": argv}]}))
    with pytest.raises(
        trainer.ConfigMismatchError,
        match=r"Evaluate it with the config it was trained with "
        r"\(--config=configs/simclr.py:digits,smoke\)",
    ):
        changed = tiny_config("simclr", **{"simclr.temperature": 0.2})
        trainer.evaluate_checkpoint(changed, str(tmp_path))


def test_runs_saved_before_a_field_existed_resume_while_it_keeps_their_value():
    """A config.json written before data.val_fraction, init_from and DINO's KoLeo/iBOT
    fields existed: no difference while those keep the values that did what the run
    did; a difference once one of them changes how the run trains."""
    added = [*resume.ADDED_FIELDS, "dino.ibot_out_dim", "dino.ibot_mask_ratio"]

    def saved_before(config):
        saved = json.loads(config.to_json_best_effort())
        for key in added:
            *path, last = key.split(".")
            node = saved
            for p in path:
                node = node.get(p, {})
            node.pop(last, None)
        return saved

    for method in ("simclr", "dino"):
        config = tiny_config(method)
        assert resume.config_differences(saved_before(config), config) == []
    simclr = tiny_config("simclr")
    carved = tiny_config("simclr", **{"data.val_fraction": 0.1})
    assert resume.config_differences(saved_before(simclr), carved) == [
        "data.val_fraction: saved '<missing>', now 0.1"
    ]
    dino = tiny_config("dino")
    ibot = tiny_config("dino", **{"dino.ibot_weight": 1.0})
    diffs = resume.config_differences(saved_before(dino), ibot)
    assert "dino.ibot_weight: saved '<missing>', now 1.0" in diffs
    assert any(d.startswith("dino.ibot_out_dim:") for d in diffs)


def test_a_run_saved_with_another_conv_impl_resumes():
    """conv_impl changes how a ResNet's convolutions are computed, not its parameters: a run
    saved under the earlier default ("xla") resumes under "auto"; another width does not."""
    from benchmarks.throughput import load_config

    config = load_config("configs/simclr.py:cifar10_folder,cpu")
    saved = json.loads(config.to_json_best_effort())
    assert config.model.kwargs.conv_impl == "auto"
    saved["model"]["kwargs"]["conv_impl"] = "xla"
    assert resume.config_differences(saved, config) == []
    saved["model"]["kwargs"]["width"] = 32
    assert resume.config_differences(saved, config) == ["model.kwargs.width: saved 32, now 16"]


def test_train_py_smoke_and_eval_mode(train_py_runs, train_py):
    run = train_py_runs["simclr"]
    workdir = run.workdir
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        "kNN top-1" in run.stdout and "clustering ACC" in run.stdout and "untrained" in run.stdout
    )
    assert f"workdir: {workdir}" in run.stdout
    for name in ("config.json", "metrics.jsonl", "eval_8.json", "eval_untrained.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "8"]
    train = records(workdir)
    assert [r["step"] for r in train] == [4, 8]
    assert all(np.isfinite(r["loss"]) and r["images_per_sec"] > 0 for r in train)
    # lr 1e-9: the loss goes from 4.03 to 4.02; here from 3.96 to 3.60.
    assert_fell(train, "loss", by=0.15)
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["method"] == "simclr" and saved["num_steps"] == 8

    os.remove(os.path.join(workdir, "eval_8.json"))
    proc = train_py(*SMOKE, *LEARNS, f"--workdir={workdir}", "--mode=eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(os.path.join(workdir, "eval_8.json")))
    assert set(result) >= {"knn_top1", "linear_top1", "cluster_acc", "nmi", "ari"}
    # Without --config, --mode=eval evaluates the run under its own config.json (the
    # default config, digits without the smoke settings, would be refused as another one).
    os.remove(os.path.join(workdir, "eval_8.json"))
    proc = train_py(f"--workdir={workdir}", "--mode=eval")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "config: the run's config.json" in proc.stdout
    again = json.load(open(os.path.join(workdir, "eval_8.json")))
    assert {k: v for k, v in again.items() if k != "eval_seconds"} == {
        k: v for k, v in result.items() if k != "eval_seconds"
    }


def _image_folder(root, corrupt=False, empty_test=False):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            os.makedirs(root / split / cls, exist_ok=True)
            if split == "test" and empty_test:
                continue
            for i in range(4):
                arr = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / cls / f"{i}.jpg")
    if corrupt:
        (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")


@pytest.mark.parametrize("kind, expected", [("corrupt", "broken.jpg"), ("empty_test", "test")])
def test_bad_image_folder_fails_cleanly(tmp_path, kind, expected):
    from jssl import data

    root = tmp_path / "images"
    _image_folder(root, corrupt=kind == "corrupt", empty_test=kind == "empty_test")
    config = tiny_config(
        "simclr", **{"data.name": "image_folder", "data.path": str(root), "batch_size": 8}
    )
    config.data.cache_dir = str(tmp_path / "cache")
    workdir = tmp_path / "run"
    with pytest.raises(data.DataError, match=expected):
        trainer.train_and_evaluate(config, str(workdir), show_progress=False)
    assert not os.path.exists(workdir / "checkpoints")


def test_summary_table_without_the_untrained_network_has_no_untrained_columns():
    from jssl.evaluation import Metric
    from jssl.trainer import summary_table

    trained = {"knn_top1": Metric(0.9, "kNN top-1"), "count": Metric(3.0, None)}
    with_untrained = summary_table(trained, {"knn_top1": 0.5}, 10).splitlines()
    assert with_untrained[1].split() == ["metric", "untrained", "step", "10", "change"]
    assert with_untrained[3].split() == ["kNN", "top-1", "0.5000", "0.9000", "+0.4000"]
    alone = summary_table(trained, None, 10)
    assert "untrained" not in alone and "nan" not in alone
    assert (
        alone.splitlines()[3].split() == ["kNN", "top-1", "0.9000"] and len(alone.splitlines()) == 5
    )


def test_a_run_that_ends_inside_its_warmup_is_named():
    from jssl import optim

    config = tiny_config("simclr", **{"optim.warmup_epochs": 2.0})
    assert optim.warmup_steps(config, 100, 44) == 88
    assert optim.warmup_warning(config, 100, 44) is None
    assert optim.warmup_steps(config, 50, 44) == 49  # the schedule's warm-up, clamped
    warning = optim.warmup_warning(config, 50, 44)
    assert "50 steps end inside its 88-step warm-up" in warning
    assert "--config.optim.warmup_epochs" in warning


def test_the_deadline_counts_the_queued_steps():
    # 63 s steps (ResNet-18 on 2 cores), 2 queued at t = 196 s: they end at 322 s, past a
    # 251 s deadline, so the run stops after them instead of dispatching more.
    assert trainer.past_deadline(196.0, 251.0, 2, 63.0)
    assert not trainer.past_deadline(100.0, 251.0, 2, 63.0)  # they end at 226 s
    assert trainer.past_deadline(252.0, 251.0, 2, 0.0)  # no step time measured yet
    assert not trainer.past_deadline(1e9, math.inf, 2, 63.0)  # no deadline


def test_a_cpu_run_that_would_take_days_is_named_with_the_cpu_variant(
    monkeypatch, capsys, tmp_path
):
    slow = trainer.slow_run_warning(31.2, 97_000, "cpu")
    assert "a step takes 31.2 s on this CPU, so the 97,000 steps left would take 35.0 days" in slow
    assert "configs/simclr.py:cifar10_folder,cpu" in slow
    assert "13 hours" in trainer.slow_run_warning(1.0, 13 * 3600, "cpu")
    assert trainer.slow_run_warning(1.0, 11 * 3600, "cpu") is None  # under 12 hours
    assert trainer.slow_run_warning(31.2, 97_000, "gpu") is None
    # In a run: measured on finished steps 2-3, said once, on the progress bar's stream.
    monkeypatch.setattr(trainer, "SLOW_RUN_HOURS", 0.0)
    config = tiny_config("simclr", num_steps=9, checkpoint_every=100, log_every=100)
    trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
    out = capsys.readouterr().out
    assert out.count("warning: a step takes ") == 1
    assert "so the 6 steps left would take 0 hours" in out, out


@pytest.mark.parametrize(
    "name", sorted(f[:-3] for f in os.listdir("configs") if f[0] != "_" and f != "common.py")
)
def test_the_cpu_variant_of_every_method_validates(name):
    from benchmarks.throughput import load_config
    from jssl import validation

    config = load_config(f"configs/{name}.py:cifar10_folder,cpu")
    problems = validation.config_problems(config)  # but data.path, left to the user
    assert [p for p in problems if "data.path=''" not in p] == []
    assert (config.num_epochs, config.eval.max_train_examples) == (4.0, 10_000)
    kwargs = config.model.kwargs
    assert kwargs.get("width") == 16 or kwargs.get("hidden") == 192, kwargs
    with pytest.raises(ValueError, match="cpu modifier sizes the cifar10 and cifar10_folder"):
        load_config(f"configs/{name}.py:digits,cpu")
