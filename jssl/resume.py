"""Resuming a run: which config changes a saved run accepts.

A run resumes from its workdir when the config it is given differs from the
saved ``config.json`` only in fields that change nothing already done
(``RESUMABLE_FIELDS``: the run's length, logging, evaluation, where data is read
from), or in fields added to jssl after the run was saved that keep the value
doing what the run did (``ADDED_FIELDS``: the base fields' here, a method's
declared with its fields as ``jssl.checks.Added``). Anything else is refused
with the list of differences (``--config.allow_config_change=True`` overrides).
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from jssl.checkpoint import load_saved_config
from jssl.checks import Added
from jssl.errors import UserError
from jssl.methods import METHODS

# Fields that may differ between a saved run and its resumption.
RESUMABLE_FIELDS = (
    "num_epochs",
    "num_steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpoints",
    "allow_config_change",
    "max_nonfinite_steps",
    "max_train_seconds",
    "steps_in_flight",
    "eval.",
    "data.cache_dir",
    "data.data_dir",
    "data.path",
    # how the examples are read, not which: the batches stay the same
    "data.stream",
    "data.num_threads",
    "data.prefetch",
    "data.num_workers",
    # how the convolutions are computed, not what: the same parameters, float32 rounding apart
    "model.kwargs.conv_impl",
)

# Base fields added after runs were first saved, each with the value that does what a
# run saved without it did: such a run resumes while the field keeps that value. A
# method's added fields are declared with its fields (``jssl.checks.Added``).
BASE_ADDED_FIELDS = {
    "data.val_fraction": 0.0,
    "data.val_seed": 0,
    "init_from.workdir": "",
    "init_from.params": ["backbone"],
    "init_from.weights": "",
    "init_from.prefix": "",
    "init_from.input_norm": "auto",
    "optim.weight_decay_end": 0.4,  # DINO's schedule, fixed in its code before
    "model.kwargs.num_registers": 0,  # the ViT's registers and LayerScale, none before
    "model.kwargs.layer_scale": 0.0,
}


def _added_fields() -> tuple[dict[str, Any], dict[str, str]]:
    """({field: value before it existed}, {field: the field it is inert without})."""
    before, inert = dict(BASE_ADDED_FIELDS), {}
    for method in METHODS.values():
        for field, check in method.fields.items():
            if isinstance(check, Added) and check.inert_unless:
                inert[field] = check.inert_unless
            elif isinstance(check, Added):
                before[field] = check.before
    return before, inert


ADDED_FIELDS, ADDED_INERT_UNLESS = _added_fields()


class ConfigMismatchError(UserError):
    """The workdir holds a run with another config."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _as_before_it_existed(key: str, current: dict) -> bool:
    """Whether the field ``key``, absent from a saved run's config, has (in the flattened
    ``current`` config) the value that does what that run did (``ADDED_FIELDS``), or is
    inert because the field it depends on has (``ADDED_INERT_UNLESS``)."""
    if key in ADDED_INERT_UNLESS:
        gate = ADDED_INERT_UNLESS[key]
        return current.get(gate) == ADDED_FIELDS[gate]
    return key in ADDED_FIELDS and current[key] == ADDED_FIELDS[key]


def config_differences(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
    """Non-resumable fields whose values differ between a saved run and ``config``."""
    current = _flatten(json.loads(config.to_json_best_effort()))
    saved = _flatten(saved)
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if any(key == f or (f.endswith(".") and key.startswith(f)) for f in RESUMABLE_FIELDS):
            continue
        if key not in saved and _as_before_it_existed(key, current):
            continue
        before, now = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if before != now:
            diffs.append(f"{key}: saved {before!r}, now {now!r}")
    return diffs


def check_resumable(config: ml_collections.ConfigDict, workdir: str, mode: str = "train") -> None:
    """Raises ConfigMismatchError when ``workdir`` holds a run of another config; the fix
    it names depends on ``mode`` (evaluating a run needs the run's own --config)."""
    saved = load_saved_config(workdir)
    if saved is None or config.allow_config_change:
        return
    diffs = config_differences(saved, config)
    if not diffs:
        return
    if mode == "eval":
        trained = _config_flag(workdir)
        fix = (
            f"Evaluate it with the config it was trained with ({trained})"
            if trained
            else "Evaluate it with the --config it was trained with"
        ) + ", or pass --config.allow_config_change=True to evaluate it under this one."
    else:
        fix = "Use a new --workdir, or pass --config.allow_config_change=True to resume anyway."
    raise ConfigMismatchError(
        f"{workdir} holds a run with a different config ({'; '.join(diffs)}). {fix}"
    )


def _config_flag(workdir: str) -> str | None:
    """The --config=... flag of the run's first training session (run_info.json), if any."""
    from jssl import run_info

    for session in run_info.read(workdir):
        flags = [a for a in session.get("argv", []) if a.startswith("--config=")]
        if flags:
            return flags[-1]
    return None
