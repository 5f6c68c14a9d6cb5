"""The value checks of config fields: each takes a value and returns None (fine) or what
would work ("must be an integer >= 1").

The validation engine (``jssl.validation``) runs them over the base fields and over
the fields each method declares (``Method.fields``, beside the code that reads them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

MAX_STEPS = 2**31 - 1  # TrainState.step is int32
MAX_SIDE = 8192  # image, crop and tile sides
MAX_WIDTH = 1 << 20  # layer widths, prototypes, codes
MAX_SEED = 2**63 - 1

Check = Callable[[Any], str | None]


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
        v, (bool, np.bool_)
    )


def _range_text(lo, hi, lo_open=False, hi_open=False) -> str:
    lo, hi = (f"{x:g}" if isinstance(x, float) else x for x in (lo, hi))
    if hi is None:
        return f"> {lo}" if lo_open else f">= {lo}"
    if lo is None:
        return f"< {hi}" if hi_open else f"<= {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _in_range(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    if hi is not None and (v >= hi if hi_open else v > hi):
        return False
    return True


def integer(lo: int | None = 0, hi: int | None = None) -> Check:
    def check(v):
        if not is_int(v) or not _in_range(v, lo, hi, False, False):
            return f"must be an integer {_range_text(lo, hi)}"
        return None

    return check


def real(lo=None, hi=None, *, lo_open=False, hi_open=False) -> Check:
    """A finite number in the range (ints are numbers too)."""

    def check(v):
        ok = is_real(v) and math.isfinite(v) and _in_range(v, lo, hi, lo_open, hi_open)
        if not ok:
            where = _range_text(lo, hi, lo_open, hi_open) if (lo, hi) != (None, None) else ""
            return f"must be a finite number {where}".rstrip()
        return None

    return check


PROBABILITY = real(0.0, 1.0)
MOMENTUM = real(0.0, 1.0)
POSITIVE = real(0.0, lo_open=True)
NON_NEGATIVE = real(0.0)
SIZE = integer(1, MAX_SIDE)
EPOCHS = real(0.0, MAX_STEPS)
WIDTH = integer(1, MAX_WIDTH)


def boolean(v):
    return None if isinstance(v, (bool, np.bool_)) else "must be True or False"


def one_of(names: Sequence[str], what: str = "name") -> Check:
    def check(v):
        if not isinstance(v, str) or v not in names:
            return f"unknown {what}; use one of {', '.join(repr(n) for n in names)}"
        return None

    return check


def string(v):
    return None if isinstance(v, str) else "must be a string"


def nonempty_string(v):
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def pair(lo=0.0, hi=1.0, *, lo_open=True) -> Check:
    """(a, b) with lo < a <= b <= hi (lo <= a when not ``lo_open``): a range such as a scale."""
    op = "<" if lo_open else "<="

    def check(v):
        ok = (
            isinstance(v, (tuple, list))
            and len(v) == 2
            and all(is_real(x) and math.isfinite(x) for x in v)
            and all(_in_range(x, lo, hi, lo_open, False) for x in v)
            and v[0] <= v[1]
        )
        return None if ok else f"must be a pair (a, b) with {lo:g} {op} a <= b <= {hi:g}"

    return check


def numbers(check_one: Check, *, length: int | None = None, min_length: int = 0) -> Check:
    """A tuple whose every entry passes ``check_one`` (and of the given length)."""

    def check(v):
        if not isinstance(v, (tuple, list)):
            return "must be a tuple"
        if length is not None and len(v) != length:
            return f"must be a tuple of {length} entries"
        if len(v) < min_length:
            return (
                f"must be a tuple of at least {min_length} entr{'y' if min_length == 1 else 'ies'}"
            )
        for x in v:
            problem = check_one(x)
            if problem is not None:
                return f"every entry {problem}"
        return None

    return check


def names(v):
    ok = (
        isinstance(v, (tuple, list))
        and len(v) > 0
        and all(isinstance(x, str) and x.strip() for x in v)
    )
    return None if ok else "must be a non-empty tuple of names, e.g. \"('backbone',)\""


def jitter(v):
    """A colour jitter (brightness, contrast, saturation, hue)."""
    ok = (
        isinstance(v, (tuple, list))
        and len(v) == 4
        and all(is_real(x) and math.isfinite(x) and x >= 0 for x in v)
        and v[3] <= 0.5
    )
    return None if ok else "must be (brightness, contrast, saturation, hue), each >= 0, hue <= 0.5"


def show(value: Any, limit: int = 60) -> str:
    """A value as the command line would spell it, shortened."""
    if isinstance(value, ml_collections.ConfigDict):
        text = "{" + ", ".join(sorted(value.keys())) + "}"
    elif isinstance(value, (str, tuple, list)):
        text = repr(value)
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- config paths

MISSING = object()  # what ``get`` returns for a path the config does not have


def get(config, path: str):
    """The value at dotted ``path`` of a (nested) config, or MISSING."""
    node = config
    for part in path.split("."):
        try:
            if not hasattr(node, "keys") or part not in node:
                return MISSING
            node = node[part]
        except Exception:
            return MISSING
    return node


def problem_text(field: str, value: Any, what: str) -> str:
    """One problem's text: ``field=value: what would work``."""
    return f"{field}={show(value)}: {what}"


@dataclasses.dataclass(frozen=True)
class Added:
    """The check of a field added after runs were first saved, and what such a run did.

    A saved run whose config lacks the field resumes while the field keeps ``before``
    (the value that does what the run did), or, with ``inert_unless``, while that other
    field keeps its own ``before`` (the field changes nothing then: iBOT's sizes without
    iBOT's loss). ``jssl.resume.config_differences`` reads these.
    """

    check: Check
    before: Any = None
    inert_unless: str | None = None

    def __call__(self, v):
        return self.check(v)
