"""What several benchmarks share: the CIFAR-10 JPEG folder, the machine, CPU-share sampling.

Framework-neutral (no PyTorch, no jssl training code): budget.py and
compare_pytorch.py both import it, and neither imports the other.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import tarfile
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ARCHIVE = os.path.join(ROOT, "..", "shared", "datasets", "cifar10-jpeg.tar.gz")


# ----------------------------------------------------------------------------
# Data


def image_folder(path: str) -> str:
    """An image-folder root: ``path`` itself, or a .tar.gz unpacked once under the temp folder."""
    if os.path.isdir(path):
        return path
    if not os.path.exists(path):
        sys.exit(
            f"error: {path} not found; pass --data DIR (train/<class>/*.jpg, test/<class>/*.jpg)."
        )
    target = os.path.join(tempfile.gettempdir(), "jssl-" + os.path.basename(path).split(".")[0])
    marker = os.path.join(target, ".complete")
    if not os.path.exists(marker):
        print(f"unpacking {path} -> {target}", flush=True)
        with tarfile.open(path) as tar:
            tar.extractall(target, filter="data")
        open(marker, "w").close()
    roots = [d for d in os.listdir(target) if os.path.isdir(os.path.join(target, d, "train"))]
    return os.path.join(target, roots[0]) if roots else target


def all_images(source) -> np.ndarray:
    """uint8 [N, H, W, C]: every image of a ``jssl.data.ImageSource``, in order.

    For what needs the whole array at once (raw-pixel floors, the PyTorch side
    of a comparison); jssl itself reads sources through ``get``.
    """
    return np.asarray(source.get(np.arange(len(source))))


# ----------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "pillow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def machine() -> dict:
    return {
        "description": f"{cpu_model()}, {os.cpu_count()} cores",
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "uname": " ".join(platform.uname()),
    }


# ----------------------------------------------------------------------------
# CPU share


def _busy_seconds() -> float:
    """CPU seconds all processes have run since boot (/proc/stat), 0 where unavailable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process (all threads) and its live children (DataLoader workers)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return total
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                children = f.read().split()
        except OSError:
            continue
        for pid in children:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    stat = f.read().rsplit(")", 1)[1].split()
                total += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
    return total


def _cores(a: tuple, b: tuple) -> dict:
    """Cores busy between two samples: this benchmark's own and every other process's."""
    (ta, busy_a, own_a, _), (tb, busy_b, own_b, _) = a, b
    wall = max(tb - ta, 1e-9)
    own, busy = (own_b - own_a) / wall, (busy_b - busy_a) / wall
    return {"own_cores": round(own, 2), "others_cores": round(max(0.0, busy - own), 2)}


class CpuSampler:
    """Cores used by this benchmark (workers included) and by every other process.

    ``others_cores`` near 0 means the measured phase ran on an otherwise idle
    machine; on the shared 2-core machines 0.5 or more makes a figure suspect.

    Two ways to use it:

    - ``with sampler.phase() as cpu: ...``: the share of one timed phase, from
      samples at its start and end (``cpu`` is filled when the block exits);
    - ``with CpuSampler() as sampler: ...``: a thread samples every ``every``
      seconds; ``share(t0, t1)`` is the share between two ``time.perf_counter()``
      instants inside the block, ``loadavg_at(t)`` the load averages sampled
      nearest to ``t`` (for a phase whose bounds are known only afterwards).
    """

    def __init__(self, every: float = 1.0):
        # (perf_counter, busy seconds, own seconds, load averages)
        self.samples: list[tuple[float, float, float, tuple[float, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def sample(self) -> tuple[float, float, float, tuple[float, ...]]:
        s = (time.perf_counter(), _busy_seconds(), _own_seconds(), tuple(loadavg()))
        self.samples.append(s)
        return s

    def _run(self, every):
        while not self._stop.wait(every):
            self.sample()

    def __enter__(self):
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    @contextlib.contextmanager
    def phase(self):
        """{"own_cores", "others_cores"} of the ``with`` block, filled when it exits."""
        result: dict = {}
        start = self.sample()
        yield result
        result.update(_cores(start, self.sample()))

    def share(self, t0: float, t1: float) -> dict | None:
        inside = [s for s in sorted(self.samples) if t0 - 0.5 <= s[0] <= t1 + 0.5]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
            return None
        return _cores(inside[0], inside[-1])

    def loadavg_at(self, t: float) -> list[float]:
        """The 1, 5 and 15-minute load averages sampled nearest to ``t``."""
        return list(min(self.samples, key=lambda s: abs(s[0] - t))[3])
