"""The on-disk cache of decoded data sets (one uncompressed ``.npz`` per data set and
options, written atomically) and of streamed tfds labels, under ``default_cache_dir()``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from absl import logging


def default_cache_dir() -> Path:
    """$JSSL_CACHE_DIR if set, else $XDG_CACHE_HOME/jssl, else ~/.cache/jssl."""
    env = os.environ.get("JSSL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "jssl"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` (``~`` expanded) if given, else ``default_cache_dir()``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``path``; None if it is missing or unreadable (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        return None
    except Exception as err:  # truncated or foreign file: rebuild it
        logging.warning("ignoring unreadable dataset cache %s (%s); decoding again", path, err)
        return None


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes atomically (temporary file + rename); a failure only logs a warning."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
            tmp = fh.name
            np.savez(fh, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as err:
        logging.warning("could not write dataset cache %s (%s); continuing without it", path, err)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
