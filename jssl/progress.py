"""Progress of the long phases outside the train loop (neighbour mining, relabelling).

A phase is a context manager that yields ``report(done, total)``: ``silent`` reports
nowhere (the library default); ``shown`` draws one transient terminal line on
process 0 with the count, the rate and the time left, removed when the phase ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from jssl import distributed

Report = Callable[[int, int], None]  # (done, total)
Phase = Callable[[str], contextlib.AbstractContextManager[Report]]


@contextlib.contextmanager
def silent(name: str) -> Iterator[Report]:
    """A phase that reports nowhere."""
    yield lambda done, total: None


@contextlib.contextmanager
def shown(name: str) -> Iterator[Report]:
    """A phase shown as one transient progress line on process 0 (tqdm, on stdout)."""
    if not distributed.is_primary():
        yield lambda done, total: None
        return
    from tqdm import tqdm

    bar = tqdm(desc=name, file=sys.stdout, leave=False, dynamic_ncols=True, unit="image")

    def report(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.refresh()  # every report is drawn (they come a batch or a chunk apart)

    try:
        yield report
    finally:
        bar.close()
