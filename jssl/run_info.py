"""``run_info.json``: where and how long a run trained (versions, devices, wall time).

One record per training session (a fresh start or a resume): its first and
last step, start and end time, seconds, the devices and the library versions.
``jssl.report`` shows them; the trainer writes them (process 0 only).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time

import jax

FILE = "run_info.json"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def devices_text(devices) -> str:
    """'8 x cpu (TFRT_CPU_0, ...)' style summary of a list of devices."""
    kinds = sorted({d.device_kind for d in devices})
    return f"{len(devices)} x {', '.join(kinds)} ({devices[0].platform})"


def read(workdir: str) -> list[dict]:
    """The sessions recorded in ``workdir`` (oldest first); [] for none."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f).get("sessions", [])


def _write(workdir: str, sessions: list[dict]) -> None:
    path = os.path.join(workdir, FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"sessions": sessions}, f, indent=2)
    os.replace(tmp, path)


class Session:
    """The record of this training session; ``end(step)`` writes its end and seconds."""

    def __init__(self, workdir: str, devices, start_step: int):
        self.workdir = workdir
        self.writes = jax.process_index() == 0
        self.t0 = time.perf_counter()
        self.record = {
            "start_step": int(start_step),
            "end_step": None,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ended": None,
            "seconds": None,
            "devices": devices_text(devices),
            "process_count": jax.process_count(),
            "host": platform.node(),
            "argv": sys.argv,
            "versions": versions(),
        }
        self.sessions = read(workdir) + [self.record]
        if self.writes:
            _write(workdir, self.sessions)

    def end(self, step: int) -> None:
        self.record["end_step"] = int(step)
        self.record["ended"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        self.record["seconds"] = time.perf_counter() - self.t0
        if self.writes:
            _write(self.workdir, self.sessions)
