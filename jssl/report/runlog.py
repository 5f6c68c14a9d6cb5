"""What a run folder holds in files, read without restoring the network: config.json,
metrics.jsonl, the evaluations, their labels and run_info.json."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jssl import run_info

# metrics.jsonl keys that are not series
NOT_SERIES = ("step", "kind")
# Train series drawn first, in this order; the method's own monitors follow.
FIRST = ("loss", "learning_rate", "grad_norm", "param_norm")


@dataclasses.dataclass
class RunLog:
    """One run folder's records."""

    workdir: str
    config: dict
    series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # kind -> key -> (steps, values)
    evaluation: dict[str, float] | None  # the final evaluation (latest eval_<step>.json)
    eval_step: int | None
    untrained: dict[str, float] | None
    labels: dict[str, str]  # metric -> summary-table label
    sessions: list[dict]
    name: str = ""  # how the report names the run (default: the folder's name)

    def __post_init__(self):
        self.name = self.name or os.path.basename(os.path.normpath(self.workdir))

    @property
    def train_seconds(self) -> float:
        return float(sum(s["seconds"] or 0.0 for s in self.sessions))


def read_metrics(path: str) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """metrics.jsonl as kind -> key -> (steps, values), sorted by step.

    A step logged twice (a run killed after logging and resumed from an earlier
    checkpoint logs its steps again) keeps its last record: the one of the
    trajectory the checkpoints continue.
    """
    last: dict[tuple[str, int], dict] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:  # a line cut short by a kill
                    continue
                last[(record.get("kind", "train"), int(record["step"]))] = record
    out: dict[str, dict[str, list]] = {}
    for (kind, step), record in sorted(last.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        for key, value in record.items():
            if key in NOT_SERIES or not isinstance(value, (int, float)):
                continue
            out.setdefault(kind, {}).setdefault(key, []).append((step, float(value)))
    return {
        kind: {
            k: (np.array([s for s, _ in v]), np.array([x for _, x in v])) for k, v in keys.items()
        }
        for kind, keys in out.items()
    }


def ordered_keys(keys) -> list[str]:
    """FIRST in order, then the others alphabetically."""
    keys = list(keys)
    return [k for k in FIRST if k in keys] + sorted(k for k in keys if k not in FIRST)


def _json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def final_evaluation(workdir: str) -> tuple[int | None, dict | None]:
    """(step, values) of the latest eval_<step>.json; (None, None) before one exists."""
    steps = []
    for name in os.listdir(workdir):
        stem = name[len("eval_") : -len(".json")] if name.startswith("eval_") else ""
        if name.endswith(".json") and stem.isdigit():
            steps.append(int(stem))
    if not steps:
        return None, None
    step = max(steps)
    return step, _json(os.path.join(workdir, f"eval_{step}.json"))


def read_run(workdir: str) -> RunLog:
    from jssl.trainer import LABELS_FILE  # the file name the trainer writes

    step, evaluation = final_evaluation(workdir)
    return RunLog(
        workdir=workdir,
        config=_json(os.path.join(workdir, "config.json")) or {},
        series=read_metrics(os.path.join(workdir, "metrics.jsonl")),
        evaluation=evaluation,
        eval_step=step,
        untrained=_json(os.path.join(workdir, "eval_untrained.json")),
        labels=dict((_json(os.path.join(workdir, LABELS_FILE)) or {}).get("rows", [])),
        sessions=run_info.read(workdir),
    )


def unique_names(workdirs: list[str]) -> list[str]:
    """A name per run folder: its own name, with as many parent folders as it takes to
    tell the runs apart (``a/run`` and ``b/run``)."""
    parts = [os.path.normpath(w).split(os.sep) for w in workdirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = [os.sep.join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{n} ({i + 1})" for i, n in enumerate(names)]  # the same folder twice


def read_runs(workdirs: list[str]) -> list[RunLog]:
    """``read_run`` of each folder, named apart (``unique_names``)."""
    return [
        dataclasses.replace(read_run(w), name=n)
        for w, n in zip(workdirs, unique_names(workdirs), strict=True)
    ]
