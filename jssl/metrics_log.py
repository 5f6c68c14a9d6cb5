"""metrics.jsonl on resume: the records of steps after the checkpoint a run resumes from go.

A run killed (kill -9, a lost machine) after logging step s but before its
next checkpoint resumes from an earlier step and logs the steps after it again;
``drop_after`` removes the earlier records of those steps first, so that the
file holds each (kind, step) once, from the trajectory the checkpoints continue.
"""

from __future__ import annotations

import json
import os

import jax

FILE = "metrics.jsonl"


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


def drop_after(workdir: str, step: int) -> int:
    """Removes the records of steps > ``step`` (and cut-short lines) from ``workdir``'s
    metrics.jsonl, in place (an open append handle keeps writing at the new end); returns
    how many went. Process 0 only; the others do nothing."""
    path = os.path.join(workdir, FILE)
    if jax.process_index() != 0 or not os.path.exists(path):
        return 0
    with open(path, "r+") as f:
        lines = f.readlines()
        keep = []
        for line in lines:
            s = _step(line)
            if s is not None and s <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
        if len(keep) == len(lines):
            return 0
        f.seek(0)
        f.writelines(keep)
        f.truncate()
    return len(lines) - len(keep)
