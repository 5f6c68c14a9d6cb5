"""The run's metric log: metrics.jsonl and TensorBoard events (``MetricWriter``).

On resume, the records of steps after the checkpoint the run resumes from go: a run
killed (kill -9, a lost machine) after logging step s but before its next checkpoint
resumes from an earlier step and logs the steps after it again; ``drop_after``
removes the earlier records of those steps first, so that the file holds each (kind,
step) once, from the trajectory the checkpoints continue.
"""

from __future__ import annotations

import json
import os
import time

import jax

from jssl import distributed

FILE = "metrics.jsonl"


class MetricsWriteError(RuntimeError):
    """metrics.jsonl or the TensorBoard events could not be written (a full disk, a quota,
    permissions). ``what`` names the write ("Writing the train metrics of step 3 in W"),
    ``reason`` the OSError."""

    def __init__(self, what: str, reason: OSError):
        super().__init__(f"{what} failed ({reason}). Check free disk space and permissions.")
        self.what = what
        self.reason = reason


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


def first(workdir: str, kind: str, key: str) -> float | None:
    """``key`` of the first record of ``kind`` in ``workdir``'s metrics.jsonl that has it
    (None without one, or without the file: a fresh run, or not process 0's folder)."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            if record.get("kind") == kind and key in record:
                return float(record[key])
    return None


class MetricWriter:
    """metrics.jsonl (one JSON object per line) and TensorBoard events, from process 0 only
    (the others' writes do nothing).

    ``resume(step)`` before the first write of a run resumed from checkpoint ``step``:
    the records of later steps (logged before a kill, run again now) leave
    metrics.jsonl, and the new TensorBoard file starts with a purge marker at
    ``step + 1`` (tensorboardX's ``purge_step``), so TensorBoard drops the earlier
    files' events of those steps and shows each step once.
    """

    def __init__(self, workdir: str):
        self.enabled = distributed.is_primary()
        self.workdir = workdir
        self._tb = None
        self._purge_step: int | None = None
        self._failed = False
        if self.enabled:
            self.jsonl = open(os.path.join(workdir, FILE), "a")

    def resume(self, step: int) -> None:
        drop_after(self.workdir, step)
        self._purge_step = step + 1 if step > 0 else None

    @property
    def tb(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            path = os.path.join(self.workdir, "tensorboard")
            # tensorboardX names a file by the second: a restart within the same second
            # would truncate the last file instead of starting its own.
            suffix = f".{os.getpid()}.{time.time_ns()}"
            self._tb = SummaryWriter(path, purge_step=self._purge_step, filename_suffix=suffix)
        return self._tb

    def write(self, step: int, metrics: dict[str, float], *, kind: str = "train") -> None:
        if not self.enabled:
            return
        try:
            self.jsonl.write(json.dumps({"step": step, "kind": kind, **metrics}) + "\n")
            self.jsonl.flush()
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)
            self.tb.flush()
        except OSError as e:
            self._failed = True
            raise MetricsWriteError(
                f"Writing the {kind} metrics of step {step} in {self.workdir}", e
            ) from e

    def close(self) -> None:
        """Closes the files; after a failed write, quietly (their buffers cannot be written)."""
        if not self.enabled:
            return
        error = None
        for f in (self.jsonl, self._tb):
            try:
                if f is not None:
                    f.close()
            except OSError as e:
                error = error or e
        if error is not None and not self._failed:
            self._failed = True
            raise MetricsWriteError(f"Closing the metrics in {self.workdir}", error) from error
