"""Test setup: 8 fake CPU devices and one persistent XLA cache, set before JAX is imported.

The cache (a fresh temporary folder per pytest run, removed at exit) is in the
environment, so train.py subprocesses share it: a resumed, restarted or
re-evaluated run loads the executables an earlier run of the same program
compiled instead of compiling them again, which is most of a smoke run's time
on a 2-core CPU. Every compiled program is cached (no minimum compile time).
"""

import atexit
import os
import shutil
import tempfile

# LLVM optimisation level 0 for the CPU code XLA generates: the suite's time is
# mostly compilation of tiny programs, and -O0 compiles them much faster (a 37%
# shorter run of two test files) while computing the same IEEE results (no
# fast-math either way). Set XLA_FLAGS with another level to override it.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="jssl-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402

jax.config.update("jax_threefry_partitionable", True)
