"""Worker threads fed from a priority queue of jobs.

Most urgent (lowest number) first, FIFO within one priority.  A job has at most
one live entry: re-adding it (new priority) supersedes the old entry, which is
skipped lazily when it reaches the top of the heap.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

_log = logging.getLogger(__name__)

_J = TypeVar("_J")


class WorkerPool(Generic[_J]):
    """Runs ``process(item)`` for queued items in ``size`` threads."""

    def __init__(self, size: int, process: Callable[[_J], None],
                 name: str = "jqueue-worker") -> None:
        if size < 1:
            raise ValueError("A worker pool needs at least one thread")
        self._size = size
        self._process = process
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, int, _J]] = []
        self._current: dict[int, int] = {}  # key -> sequence of its live entry
        self._seq = itertools.count()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for num in range(self._size):
            thread = threading.Thread(target=self._worker, name=f"{self._name}-{num}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def add(self, key: int, priority: int, item: _J) -> None:
        """Queue ``item`` (or move it if already queued)."""
        with self._cond:
            seq = next(self._seq)
            self._current[key] = seq
            heapq.heappush(self._heap, (priority, seq, key, item))
            self._cond.notify()

    def reprioritize(self, key: int, priority: int) -> bool:
        """Move a queued item; False when it is not waiting in the queue."""
        with self._cond:
            seq = self._current.get(key)
            if seq is None:
                return False
            item = next(entry[3] for entry in self._heap if entry[1] == seq)
            new_seq = next(self._seq)
            self._current[key] = new_seq
            heapq.heappush(self._heap, (priority, new_seq, key, item))
            return True

    def discard(self, key: int) -> None:
        with self._cond:
            self._current.pop(key, None)

    def queued(self) -> int:
        with self._cond:
            return len(self._current)

    def _next(self) -> _J | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                while self._heap:
                    _prio, seq, key, item = heapq.heappop(self._heap)
                    if self._current.get(key) == seq:
                        del self._current[key]
                        return item
                self._cond.wait()

    def _worker(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            try:
                self._process(item)
            except Exception:
                _log.exception("Worker failed to process %r", item)

    def stop(self) -> None:
        """Hand out no more items; running ones go on."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads to end after stop(); True if all ended in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        return not any(t.is_alive() for t in self._threads)
