"""Test setup: 8 fake CPU devices and one persistent XLA cache, set before JAX is imported;
the ``train_py`` runner and the ``train_py_runs`` started in the background.

The cache (a fresh temporary folder per pytest run, removed at exit) is in the
environment, so train.py processes share it: a resumed, restarted or
re-evaluated run loads the executables an earlier run of the same program
compiled instead of compiling them again, which is most of a smoke run's time
on a 2-core CPU. Every compiled program is cached (no minimum compile time).

Background runs: a test module lists the train.py runs its tests read as
``TRAIN_PY_RUNS = {name: args}`` (no --workdir), and other commands as
``BACKGROUND_COMMANDS = {name: argv}`` ("{folder}" in argv: an empty folder of its own), and
its tests take the ``train_py_runs`` fixture (``train_py_runs[name]`` waits). XLA
compiles on one core, so while this process compiles the unit tests' programs, the
selected modules' runs go on in processes of their own (tests/forked.py) from the start
of the session, in the order their modules come (those modules run after the others),
``cpu_count - 1`` at a time
($JSSL_TEST_BACKGROUND_RUNS overrides; 0 starts each one when a test asks for it).
A module's ``SLOW_RUNS`` names the entries only its tests marked ``slow`` read (for the
methods' runs, tests/helpers.py's ``slow_runs``): they are queued only when one of those
is selected.
The terminal summary lists when each ran and how long a test waited for it (with -n 0).

Under pytest-xdist (pyproject's ``-n 2 --dist loadfile``: two worker processes, each
running whole modules) nothing is queued: a module's run starts when one of its tests
asks for it, and the worker waits while the other worker's tests go on. The modules
that run subprocesses come first, so that the many short unit tests fill in at the end.
"""

import atexit
import os
import shutil
import tempfile

_XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))  # a worker of pytest -n N

# The suite's time is mostly XLA compiling tiny programs, so the CPU code is compiled
# cheaply: LLVM optimisation level 0 (a 37% shorter run of two test files) and XLA's
# older loop emitters instead of its MLIR fusion emitters (1.6x faster compiles of a
# train step and of small programs); both compute IEEE float32 (no fast-math either way).
# Set either flag in XLA_FLAGS to override it.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
if "xla_cpu_use_fusion_emitters" not in _flags:
    _flags += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JSSL_CACHE_DIR" not in os.environ:  # the tfds label cache, away from the user's home
    _jssl_cache = tempfile.mkdtemp(prefix="jssl-test-cache-")
    atexit.register(shutil.rmtree, _jssl_cache, ignore_errors=True)
    os.environ["JSSL_CACHE_DIR"] = _jssl_cache
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jssl-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)

import gc  # noqa: E402

import flax.linen  # noqa: E402, F401
import optax  # noqa: E402, F401

# Tracing makes thousands of short-lived objects; with the modules just imported out of
# the garbage collector's view, three of the method test files ran 7% faster (103 -> 96 s).
gc.collect()
gc.freeze()

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from tests import forked  # noqa: E402
from tests.helpers import ROOT, TrainPy  # noqa: E402


@pytest.fixture(scope="session")
def train_py():
    """Runs train.py: ``train_py(*args)`` -> CompletedProcess, ``.start(*args)`` -> Popen,
    ``.command(*args)`` -> argv; cwd is the repository, the environment this session's."""
    return TrainPy()


class BackgroundRun:
    """One train.py run of a module's TRAIN_PY_RUNS, in ``folder``/run, or one command of its
    BACKGROUND_COMMANDS (``command=True``: argv, "{folder}" in it replaced by ``folder``/run);
    output in files (not pipes: nobody reads them until the run ends)."""

    def __init__(self, module: str, name: str, args, folder, command: bool = False):
        self.module, self.name, self.args, self.folder = module, name, tuple(args), folder
        self.command = command
        self.workdir = str(folder / "run")
        self.proc = None
        self.started = self.ended = None
        self.waited = 0.0
        self.returncode = self.stdout = self.stderr = None

    def start(self, train_py: TrainPy) -> None:
        self.started = time.monotonic()
        if self.command:
            os.makedirs(self.workdir)
            argv = [a.replace("{folder}", self.workdir) for a in self.args]
        else:
            argv = train_py.command(*self.args, f"--workdir={self.workdir}")
        out, err = str(self.folder / "stdout.txt"), str(self.folder / "stderr.txt")
        self.proc = forked.start(argv, ROOT, train_py.env, out, err)

    def running(self) -> bool:
        if self.proc is None or self.ended is not None:
            return False
        if self.proc.poll() is None:
            return True
        self.ended = time.monotonic()
        self.returncode = self.proc.returncode
        self.stdout = (self.folder / "stdout.txt").read_text()
        self.stderr = (self.folder / "stderr.txt").read_text()
        return False


class BackgroundRuns:
    """The session's queue of BackgroundRuns: at most ``limit`` running at once."""

    def __init__(self, runs: list[BackgroundRun], train_py: TrainPy, limit: int, tmp_path_factory):
        self.runs, self.train_py, self.limit = runs, train_py, limit
        self.tmp_path_factory = tmp_path_factory
        self.t0 = time.monotonic()

    def pump(self, limit: int | None = None) -> None:
        """Starts queued runs while fewer than ``limit`` run."""
        limit = self.limit if limit is None else limit
        running = sum(r.running() for r in self.runs)
        for run in self.runs:
            if running >= limit:
                break
            if run.proc is None:
                run.start(self.train_py)
                running += 1

    def get(self, module: str, name: str, timeout: float = 600) -> BackgroundRun:
        """The finished run ``name`` of ``module``, started now if it has not been."""
        run = next((r for r in self.runs if (r.module, r.name) == (module, name)), None)
        if run is None:
            run = _background_run(self.tmp_path_factory, sys.modules[module], name)
            self.runs.append(run)
        if run.proc is None:
            run.start(self.train_py)
        t, deadline = time.monotonic(), time.monotonic() + timeout
        while run.running():
            if time.monotonic() > deadline:
                run.proc.kill()
                raise subprocess.TimeoutExpired(run.proc.args, timeout)
            self.pump(self.limit + 1)  # this process is idle meanwhile: one more may run
            time.sleep(0.05)
        run.waited += time.monotonic() - t
        return run

    def close(self) -> None:
        for run in self.runs:
            if run.running():
                run.proc.kill()
                run.proc.wait()

    def summary(self) -> list[str]:
        lines = []
        for r in self.runs:
            if r.started is None:
                continue
            took = f"{r.ended - r.started:6.1f}s" if r.ended else "   (not waited for)"
            lines.append(
                f"{r.module}[{r.name}]: started at {r.started - self.t0:6.1f}s, took {took}, "
                f"tests waited {r.waited:5.1f}s, exit {r.returncode}"
            )
        return lines


_BACKGROUND: list[BackgroundRuns] = []


def _background_run(tmp_path_factory, module, name: str) -> BackgroundRun:
    """The BackgroundRun of entry ``name`` of ``module``'s TRAIN_PY_RUNS or
    BACKGROUND_COMMANDS, in a folder of its own."""
    command = name not in getattr(module, "TRAIN_PY_RUNS", {})
    args = getattr(module, "BACKGROUND_COMMANDS" if command else "TRAIN_PY_RUNS")[name]
    folder = tmp_path_factory.mktemp(f"{module.__name__.split('.')[-1]}-{name}")
    return BackgroundRun(module.__name__, name, args, folder, command)


@pytest.fixture(scope="session", autouse=True)
def _background_runs(request, tmp_path_factory, train_py):
    """Queues TRAIN_PY_RUNS and BACKGROUND_COMMANDS of every module with a selected test
    that takes train_py_runs, but those named in its SLOW_RUNS only if a selected test of
    the module is marked slow (a run nobody queued starts when a test asks for it)."""
    runs, readers = [], {}
    # Under pytest-xdist each worker runs whole modules (--dist loadfile) and starts a
    # module's runs when its tests ask: queued here, every worker would run every one.
    items = [] if _XDIST_WORKER else request.session.items
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and "train_py_runs" in item.fixturenames:
            readers.setdefault(module, []).append(item)
    for module, items in readers.items():
        slow = any(item.get_closest_marker("slow") for item in items)
        for table in ("TRAIN_PY_RUNS", "BACKGROUND_COMMANDS"):
            for name in getattr(module, table, {}):
                if slow or name not in getattr(module, "SLOW_RUNS", ()):
                    runs.append(_background_run(tmp_path_factory, module, name))
    limit = int(os.environ.get("JSSL_TEST_BACKGROUND_RUNS", max(1, (os.cpu_count() or 2) - 1)))
    background = BackgroundRuns(runs, train_py, limit, tmp_path_factory)
    _BACKGROUND.append(background)
    background.pump()
    yield background
    background.close()


@pytest.fixture(scope="module")
def train_py_runs(request, _background_runs):
    """``train_py_runs[name]``: the finished run ``name`` of this module's TRAIN_PY_RUNS or
    BACKGROUND_COMMANDS, with ``workdir``, ``returncode``, ``stdout`` and ``stderr``."""

    class Runs:
        def __getitem__(self, name):
            return _background_runs.get(request.module.__name__, name)

    return Runs()


def pytest_collection_modifyitems(items):
    """The modules whose tests read background runs go last, in their order, so that their
    runs (started at the session's start) finish while the other modules' tests compile.
    Under pytest-xdist the modules whose tests run subprocesses go first instead (see the
    module's docstring)."""
    if _XDIST_WORKER:
        waits = {"train_py_runs", "train_py"}
        first = {item.module for item in items if waits & set(item.fixturenames)}
        items.sort(key=lambda item: getattr(item, "module", None) not in first)
        return
    late = {item.module for item in items if "train_py_runs" in item.fixturenames}
    items.sort(key=lambda item: getattr(item, "module", None) in late)


def pytest_runtest_setup(item):
    for background in _BACKGROUND:
        background.pump()


def pytest_terminal_summary(terminalreporter):
    lines = [line for background in _BACKGROUND for line in background.summary()]
    if lines:
        terminalreporter.section("train.py runs in the background")
        for line in lines:
            terminalreporter.write_line(line)
