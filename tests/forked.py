"""Python commands (``python train.py ...``, ``python -m jssl.check ...``) run as processes
forked from a server that has already imported JAX, jssl, scikit-learn and orbax.

A smoke run spends about 3 s of its 9-12 s importing those; a child of the server starts
with them imported and runs the script as ``python`` would: ``__main__``, its argv, cwd,
its own stdout and stderr files, the exit status of ``sys.exit`` or 1 after an uncaught
exception's traceback, then what interpreter shutdown does (waiting for non-daemon
threads, atexit functions, flushing). The server imports modules only: JAX's backend
(its threads, the XLA_FLAGS it reads) starts in each child.

``Forked`` has the part of ``subprocess.Popen``'s interface the tests use. Commands that
need another environment than the server's (which is this process's when the server
started), pipes read while the command runs, or signals other than kill run as real
subprocesses instead (see ``forkable``); so do the tests whose subject is a fresh
interpreter's whole output (tests/test_validation.py).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback

# What a train.py run imports before its first step (train.py imports JAX after parsing
# its flags); importing them here changes nothing a child computes.
PRELOAD = [
    "jax",
    "jssl.trainer",
    "jssl.cli",
    "jssl.check",
    "orbax.checkpoint",
    "sklearn.cluster",
    "scipy.optimize",
    "absl.app",
    "ml_collections.config_flags",
]

_CONTEXT = None
_SERVER_ENV: dict[str, str] | None = None


def _context():
    global _CONTEXT, _SERVER_ENV
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
        _SERVER_ENV = dict(os.environ)  # the server starts with the next Process
    return _CONTEXT


# Set by pytest for the test that runs; read by nothing a child imports.
_IGNORED = {"PYTEST_CURRENT_TEST"}


def _environment(env) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in _IGNORED}


def forkable(argv, env) -> bool:
    """Whether ``argv`` (``[sys.executable, script | -m module, ...]``) can run forked in
    ``env``: this interpreter, and the environment the server has (JAX reads part of it
    when it is imported)."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return False
    if argv[1].startswith("-") and not (argv[1] == "-m" and len(argv) > 2):
        return False
    server = os.environ if _SERVER_ENV is None else _SERVER_ENV
    return _environment(env) == _environment(server)


def start(argv, cwd, env, stdout_path: str | None = None, stderr_path: str | None = None):
    """``argv`` running with cwd ``cwd``: a ``Forked`` where it is ``forkable`` in ``env``,
    else a ``subprocess.Popen`` in ``env``. Its stdout and stderr go to the two files where
    given, else to temporary files (``Forked``) or text pipes (``Popen``)."""
    if forkable(argv, env):
        return Forked(argv, cwd, stdout_path, stderr_path)
    if stdout_path is None or stderr_path is None:
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
        return subprocess.Popen(argv, cwd=cwd, env=env, **pipes)
    with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr)


def _child(argv, cwd, out_path, err_path):
    """The forked process: ``python *argv[1:]`` with stdout and stderr in files."""
    for fd, path in ((1, out_path), (2, err_path)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(cwd)
    code = 0
    try:
        if argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv[1:])
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
            runpy.run_path(argv[1], run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # noqa: SLF001 -- as interpreter shutdown: non-daemon threads end
    atexit._run_exitfuncs()  # noqa: SLF001
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


class Forked:
    """``argv`` running in a child of the server; ``stdout``/``stderr`` are its output
    files' paths until it ends, then (``communicate``) their text."""

    def __init__(self, argv, cwd, stdout_path: str | None = None, stderr_path: str | None = None):
        self.args = list(argv)
        self._tmp = None
        if stdout_path is None or stderr_path is None:
            self._tmp = tempfile.mkdtemp(prefix="jssl-forked-")
            stdout_path = stdout_path or os.path.join(self._tmp, "stdout")
            stderr_path = stderr_path or os.path.join(self._tmp, "stderr")
        self._paths = (stdout_path, stderr_path)
        self._process = _context().Process(
            target=_child, args=(self.args, cwd, *self._paths), daemon=False
        )
        self._process.start()
        self.pid = self._process.pid
        self.returncode = None

    def poll(self):
        if self.returncode is None and not self._process.is_alive():
            self._process.join()
            self.returncode = self._process.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None):
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self):
        self._process.kill()

    def send_signal(self, signum: int):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self._process.join()
            raise
        texts = []
        for path in self._paths:
            with open(path, errors="replace") as f:
                texts.append(f.read())
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return texts[0], texts[1]
