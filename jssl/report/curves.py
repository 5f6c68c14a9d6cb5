"""The report's curves from metrics.jsonl: the train series (loss, learning rate, gradient
norm, every monitor the method logs) and the evaluations during training, several runs
overlaid."""

from __future__ import annotations

import os

from jssl import plotting
from jssl.evaluation.during import KIND as DURING
from jssl.report.html import Section, image
from jssl.report.runlog import RunLog, ordered_keys

SKIP = ("finite",)  # a 0/1 flag averaged over the interval; the non-finite check reports it


def _method(log: RunLog) -> str:
    return str(log.config.get("method"))


def panels(logs: list[RunLog], kind: str) -> list[tuple[str, list]]:
    """(title, [(run name, steps, values), ...]) per logged key, runs overlaid; when the
    runs are of several methods, each method's losses get panels of their own (one
    method's loss is not on another's scale)."""
    keys = ordered_keys({k for log in logs for k in log.series.get(kind, {})} - set(SKIP))
    several = len({_method(log) for log in logs}) > 1
    out = []
    for key in keys:
        having = [log for log in logs if key in log.series.get(kind, {})]
        groups = {"": having}
        if several and "loss" in key:
            groups = {
                f" ({m})": [log for log in having if _method(log) == m]
                for m in dict.fromkeys(_method(log) for log in having)
            }
        for suffix, group in groups.items():
            out.append((key + suffix, [(log.name, *log.series[kind][key]) for log in group]))
    return out


def colors(logs: list[RunLog]) -> dict[str, str]:
    """Each run's colour, the same in every panel: matplotlib's cycle in the runs' order."""
    return {log.name: f"C{i % 10}" for i, log in enumerate(logs)}


def _figure(logs: list[RunLog], found: list) -> object:
    return plotting.curves_figure(found, colors=colors(logs), legend=len(logs) > 1)


def curves(logs: list[RunLog], out: str, prefix: str = "") -> Section:
    """One figure of the train series and one of the evaluations during training."""
    parts = []
    train = panels(logs, "train")
    if train:
        name = f"{prefix}curves_train.png"
        plotting.save(_figure(logs, train), os.path.join(out, name))
        what = ", ".join(title for title, _ in train)
        parts.append(image(name, "training curves", f"Means over each logging interval: {what}."))
    during = panels(logs, DURING)
    if during:
        name = f"{prefix}curves_eval_during.png"
        plotting.save(_figure(logs, during), os.path.join(out, name))
        caption = (
            "Evaluation during training (config.eval.every_steps): kNN and RankMe on fixed "
            "subsets of config.eval.during_max_examples training and test images."
        )
        parts.append(image(name, "evaluation during training", caption))
    else:
        parts.append(
            '<p class="note">No evaluation during training: set --config.eval.every_steps=N '
            "to log a kNN every N steps.</p>"
        )
    if not train:
        parts.insert(0, '<p class="note">metrics.jsonl holds no training records.</p>')
    return Section(f"{prefix}curves", "Curves", "\n".join(parts))
