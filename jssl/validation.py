"""The resolved config checked whole, before any data or device work.

``validate(config, workdir)`` (the trainer calls it first) raises one
``ConfigError`` listing every problem it finds, joined with "; ", each naming
the field, its value and what would work:

- every numeric field's type and range (batch size, length, intervals, image
  and crop sizes, learning rates, temperatures, momenta in [0, 1], eval
  settings, and the method blocks: ``dino.*``, ``sela.*``, ``scan.*``, ...);
- every name that picks from a registry (method, model, optimiser, data
  source, evaluators, and enum-like strings such as ``data.on_bad_image``);
- the fields the method reads (a ``--config.method`` override on another
  method's config file) and the model's keyword arguments;
- combinations that cannot work (a jigsaw tile larger than its cell, context
  patches that do not fit, a ViT patch larger than the crop, kNN k above the
  capped training set, a batch that does not split over the devices or
  processes);
- the workdir (creatable, writable, not a file, not another method's run) and
  ``config.init_from``; in eval mode, that a checkpoint exists.

``config_problems(config)`` is the part that needs neither the file system nor
devices (fast enough to fuzz). ``check_data(config, dataset)`` runs once the
data is loaded: batch, kNN k, clusters and neighbours against the number of
examples.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
from collections.abc import Sequence
from typing import Any

import ml_collections

from jssl.checks import (  # noqa: F401  (the checks are part of this module's API)
    EPOCHS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MAX_WIDTH,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    PROBABILITY,
    SIZE,
    WIDTH,
    Check,
    boolean,
    integer,
    is_int,
    is_real,
    names,
    nonempty_string,
    numbers,
    one_of,
    pair,
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
    from jssl.models.conv import CONV_IMPLS

    return {
        "method": tuple(sorted(METHODS)),
        "model": tuple(sorted(MODELS)),
        "source": tuple(sorted(SOURCES)),
        "representation": tuple(REPRESENTATIONS),
        "conv_impl": tuple(CONV_IMPLS),
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

# Checked wherever the config has them, as is every method's fields (``Method.fields``).
OPTIONAL_FIELDS: dict[str, Check] = {
    # how streamed data is read (optional: runs saved before these fields reopen)
    "data.stream": boolean,
    "data.num_threads": integer(1, 1024),
    "data.prefetch": integer(1, 1024),
    "data.num_workers": integer(0, 1024),
    # a backbone from a PyTorch-layout file (optional: runs saved before these fields reopen)
    "init_from.weights": string,
    "init_from.prefix": string,
    "init_from.input_norm": lambda v: _input_norm_check()(v),
    # evaluation during training and the validation split (optional: runs saved before
    # these fields existed still reopen)
    "eval.every_steps": integer(0, MAX_STEPS),
    "eval.during_max_examples": integer(1),
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


def optional_fields() -> dict[str, Check]:
    """OPTIONAL_FIELDS and every method's fields: each is checked wherever a config has it."""
    out = dict(OPTIONAL_FIELDS)
    for fields in _method_fields().values():
        out.update(fields)
    return out


def method_fields(method: str) -> tuple[str, ...]:
    """The fields method ``method`` reads beyond BASE_FIELDS (``Method.fields``)."""
    return tuple(_method_fields().get(method, {}))


# ----------------------------------------------------------------------------- helpers

_MISSING = object()


def _get(config, path: str):
    node = config
    for part in path.split("."):
        try:
            if not hasattr(node, "keys") or part not in node:
                return _MISSING
            node = node[part]
        except Exception:
            return _MISSING
    return node


def _fields_text(fields: Sequence[str], most: int = 6) -> str:
    """'a.x, a.y and 3 more' for a list of dotted names."""
    fields = list(fields)
    shown = ", ".join(fields[:most])
    return shown if len(fields) <= most else f"{shown} and {len(fields) - most} more"


def _problem(field: str, value: Any, what: str) -> str:
    return f"{field}={show(value)}: {what}"


# ----------------------------------------------------------------------------- config checks


def config_problems(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every problem of ``config`` that needs no file system, data or devices.

    ``prefix`` names where the config sits ("stages.pretext." for an embedded
    stage); the stages of ``config`` are checked too.
    """
    out: list[str] = []
    ok: dict[str, Any] = {}  # fields whose values passed their check
    missing: list[str] = []  # required fields the config does not have

    def check(field: str, checker: Check, required: bool) -> None:
        value = _get(config, field)
        if value is _MISSING:
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
            out.append(_problem(prefix + field, value, problem))

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
    if ok.get("optim.name") == "dino_adamw" and _get(config, "optim.weight_decay_end") is _MISSING:
        out.append(
            f"{prefix}optim.name='dino_adamw': reads optim.weight_decay_end, which {where} "
            "lacks; use another optimiser or configs/dino.py"
        )
    out += _data_source_problems(config, prefix)
    out += _model_problems(config, ok, prefix)
    out += _combination_problems(config, ok, method, prefix)
    out += _stage_problems(config, prefix)
    return list(dict.fromkeys(out))  # each problem once, in the order found


def _data_source_problems(config, prefix: str) -> list[str]:
    from jssl.data import SOURCES

    name = _get(config, "data.name")
    if name is _MISSING:
        return []
    if not isinstance(name, str) or name not in SOURCES:
        # the loader's wording: "unknown dataset source 'x'; known sources: [...]"
        return [
            f"{prefix}data.name={show(name)}: unknown dataset source {name!r}; known sources: "
            f"{sorted(SOURCES)}"
        ]
    out = []
    if name == "image_folder" and _get(config, "data.path") in ("", _MISSING):
        out.append(
            f"{prefix}data.path='': the image_folder source needs --config.data.path=DIR "
            "(DIR/train/<class>/*, DIR/test/<class>/*)"
        )
    if name == "arrayrecord" and _get(config, "data.path") in ("", _MISSING):
        out.append(
            f"{prefix}data.path='': the arrayrecord source needs --config.data.path=OUT, a "
            "folder made by python -m jssl.data.prepare --source=DIR --out=OUT"
        )
    if name == "tfds" and _get(config, "data.tfds_name") in ("", _MISSING):
        out.append(
            f"{prefix}data.tfds_name='': the tfds source needs a dataset name, e.g. "
            "--config.data.tfds_name=cifar10"
        )
    return out


def _model_class(name: str):
    from jssl.models import MODELS

    factory = MODELS[name]
    cls = factory.func if isinstance(factory, functools.partial) else factory
    return cls, dict(getattr(factory, "keywords", {}))


# keyword argument -> check, for the backbones' attributes (unknown ones are errors too)
MODEL_KWARGS: dict[str, Check] = {
    "widths": numbers(WIDTH, min_length=1),
    "convs_per_stage": integer(1, 64),
    "stage_sizes": numbers(integer(1, 64), min_length=1),
    "block": one_of(("basic", "bottleneck"), "ResNet block"),
    "width": WIDTH,
    "stem": one_of(("cifar", "imagenet"), "ResNet stem"),
    "zero_init_residual": boolean,
    "conv_impl": _registry("conv_impl", "conv_impl"),
    "patch_size": SIZE,
    "hidden": WIDTH,
    "depth": integer(1, 256),
    "num_heads": integer(1, 1024),
    "mlp_dim": WIDTH,
    "image_size": SIZE,
    "return_attention": boolean,
    "pos_embedding": one_of(("learned", "sincos"), "ViT pos_embedding"),
    "mask_token": boolean,
}


def _model_problems(config, ok: dict, prefix: str) -> list[str]:
    name = ok.get("model.name")
    kwargs = _get(config, "model.kwargs")
    if kwargs is _MISSING or not hasattr(kwargs, "keys"):
        return []  # reported with the trainer's fields
    if name is None:
        return []
    cls, defaults = _model_class(name)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name", "dtype")]
    out = []
    unknown = sorted(k for k in kwargs.keys() if k not in fields)
    if unknown:
        out.append(
            f"{prefix}model.name={name!r} takes no argument {', '.join(unknown)} (model.kwargs "
            f"has {', '.join(sorted(kwargs.keys()))}; {name} takes {', '.join(fields)}): use a "
            "config file whose preset builds this model, or a model of the same family"
        )
    values = {**defaults, **{k: kwargs[k] for k in kwargs.keys() if k in fields}}
    good = {}
    for key, value in values.items():
        if key not in kwargs.keys():
            good[key] = value
            continue
        checker = MODEL_KWARGS.get(key)
        problem = checker(value) if checker is not None else None
        if problem is None:
            good[key] = value
        else:
            out.append(_problem(f"{prefix}model.kwargs.{key}", value, problem))
    if cls.__name__ == "ViT":
        out += _vit_problems(config, good, prefix, cls)
    return out


def _vit_problems(config, kw: dict, prefix: str, cls) -> list[str]:
    def attr(key):  # None for an argument given a bad value (reported already)
        if key in kw:
            return kw[key]
        given = _get(config, f"model.kwargs.{key}")
        return getattr(cls, key, None) if given is _MISSING else None

    out = []
    hidden, heads, patch, size = (
        attr("hidden"),
        attr("num_heads"),
        attr("patch_size"),
        attr("image_size"),
    )
    if is_int(hidden) and is_int(heads) and hidden % heads:
        out.append(
            f"{prefix}model.kwargs.num_heads={heads}: the ViT width hidden={hidden} is not "
            f"divisible by it; use a divisor of {hidden}"
        )
    if attr("pos_embedding") == "sincos" and is_int(hidden) and hidden % 4:
        out.append(
            f"{prefix}model.kwargs.hidden={hidden}: sine-cosine position embeddings "
            "(pos_embedding='sincos') need a width divisible by 4; use a multiple of 4"
        )
    if not is_int(patch):
        return out
    if is_int(size) and size < patch:
        out.append(
            f"{prefix}model.kwargs.image_size={size}: smaller than patch_size={patch}; use at "
            f"least {patch}"
        )
    crops = [("augment.crop_size", _get(config, "augment.crop_size"))]
    method = _get(config, "method")
    reads_locals = "augment.local_crop_size" in _method_fields().get(method, {})
    local = _get(config, "augment.num_local_crops")
    if reads_locals and is_int(local) and local > 0:
        crops.append(("augment.local_crop_size", _get(config, "augment.local_crop_size")))
    for field, crop in crops:
        if is_int(crop) and 1 <= crop < patch:
            out.append(
                f"{prefix}{field}={crop}: smaller than the ViT's patch_size={patch}; use a crop "
                f"of at least {patch} px or a smaller --config.model.kwargs.patch_size"
            )
    return out


def _combination_problems(config, ok: dict, method: str | None, prefix: str) -> list[str]:
    out = []
    if ok.get("num_steps") == 0 and "num_epochs" in ok and ok["num_epochs"] <= 0:
        out.append(
            f"{prefix}num_epochs={show(ok['num_epochs'])}: must be > 0 (or set "
            "--config.num_steps=N > 0)"
        )
    if ok.get("eval.split") == "val" and _get(config, "data.val_fraction") in (0, _MISSING):
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
            is_vit, patch = _vit_patch(config, ok)
            values = {**ok, "model.patch_size": patch if is_vit else None}
            out += [prefix + problem for problem in METHODS[method].check(values)]
        unknown = [e for e in METHODS[method].evaluators if e not in EVALUATORS]
        if unknown:
            out.append(
                f"{prefix}method={method!r}: its evaluators {unknown} are not in "
                f"jssl.evaluation.EVALUATORS ({', '.join(sorted(EVALUATORS))})"
            )
    return out


def _vit_patch(config, ok: dict) -> tuple[bool, int | None]:
    """(whether model.name is a ViT, its patch size when valid)."""
    name = ok.get("model.name")
    if name is None:
        return False, None
    cls, defaults = _model_class(name)
    if cls.__name__ != "ViT":
        return False, None
    patch = _get(config, "model.kwargs.patch_size")
    if patch is _MISSING:
        patch = defaults.get("patch_size", cls.patch_size)
    return True, (patch if is_int(patch) and patch >= 1 else None)


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
    stages = _get(config, "stages")
    out = []
    if stages is not _MISSING and hasattr(stages, "keys"):
        for name in stages.keys():
            stage = stages[name]
            if isinstance(stage, ml_collections.ConfigDict):
                out += config_problems(stage, f"{prefix}stages.{name}.")
            else:
                out.append(_problem(f"{prefix}stages.{name}", stage, "must be a config"))
    ref = _get(config, "init_from.workdir")
    if isinstance(ref, str) and ref.startswith(STAGE_PREFIX):
        name = ref[len(STAGE_PREFIX) :]
        have = sorted(stages.keys()) if stages is not _MISSING and hasattr(stages, "keys") else []
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
    ref = _get(config, "init_from.workdir")
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
    weights = _get(config, "init_from.weights")
    return weights if isinstance(weights, str) else ""


def _weights_problems(config, prefix: str) -> list[str]:
    weights = _weights(config)
    if not weights:
        return []
    from jssl.models.convert import FILE_SUFFIXES

    field = f"{prefix}init_from.weights={weights!r}"
    out = []
    ref = _get(config, "init_from.workdir")
    if isinstance(ref, str) and ref:
        out.append(f"{field}: set either it or init_from.workdir={ref!r}, not both")
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        out.append(f"{field}: no such file; give a {' or '.join(FILE_SUFFIXES)} file")
    elif not path.lower().endswith(FILE_SUFFIXES):
        out.append(f"{field}: not a {' or '.join(FILE_SUFFIXES)} file")
    return out


def _data_path_problems(config, prefix: str) -> list[str]:
    name = _get(config, "data.name")
    if name not in ("image_folder", "arrayrecord"):
        return []
    path = _get(config, "data.path")
    if not isinstance(path, str) or not path:
        return []  # reported by config_problems
    if name == "arrayrecord":
        from jssl.data.arrayrecord import META

        if not os.path.exists(os.path.join(os.path.expanduser(path), META)):
            return [
                f"{prefix}data.path={path!r}: holds no finished prepared data (no {META}); make "
                f"it (or finish it: it resumes) with python -m jssl.data.prepare --source=DIR "
                f"--out={path}"
            ]
        return []
    if not os.path.isdir(os.path.expanduser(path)):
        return [
            f"{prefix}data.path={path!r}: image folder {path} does not exist or is not a "
            "directory; give DIR holding DIR/train/<class>/* and DIR/test/<class>/*"
        ]
    return []


def device_problems(
    config, device_count: int | None, process_count: int | None = None, prefix: str = ""
) -> list[str]:
    batch = _get(config, "batch_size")
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
    out = config_problems(config)
    out += _data_path_problems(config, "")
    out += _init_from_problems(config, "")
    out += _weights_problems(config, "")
    out += device_problems(config, device_count, process_count)
    method = _get(config, "method")
    method = method if isinstance(method, str) else None
    if workdir is not None:
        # Evaluating a weights file needs no checkpoint: the workdir is checked as a new run's.
        wmode = "train" if mode == "eval" and _weights(config) else mode
        out += workdir_problems(workdir, method, mode=wmode)
    stages = _get(config, "stages")
    if stages is not _MISSING and hasattr(stages, "keys"):
        for name in stages.keys():
            stage = stages[name]
            if not isinstance(stage, ml_collections.ConfigDict):
                continue
            prefix = f"stages.{name}."
            out += _data_path_problems(stage, prefix)
            out += _init_from_problems(stage, prefix)
            out += _weights_problems(stage, prefix)
            out += device_problems(stage, device_count, process_count, prefix)
            ref = _get(config, "init_from.workdir")
            if workdir is not None and mode == "train" and ref == STAGE_PREFIX + name:
                stage_method = _get(stage, "method")
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
    method = _get(config, "method")
    found += workdir_problems(workdir, method if isinstance(method, str) else None, mode="eval")
    if found:
        raise ConfigError(message(found))
    return config
