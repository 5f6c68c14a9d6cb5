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


def panels(logs: list[RunLog], kind: str) -> list[tuple[str, list]]:
    keys = ordered_keys({k for log in logs for k in log.series.get(kind, {})} - set(SKIP))
    out = []
    for key in keys:
        series = [
            (log.name, *log.series[kind][key]) for log in logs if key in log.series.get(kind, {})
        ]
        out.append((key, series))
    return out


def curves(logs: list[RunLog], out: str, prefix: str = "") -> Section:
    """One figure of the train series and one of the evaluations during training."""
    parts = []
    train = panels(logs, "train")
    if train:
        name = f"{prefix}curves_train.png"
        plotting.save(plotting.curves_figure(train), os.path.join(out, name))
        what = ", ".join(title for title, _ in train)
        parts.append(image(name, "training curves", f"Means over each logging interval: {what}."))
    during = panels(logs, DURING)
    if during:
        name = f"{prefix}curves_eval_during.png"
        plotting.save(plotting.curves_figure(during), os.path.join(out, name))
        caption = (
            "Evaluation during training (config.eval.every_steps): kNN on fixed subsets of "
            "config.eval.during_max_examples training and test images."
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
