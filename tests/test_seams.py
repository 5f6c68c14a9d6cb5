"""The seams between methods and the run: imports, the Method contract, the evaluation path,
the ImageSource interface and config.init_from."""

import ast
import dataclasses
import os
import pkgutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

import jssl
from configs import dino as dino_config
from configs import scan as scan_config
from configs import sela as sela_config
from configs import simclr as simclr_config
from jssl import data, evaluation, trainer
from jssl.experiment import Experiment
from jssl.methods import METHODS, Method
from tests.helpers import set_fields

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"augment.crop_size": 8, "model.kwargs.widths": (8,), "eval.probe_epochs": 2}


def _modules():
    return sorted(
        m.name for m in pkgutil.walk_packages(jssl.__path__, "jssl.") if "__main__" not in m.name
    )


@pytest.mark.slow
def test_every_module_imports_alone():
    """Each module of jssl imports in a fresh interpreter (an import circle fails here)."""
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [k for k in sys.modules if k == 'jssl' or k.startswith('jssl.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code, *_modules()],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)


def test_no_method_imports_the_trainer_or_the_experiment():
    folder = os.path.join(ROOT, "jssl", "methods")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            bad = {
                m
                for m in _imports(os.path.join(folder, name))
                if m in ("jssl.trainer", "jssl.experiment", "jssl.visualize")
            }
            assert not bad, (name, bad)


# The modules under jssl/methods that every method may import: the contract and the
# shared parts. Any other method module is a method, which no method imports.
SHARED_METHOD_MODULES = {"jssl.methods.base", "jssl.methods.parts"}


def test_no_method_module_imports_another():
    folder = os.path.join(ROOT, "jssl", "methods")
    methods = {f"jssl.methods.{n[:-3]}" for n in os.listdir(folder) if n.endswith(".py")}
    methods -= SHARED_METHOD_MODULES | {"jssl.methods.__init__"}
    assert {"jssl.methods.simclr", "jssl.methods.mocov2", "jssl.methods.dino"} <= methods
    for module in sorted(methods | SHARED_METHOD_MODULES):
        path = os.path.join(folder, module.rsplit(".", 1)[1] + ".py")
        imported = set(_imports(path))
        assert not imported & (methods - {module}), (module, imported & methods)


def test_the_method_contract_is_small():
    fields = [f.name for f in dataclasses.fields(Method)]
    # The name, five functions of the step (model, views, loss, initial state, after the
    # update), the split of data-sized state over the mesh, three host hooks (prepare,
    # adapt_init, collapse_warnings), the evaluators' names, the config (its fields, their
    # combinations, the data they need), its pictures, the EMA network's entry and the renamed
    # variables.
    assert len(fields) <= 17, fields
    # Every hook is documented in the record's docstring.
    for name in fields[1:]:
        assert name in Method.__doc__, name
    for method in METHODS.values():
        assert set(method.evaluators) <= set(evaluation.EVALUATORS), method.name


# ----------------------------------------------------------------------------- data


def test_split_is_an_image_source_and_subsets_compose():
    ds = data.load_digits()
    train = ds.train
    assert isinstance(train, data.ImageSource) and train.image_shape == (8, 8, 1)
    idx = np.array([5, 3, 5, 0])
    np.testing.assert_array_equal(train.get(idx), np.stack([train.get([i])[0] for i in idx]))
    sub = data.take_subset(train, 100, seed=3)
    assert isinstance(sub, data.ImageSource) and len(sub) == 100
    keep = np.sort(np.random.default_rng(3).permutation(len(train))[:100])
    np.testing.assert_array_equal(sub.labels, train.labels[keep])
    np.testing.assert_array_equal(sub.get([0, 99]), train.get(keep[[0, 99]]))
    assert data.take_subset(train, 0, seed=3) is train
    assert data.take_subset(train, len(train), seed=3) is train


class CountingSource:
    """An ImageSource that is not a Split: it counts the images read through ``get``."""

    def __init__(self, split):
        self.split, self.read = split, 0

    def __len__(self):
        return len(self.split)

    @property
    def labels(self):
        return self.split.labels

    @property
    def image_shape(self):
        return self.split.image_shape

    def get(self, indices):
        self.read += len(indices)
        return self.split.get(indices)


def _small_dataset(n_train=64, n_test=5, *, counting=False):
    """Digits with ``n_test`` test images: fewer than the 8 fake devices when n_test < 8."""
    ds = data.load_digits()
    train = data.Split(ds.train.get(np.arange(n_train)), ds.train.labels[:n_train])
    test = data.Split(ds.test.get(np.arange(n_test)), ds.test.labels[:n_test])
    if counting:
        train, test = CountingSource(train), CountingSource(test)
    return dataclasses.replace(ds, train=train, test=test)


def test_predict_pads_for_more_devices_than_images_and_compiles_once():
    config = set_fields(simclr_config.get_config("digits,smoke"), **TINY)
    exp = Experiment(config, dataset=_small_dataset(counting=True))
    assert exp.mesh.devices.size == 8
    state = exp.init_state()
    variables = evaluation.model_variables(state.params, state.batch_stats)
    test = exp.dataset.test
    got = exp.predict(variables, test)
    assert got.shape[0] == 5 and got.dtype == np.float32
    # The same features one image at a time (each call padded to the 8 devices).
    for i in range(5):
        one = exp.predict(variables, test, indices=np.array([i]))
        np.testing.assert_allclose(one[0], got[i], rtol=1e-5, atol=1e-6)
    # Batches of one shape: one traced function per selector, reused across calls.
    assert len(exp.predict._compiled) == 1
    exp.predict(variables, exp.train)
    assert len(exp.predict._compiled) == 1


@pytest.mark.parametrize("name", ["sela", "scan", "dino"])
def test_method_evaluations_with_more_devices_than_test_images(name, monkeypatch):
    # The method's own evaluators and kNN (k-means needs at least as many images as classes).
    own = {"sela": ("cluster_heads",), "scan": ("cluster_heads",), "dino": ("teacher_knn",)}
    method = dataclasses.replace(METHODS[name], evaluators=("knn", *own[name]))
    monkeypatch.setitem(METHODS, name, method)
    get_config = {"sela": sela_config, "scan": scan_config, "dino": dino_config}[name].get_config
    config = get_config("digits,smoke")
    if name == "dino":  # the smoke ViT as a tiny ConvNet
        config.model.name = "convnet"
        config.model.kwargs = ml_collections.ConfigDict()
        config.augment.local_crop_size = 8
    config = set_fields(config, **TINY)
    config.batch_size = 16
    exp = Experiment(config, dataset=_small_dataset())
    results = exp.evaluate(exp.init_state())
    want = {"sela": "head_acc", "scan": "head_acc", "dino": "teacher_knn_top1"}[name]
    assert want in results and 0.0 <= results[want].value <= 1.0
    assert results[want].label is not None
    for metric in results.values():
        assert np.isfinite(metric.value)


def test_training_reads_data_only_through_the_image_source(tmp_path):
    config = set_fields(simclr_config.get_config("digits,smoke"), **TINY)
    config.batch_size, config.eval.untrained = 16, False
    dataset = _small_dataset(n_train=64, n_test=16, counting=True)
    exp = Experiment(config, dataset=dataset)
    state = exp.init_state()
    for step in range(2):
        state, _ = exp.train_step(state, exp.global_batch(step))
    assert dataset.train.read == 2 * 16
    exp.evaluate(state)
    assert dataset.test.read == 16


def test_evaluation_names_each_phase_as_it_starts():
    """Experiment.evaluate(progress=...) hears of every phase before it runs and of its
    progress (the trainer shows them on one line): each split's features once, batch by
    batch, then each evaluator, the linear probe epoch by epoch."""
    config = set_fields(simclr_config.get_config("digits,smoke"), **TINY)
    config.batch_size = 16
    config.eval.batch_size = 32
    exp = Experiment(config, dataset=_small_dataset(n_train=64, n_test=16))
    phases = []
    exp.evaluate(exp.init_state(), progress=phases.append)
    assert phases == [
        "knn",
        "student's features: 0 of 64 train images",
        "student's features: 32 of 64 train images",
        "student's features: 64 of 64 train images",
        "student's features: 0 of 16 test images",
        "student's features: 16 of 16 test images",
        "linear_probe",
        "linear probe: epoch 1 of 2",
        "linear probe: epoch 2 of 2",
        "kmeans",
    ]


def test_on_the_cpu_the_evaluators_fit_on_a_capped_subset_and_say_so():
    """eval.cpu_max_train_examples caps the evaluators' training images on the CPU backend
    when eval.max_train_examples is 0; the count is in the results and the note names it."""
    config = set_fields(simclr_config.get_config("digits,smoke"), **TINY)
    config.eval.max_train_examples = 0
    config.eval.cpu_max_train_examples = 40
    exp = Experiment(config, dataset=_small_dataset(n_train=64, n_test=16))
    state = exp.init_state()
    assert exp.eval_train_cap() == 40  # the test devices are CPUs
    assert exp.evaluate(state)["eval_train_examples"].value == 40
    config.eval.max_train_examples = 24  # an explicit cap wins, on any backend
    assert exp.evaluate(state)["eval_train_examples"].value == 24
    assert "eval.max_train_examples; --config.eval.max_train_examples=0 fits" in (
        trainer.subset_note(24, 64, config)
    )
    config.eval.max_train_examples = 0
    note = trainer.subset_note(40, 64, config)
    assert note.startswith("(kNN and linear probe fitted on 40 of the 64 training images")
    assert "--config.eval.cpu_max_train_examples=0 fits on all of them" in note
    config.eval.cpu_max_train_examples = 0  # the full protocol
    assert exp.evaluate(state)["eval_train_examples"].value == 64


def test_a_shown_phase_draws_its_count_and_clears_its_line(capsys):
    from jssl import progress

    with progress.shown("SCAN: 20 nearest neighbours of each image") as report:
        report(0, 1000)
        report(400, 1000)
        report(1000, 1000)
    out = capsys.readouterr().out
    assert "SCAN: 20 nearest neighbours of each image" in out
    assert "400/1000" in out and "1000/1000" in out
    assert out.endswith("\r")  # the line is cleared (leave=False), no new line left behind
    with progress.silent("anything") as report:
        report(1, 2)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------- init_from


def test_init_from_takes_the_named_subtrees_of_another_run(tmp_path):
    source_dir = str(tmp_path / "source")
    config = set_fields(simclr_config.get_config("digits,smoke"), **TINY)
    config.eval.untrained = False
    source = trainer.train_and_evaluate(config, source_dir, show_progress=False)["state"]

    target = set_fields(simclr_config.get_config("digits,smoke"), **TINY)
    target.seed = 1  # another initialisation, so taking the backbone is visible
    target.init_from.workdir = source_dir
    exp, init_run = trainer.open_run(target, str(tmp_path / "target"))
    state = exp.init_state(init_run)
    fresh = exp.init_state()
    backbones = (state.params["backbone"], source.params["backbone"])
    for a, b in zip(*map(jax.tree.leaves, backbones), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The head is this run's own initialisation, not the source's.
    heads = (state.params["head"], fresh.params["head"])
    for a, b in zip(*map(jax.tree.leaves, heads), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    target.init_from.params = ("nothing",)
    with pytest.raises(Exception, match="init_from.params"):
        trainer.open_run(target, str(tmp_path / "other"))[0].init_state(init_run)
    target.init_from.workdir = str(tmp_path / "missing")
    with pytest.raises(Exception, match="no config.json"):
        trainer.open_run(target, str(tmp_path / "other"))
