"""XLA:CPU settings jssl runs with, put in ``XLA_FLAGS`` when jssl is imported.

XLA reads ``XLA_FLAGS`` once, when JAX starts its first backend, so these take effect
when ``import jssl`` comes before the first computation (``train.py`` and every ``python
-m jssl.*`` command import it first); afterwards they change nothing. A flag the user
already set in ``XLA_FLAGS`` is left as it is. Accelerators ignore ``xla_cpu_*`` flags.
Each flag is added only on the jaxlib releases it was measured on: XLA exits at its
first computation on a flag it does not know, and experimental flags are renamed.

- ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions): jaxlib 0.10's
  YNNPACK fusions of convolutions and their neighbours leave a fifth of the two cores
  waiting inside ops on the CPU step of a ResNet; XLA's own kernels keep both busy.
  ResNet-18 at batch 128 steps 1.5x faster without them, the width-16 ResNet about 5%
  (docs/results.md, "YNNPACK fusions off"). Results stay within float32 tolerance: the
  equivalence tests and ``jssl.check`` hold with either. To compile with jaxlib's own
  fusions, name the flag yourself:
  ``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` (the same
  program as no flag at all, on jaxlib 0.10.2).
"""

from __future__ import annotations

import importlib.metadata
import os

YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"  # the YNNPACK fusion types XLA:CPU uses
# flag name -> (value jssl prefers on the CPU, jaxlib versions measured with it: prefixes)
CPU_FLAGS = {YNN_FUSIONS: ("", ("0.10.",))}


def _jaxlib_version() -> str:
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return ""


def prefer_cpu_flags(environ=os.environ, jaxlib_version: str | None = None) -> str:
    """Adds each of ``CPU_FLAGS`` that ``environ["XLA_FLAGS"]`` does not name and that was
    measured on this jaxlib (default: the installed one); returns the new value."""
    version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
    flags = environ.get("XLA_FLAGS", "")
    named = {flag.split("=")[0] for flag in flags.split()}
    for name, (value, versions) in CPU_FLAGS.items():
        if f"--{name}" not in named and version.startswith(versions):
            flags = f"{flags} --{name}={value}".strip()
    if flags != environ.get("XLA_FLAGS", ""):
        environ["XLA_FLAGS"] = flags
    return flags
