"""Pausing the cyclic garbage collector while a big answer is alive (issue 20).

A query of 10,000 instances allocates some 70,000 lists that all stay alive
until the answer is sent (or, in a client, decoded and used); every few
hundred allocations the collector would traverse them again, and a process's
whole heap at each full collection (in the master: the configuration).  That
was most of such a query's time.  Nothing built there is cyclic garbage, and
what the answer holds is freed by reference counting once it is dropped.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_GC_LOCK = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside; pauses of several threads nest, and the
    collector's state before the first one (enabled or not) comes back after
    the last."""
    global _gc_pauses, _gc_was_enabled
    with _GC_LOCK:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
