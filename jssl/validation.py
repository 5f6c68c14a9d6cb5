"""The resolved config checked whole, before any data or device work: the engine.

``validate(config, workdir)`` (the trainer calls it first) raises one
``ConfigError`` listing every problem it finds, joined with "; ", each naming
the field, its value and what would work:

- every base field's type and range (batch size, length, intervals, learning
  rates, eval settings; ``BASE_FIELDS``, ``OPTIONAL_FIELDS``), and the fields
  each method declares beside the code that reads them (``Method.fields``, with
  the checks of ``jssl.checks``): required when the method runs, checked
  wherever a config has them;
- every name that picks from a registry (method, model, optimiser, data
  source, evaluators, and enum-like strings such as ``data.on_bad_image``);
- the fields the method reads (a ``--config.method`` override on another
  method's config file) and the model's keyword arguments;
- combinations that cannot work: the generic ones here (a ViT patch larger
  than the crop, kNN k above the capped training set, a blurred crop of one
  pixel, a batch that does not split over the devices or processes) and the
  method's own (``Method.check``);
- the workdir (creatable, writable, not a file, not another method's run) and
  ``config.init_from``; in eval mode, that a checkpoint exists.

``config_problems(config)`` is the part that needs neither the file system nor
devices (fast enough to fuzz). ``check_data(config, dataset)`` runs once the
data is loaded: batch, kNN k, clusters against the number of examples, and the
method's ``Method.data_problems``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import ml_collections

from jssl.checks import (
    EPOCHS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MISSING,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    Check,
    boolean,
    get,
    integer,
    is_int,
    is_real,
    names,
    nonempty_string,
    one_of,
    problem_text,
    real,
    show,
    string,
)
from jssl.errors import UserError

STAGE_PREFIX = "stage:"
CONFIG_FILE = "config.json"
# jssl.optim.make_optimizer's names (tests/test_validation.py checks they agree).
OPTIMIZERS = ("sgd", "lars", "adamw", "dino_adamw")
DTYPES = ("float32", "bfloat16", "float16")
BAD_IMAGE_MODES = ("fail", "skip")
EVAL_SPLITS = ("test", "val")


class ConfigError(UserError):
    """The config (or the workdir it runs in) cannot work; the message lists every problem."""


# ----------------------------------------------------------------------------- the fields


@functools.cache
def _registries() -> dict[str, tuple[str, ...]]:
    """Registry names, imported on first use (the methods import JAX)."""
    from jssl.data import SOURCES
    from jssl.evaluation.evaluators import REPRESENTATIONS
    from jssl.methods import METHODS
    from jssl.models import MODELS

    return {
        "method": tuple(sorted(METHODS)),
        "model": tuple(sorted(MODELS)),
        "source": tuple(sorted(SOURCES)),
        "representation": tuple(REPRESENTATIONS),
    }


def _registry(key: str, what: str) -> Check:
    return lambda v: one_of(_registries()[key], what)(v)


# Every field the trainer and the experiment read, in any config.
BASE_FIELDS: dict[str, Check] = {
    "method": _registry("method", "method"),
    "seed": integer(0, MAX_SEED),
    "batch_size": integer(1),
    "num_epochs": real(0.0, MAX_STEPS),
    "num_steps": integer(0, MAX_STEPS),
    "log_every": integer(1),
    "checkpoint_every": integer(1),
    "keep_checkpoints": integer(1),
    "async_checkpoints": boolean,
    "allow_config_change": boolean,
    "max_nonfinite_steps": integer(0),
    "max_train_seconds": NON_NEGATIVE,
    "init_from.workdir": string,
    "init_from.params": names,
    "data.name": lambda v: None,  # checked in _check_data_source (the loader's message)
    "data.path": string,
    "data.tfds_name": string,
    "data.data_dir": string,
    "data.train_split": nonempty_string,
    "data.test_split": nonempty_string,
    "data.image_size": integer(0, MAX_SIDE),
    "data.cache_dir": string,
    "data.on_bad_image": one_of(BAD_IMAGE_MODES, "data.on_bad_image mode"),
    "model.name": _registry("model", "model"),
    "model.dtype": one_of(DTYPES, "dtype"),
    "model.kwargs": lambda v: (
        None if hasattr(v, "keys") else "must be a ConfigDict of the model's arguments"
    ),
    "optim.name": one_of(OPTIMIZERS, "optimiser"),
    "optim.learning_rate": POSITIVE,
    "optim.scale_lr_by_batch": boolean,
    "optim.warmup_epochs": EPOCHS,
    "optim.end_lr_factor": NON_NEGATIVE,
    "optim.weight_decay": NON_NEGATIVE,
    "optim.momentum": MOMENTUM,
    "optim.nesterov": boolean,
    "optim.b1": real(0.0, 1.0, hi_open=True),
    "optim.b2": real(0.0, 1.0, hi_open=True),
    "optim.grad_clip": NON_NEGATIVE,
    "eval.batch_size": integer(1),
    "eval.knn_k": integer(1),
    "eval.knn_temperature": POSITIVE,
    "eval.probe_epochs": integer(1, 10**5),
    "eval.untrained": boolean,
    "eval.max_train_examples": integer(0),
    "eval.representation": _registry("representation", "eval.representation"),
}

# Checked wherever the config has them, as are the evaluation's (``evaluators.FIELDS``) and
# every method's fields (``Method.fields``).
OPTIONAL_FIELDS: dict[str, Check] = {
    # loop and evaluation fields added after runs were saved (their defaults: what those did)
    "steps_in_flight": integer(0, 1000),
    "eval.at_deadline": boolean,
    "eval.cpu_max_train_examples": integer(0),
    # how streamed data is read (optional: runs saved before these fields reopen)
    "data.stream": boolean,
    "data.num_threads": integer(1, 1024),
    "data.prefetch": integer(1, 1024),
    "data.num_workers": integer(0, 1024),
    # a backbone from a PyTorch-layout file (optional: runs saved before these fields reopen)
    "init_from.weights": string,
    "init_from.prefix": string,
    "init_from.input_norm": lambda v: _input_norm_check()(v),
    # the validation split (optional: runs saved before these fields existed still reopen)
    "eval.split": one_of(EVAL_SPLITS, "eval.split"),
    "data.val_fraction": real(0.0, 1.0, hi_open=True),
    "data.val_seed": integer(0, MAX_SEED),
    "optim.weight_decay_end": NON_NEGATIVE,
}


@functools.cache
def _method_fields() -> dict[str, dict[str, Check]]:
    """Each registered method's declared fields (``Method.fields``; the methods import JAX)."""
    from jssl.methods import METHODS

    return {name: dict(m.fields) for name, m in METHODS.items()}


@functools.cache
def optional_fields() -> dict[str, Check]:
    """OPTIONAL_FIELDS, the evaluation's and every method's: checked wherever a config has them."""
    from jssl.evaluation.evaluators import FIELDS

    out = {**OPTIONAL_FIELDS, **FIELDS}
    for fields in _method_fields().values():
        out.update(fields)
    return out


def method_fields(method: str) -> tuple[str, ...]:
    """The fields method ``method`` reads beyond BASE_FIELDS (``Method.fields``)."""
    return tuple(_method_fields().get(method, {}))


# ----------------------------------------------------------------------------- helpers


def _fields_text(fields: Sequence[str], most: int = 6) -> str:
    """'a.x, a.y and 3 more' for a list of dotted names."""
    fields = list(fields)
    shown = ", ".join(fields[:most])
    return shown if len(fields) <= most else f"{shown} and {len(fields) - most} more"


# ----------------------------------------------------------------------------- config checks


def config_problems(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every problem of ``config`` that needs no file system, data or devices.

    ``prefix`` names where the config sits ("stages.pretext." for an embedded
    stage); the stages of ``config`` are checked too.
    """
    from jssl.data import checks as data_checks  # the data sources and models import JAX
    from jssl.models import checks as model_checks

    out: list[str] = []
    ok: dict[str, Any] = {}  # fields whose values passed their check
    missing: list[str] = []  # required fields the config does not have

    def check(field: str, checker: Check, required: bool) -> None:
        value = get(config, field)
        if value is MISSING:
            if required:
                missing.append(field)
            return
        try:
            problem = checker(value)
        except Exception as e:  # a check must never end in a traceback
            problem = f"cannot be checked ({type(e).__name__}: {e})"
        if problem is None:
            ok[field] = value
        else:
            out.append(problem_text(prefix + field, value, problem))

    for field, checker in BASE_FIELDS.items():
        check(field, checker, required=True)
    where = f"the {prefix[:-1]} config" if prefix else "the config"
    if missing:
        out.append(
            f"{where} lacks fields the trainer reads ({_fields_text(missing)}); start the config "
            "file from configs/common.base_config"
        )
        missing = []
    method = ok.get("method")
    needed = set(method_fields(method)) if method else set()
    for field, checker in optional_fields().items():
        check(field, checker, required=field in needed)
    if missing:
        out.append(
            f"{prefix}method={method!r}: the config lacks fields this method reads "
            f"({_fields_text(missing)}); use --config=configs/{method}.py"
        )
        missing = []
    if ok.get("optim.name") == "dino_adamw" and get(config, "optim.weight_decay_end") is MISSING:
        out.append(
            f"{prefix}optim.name='dino_adamw': reads optim.weight_decay_end, which {where} "
            "lacks; use another optimiser or configs/dino.py"
        )
    out += data_checks.source_problems(config, prefix)
    out += model_checks.model_problems(config, ok, prefix, _crops(config))
    out += _combination_problems(config, ok, method, prefix)
    out += _stage_problems(config, prefix)
    return list(dict.fromkeys(out))  # each problem once, in the order found


def _crops(config) -> list[tuple[str, object]]:
    """(field, size) of the crops the method's views make: the global crop, and the local
    ones where the method reads them."""
    crops = [("augment.crop_size", get(config, "augment.crop_size"))]
    reads_locals = "augment.local_crop_size" in _method_fields().get(get(config, "method"), {})
    local = get(config, "augment.num_local_crops")
    if reads_locals and is_int(local) and local > 0:
        crops.append(("augment.local_crop_size", get(config, "augment.local_crop_size")))
    return crops


def _combination_problems(config, ok: dict, method: str | None, prefix: str) -> list[str]:
    out = []
    if ok.get("num_steps") == 0 and "num_epochs" in ok and ok["num_epochs"] <= 0:
        out.append(
            f"{prefix}num_epochs={show(ok['num_epochs'])}: must be > 0 (or set "
            "--config.num_steps=N > 0)"
        )
    if ok.get("eval.split") == "val" and get(config, "data.val_fraction") in (0, MISSING):
        out.append(
            f"{prefix}eval.split='val': there is no validation split; set "
            "--config.data.val_fraction (e.g. 0.1) to carve one from the training set"
        )
    k, cap = ok.get("eval.knn_k"), ok.get("eval.max_train_examples")
    if k is not None and cap and k > cap:
        out.append(
            f"{prefix}eval.knn_k={k}: more neighbours than the {cap} training examples "
            f"eval.max_train_examples keeps; use at most {cap}"
        )
    out += _blur_problems(ok, prefix)
    if method is not None:
        from jssl.evaluation import EVALUATORS
        from jssl.methods import METHODS

        if METHODS[method].check is not None:
            from jssl.models.checks import vit_patch

            values = {**ok, "model.patch_size": vit_patch(config, ok)[1]}
            out += [prefix + problem for problem in METHODS[method].check(values)]
        unknown = [e for e in METHODS[method].evaluators if e not in EVALUATORS]
        if unknown:
            out.append(
                f"{prefix}method={method!r}: its evaluators {unknown} are not in "
                f"jssl.evaluation.EVALUATORS ({', '.join(sorted(EVALUATORS))})"
            )
    return out


def _blur_problems(ok: dict, prefix: str) -> list[str]:
    """A Gaussian blur (kernel of at least 3 taps, reflect padding) needs crops of 2+ px."""
    out = []
    local = ok.get("augment.num_local_crops", 1) > 0
    for crop, blur, on in (
        ("augment.crop_size", "augment.blur_p", lambda p: p > 0),
        ("augment.crop_size", "augment.global_blur_p", lambda p: max(p) > 0),
        ("augment.local_crop_size", "augment.local_blur_p", lambda p: local and p > 0),
    ):
        size, p = ok.get(crop), ok.get(blur)
        if size is not None and p is not None and size < 2 and on(p):
            out.append(
                f"{prefix}{crop}={size}: {blur}={show(p)} blurs the crops, which needs at least "
                f"2 px; raise --config.{crop} or set --config.{blur} to 0"
            )
    return out


def _stage_problems(config, prefix: str) -> list[str]:
    stages = get(config, "stages")
    out = []
    if stages is not MISSING and hasattr(stages, "keys"):
        for name in stages.keys():
            stage = stages[name]
            if isinstance(stage, ml_collections.ConfigDict):
                out += config_problems(stage, f"{prefix}stages.{name}.")
            else:
                out.append(problem_text(f"{prefix}stages.{name}", stage, "must be a config"))
    ref = get(config, "init_from.workdir")
    if isinstance(ref, str) and ref.startswith(STAGE_PREFIX):
        name = ref[len(STAGE_PREFIX) :]
        have = sorted(stages.keys()) if stages is not MISSING and hasattr(stages, "keys") else []
        if name not in have:
            out.append(
                f"{prefix}init_from.workdir={ref!r}: names no stage of this config (stages: "
                f"{', '.join(have) or 'none'}); give a run folder"
                + (f" or one of {', '.join(STAGE_PREFIX + s for s in have)}" if have else "")
            )
    return out


# ----------------------------------------------------------------------------- run checks


def _first_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _writable(folder: str) -> bool:
    """True when a file can be created in ``folder`` (a real probe: root ignores modes)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".jssl-write-test-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def _saved_method(workdir: str) -> tuple[str | None, str | None]:
    """(method of the run saved in workdir or None, a problem reading its config.json)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.lexists(path):
        return None, None
    try:
        with open(path) as f:
            saved = json.load(f)
        return (saved.get("method") if isinstance(saved, dict) else None), None
    except (OSError, ValueError) as e:
        return None, f"cannot read {path} ({type(e).__name__}: {e})"


def _complete_steps(workdir: str) -> list[int]:
    try:
        names_ = os.listdir(os.path.join(workdir, "checkpoints"))
    except OSError:
        return []
    return sorted(int(n) for n in names_ if n.isdigit())


def workdir_problems(workdir: str, method: str | None, *, mode: str = "train") -> list[str]:
    """The run folder: a folder (or creatable), writable, not a run of another method;
    in eval mode it must hold a checkpoint."""
    path = os.path.abspath(os.path.expanduser(workdir))
    shown = f"--workdir={workdir}"
    if os.path.lexists(path) and not os.path.isdir(path):
        return [f"{shown}: is a file, not a folder; give a folder (created if missing)"]
    if mode == "eval":
        if not os.path.isdir(path) or not _complete_steps(path):
            return [
                f"No checkpoint in {os.path.join(path, 'checkpoints')}: train first with "
                "--mode=train and this --workdir."
            ]
    out = []
    if not os.path.isdir(path):
        ancestor = _first_existing(os.path.dirname(path))
        if not os.path.isdir(ancestor):
            return [f"{shown}: cannot be created, {ancestor} is a file; give another folder"]
        if not _writable(ancestor):
            return [f"{shown}: cannot be created, {ancestor} is not writable; give another folder"]
        return []
    if mode == "train" and not _writable(path):
        out.append(f"{shown}: the folder is not writable; give a writable folder")
    saved, problem = _saved_method(path)
    if problem:
        out.append(f"{shown}: {problem}; use a new --workdir, or remove that file")
    elif saved is not None and method is not None and saved != method:
        out.append(
            f"{shown}: holds a {saved!r} run (its {CONFIG_FILE}), not a {method!r} one; use "
            "a new --workdir for this run"
        )
    return out


def _init_from_problems(config, prefix: str) -> list[str]:
    ref = get(config, "init_from.workdir")
    if not isinstance(ref, str) or not ref or ref.startswith(STAGE_PREFIX):
        return []
    path = os.path.abspath(os.path.expanduser(ref))
    field = f"{prefix}init_from.workdir={ref!r}"
    if not os.path.isdir(path):
        return [f"{field}: no such folder; give the workdir of a finished run"]
    if not os.path.exists(os.path.join(path, CONFIG_FILE)):
        return [
            f"{field}: holds no jssl run (no {CONFIG_FILE}); give the workdir of a run, e.g. "
            "one of python train.py --config=configs/simclr.py:digits --workdir=W"
        ]
    if not _complete_steps(path):
        return [f"{field}: has no checkpoint; train that run first"]
    return []


def _input_norm_check() -> Check:
    from jssl.models.convert import INPUT_NORM_CHOICES

    return one_of(INPUT_NORM_CHOICES, "init_from.input_norm")


def _weights(config) -> str:
    """config.init_from.weights, or "" without one."""
    weights = get(config, "init_from.weights")
    return weights if isinstance(weights, str) else ""


def _weights_problems(config, prefix: str) -> list[str]:
    weights = _weights(config)
    if not weights:
        return []
    from jssl.models.convert import FILE_SUFFIXES

    field = f"{prefix}init_from.weights={weights!r}"
    out = []
    ref = get(config, "init_from.workdir")
    if isinstance(ref, str) and ref:
        out.append(f"{field}: set either it or init_from.workdir={ref!r}, not both")
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        out.append(f"{field}: no such file; give a {' or '.join(FILE_SUFFIXES)} file")
    elif not path.lower().endswith(FILE_SUFFIXES):
        out.append(f"{field}: not a {' or '.join(FILE_SUFFIXES)} file")
    return out


def device_problems(
    config, device_count: int | None, process_count: int | None = None, prefix: str = ""
) -> list[str]:
    batch = get(config, "batch_size")
    if not is_int(batch) or batch < 1:
        return []  # reported by config_problems
    out = []
    if device_count and batch % device_count:
        near = max(device_count, batch // device_count * device_count)
        out.append(
            f"{prefix}batch_size={batch} is not divisible by the {device_count} devices; set "
            f"--config.batch_size to a multiple of {device_count} (e.g. {near})"
        )
    if process_count and process_count > 1 and batch % process_count:
        out.append(
            f"{prefix}batch_size={batch} is not divisible by the {process_count} processes; set "
            f"--config.batch_size to a multiple of {process_count}"
        )
    return out


def problems(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    mode: str = "train",
    device_count: int | None = None,
    process_count: int | None = None,
) -> list[str]:
    """Every problem of ``config`` run in ``workdir`` on ``device_count`` devices.

    ``workdir`` None skips the file-system checks, ``device_count`` None the
    device ones. The stage named by ``init_from.workdir="stage:NAME"`` is
    checked as a run in ``workdir/NAME``.
    """
    from jssl.data import checks as data_checks

    out = config_problems(config)
    out += data_checks.path_problems(config, "")
    out += _init_from_problems(config, "")
    out += _weights_problems(config, "")
    out += device_problems(config, device_count, process_count)
    method = get(config, "method")
    method = method if isinstance(method, str) else None
    if workdir is not None:
        # Evaluating a weights file needs no checkpoint: the workdir is checked as a new run's.
        wmode = "train" if mode == "eval" and _weights(config) else mode
        out += workdir_problems(workdir, method, mode=wmode)
    stages = get(config, "stages")
    if stages is not MISSING and hasattr(stages, "keys"):
        for name in stages.keys():
            stage = stages[name]
            if not isinstance(stage, ml_collections.ConfigDict):
                continue
            prefix = f"stages.{name}."
            out += data_checks.path_problems(stage, prefix)
            out += _init_from_problems(stage, prefix)
            out += _weights_problems(stage, prefix)
            out += device_problems(stage, device_count, process_count, prefix)
            ref = get(config, "init_from.workdir")
            if workdir is not None and mode == "train" and ref == STAGE_PREFIX + name:
                stage_method = get(stage, "method")
                out += [
                    f"the {name} stage's {p}"
                    for p in workdir_problems(
                        os.path.join(workdir, name),
                        stage_method if isinstance(stage_method, str) else None,
                    )
                ]
    return list(dict.fromkeys(out))  # a problem once, in the order found


def message(found: Sequence[str]) -> str:
    """All problems on one line."""
    return "; ".join(found) if len(found) == 1 else f"{len(found)} problems: " + "; ".join(found)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError listing every problem of ``config`` alone (no file system, no devices)."""
    found = config_problems(config)
    if found:
        raise ConfigError(message(found))


def validate(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    mode: str = "train",
    devices: Sequence[Any] | None = None,
) -> None:
    """Raises ConfigError listing every problem of ``config`` run in ``workdir`` on
    ``devices`` (default: all of JAX's devices)."""
    import jax

    device_count = len(devices) if devices is not None else jax.device_count()
    found = problems(
        config,
        workdir,
        mode=mode,
        device_count=device_count,
        process_count=jax.process_count(),
    )
    if found:
        raise ConfigError(message(found))


# ----------------------------------------------------------------------------- data checks


# SeLa's soft label table [heads, N, K] is method state: split by example over the
# devices when N is a multiple of their count, else replicated on every device.
def data_problems(config: ml_collections.ConfigDict, dataset) -> list[str]:
    """What cannot work with the loaded ``dataset``: the batch, kNN k, clusters and
    neighbours against its number of examples, the run length against int32 steps."""
    from jssl.methods import METHODS
    from jssl.methods.base import DataInfo

    n, n_test = len(dataset.train), len(dataset.test)
    name = dataset.name
    method = METHODS[config.method]
    out = []
    batch = config.batch_size
    steps = None  # the run's length, where the batch fits the data
    if batch > n:
        out.append(
            f"batch_size={batch} is larger than the {n} training examples of {name}; set "
            f"--config.batch_size to at most {n}."
        )
    else:
        spe = n // batch
        steps = config.num_steps or max(1, math.ceil(config.num_epochs * spe))
        if steps > MAX_STEPS:
            out.append(
                f"num_epochs={show(config.num_epochs)}: {steps} steps of batch {batch} on {n} "
                f"examples is more than the {MAX_STEPS} a run can count; use fewer epochs"
            )
        block = config.get(config.method)
        for key in block.keys() if hasattr(block, "keys") else ():
            value = block[key]
            if key.endswith("epochs") and is_real(value) and round(value * spe) > MAX_STEPS:
                out.append(
                    f"{config.method}.{key}={show(value)}: {round(value * spe)} steps at {spe} "
                    f"per epoch is more than the {MAX_STEPS} a run can count; use fewer"
                )
    if method.data_problems is not None:
        shape = dataset.train.image_shape
        info = DataInfo(name=name, num_examples=n, image_shape=shape, total_steps=steps)
        out += method.data_problems(config, info)
    if {"knn", "teacher_knn"} & set(method.evaluators):
        cap = config.eval.max_train_examples
        n_eval = min(n, cap) if cap else n
        if config.eval.knn_k > n_eval:
            out.append(
                f"eval.knn_k={config.eval.knn_k}: more neighbours than the {n_eval} training "
                f"examples of {name} the kNN evaluation uses; set --config.eval.knn_k to at most "
                f"{n_eval}"
            )
    if "kmeans" in method.evaluators and dataset.num_classes > n_test:
        out.append(
            f"data: the test split of {name} has {n_test} images, fewer than the "
            f"{dataset.num_classes} clusters k-means makes of it (one per class); use a test "
            "split with at least one image per class"
        )
    block = config.get(config.method)
    clusters = block.get("num_clusters") if block is not None else None
    if clusters is not None and clusters > n:
        out.append(
            f"{config.method}.num_clusters={clusters}: more clusters than the {n} training "
            f"examples of {name}; use at most {n}"
        )
    return out


def check_data(config: ml_collections.ConfigDict, dataset) -> None:
    """Raises ConfigError listing what cannot work with the loaded ``dataset``."""
    found = data_problems(config, dataset)
    if found:
        raise ConfigError(message(found))


# ----------------------------------------------------------------------------- saved runs


def validate_saved_run(workdir: str) -> ml_collections.ConfigDict:
    """The config of the run saved in ``workdir`` (its config.json), checked whole with the
    workdir's checkpoints and JAX's devices before anything is restored (the picture
    commands); raises ConfigError listing every problem."""
    import jax

    from jssl.experiment import saved_config

    path = os.path.abspath(os.path.expanduser(workdir))
    config_path = os.path.join(path, CONFIG_FILE)
    if os.path.isfile(config_path):
        try:
            with open(config_path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"cannot read {config_path} ({type(e).__name__}: {e}); give the workdir of a "
                "jssl run"
            ) from None
        if not isinstance(saved, dict):
            raise ConfigError(f"{config_path} holds no jssl config; give the workdir of a run")
    config = saved_config(path)  # UserError when there is no config.json
    found = [f"{config_path}: {p}" for p in config_problems(config)]
    found += device_problems(config, jax.device_count(), jax.process_count())
    method = get(config, "method")
    found += workdir_problems(workdir, method if isinstance(method, str) else None, mode="eval")
    if found:
        raise ConfigError(message(found))
    return config
