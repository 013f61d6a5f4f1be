"""Node side of the transfer engine: what runs in the node daemon.

``registry`` keeps the daemon's streams, ``sender``/``receiver`` run one
stream each and ``ioprio`` sets their threads' priorities.  Nothing here
imports :mod:`ganeti.transfer.master`; the master reaches it through RPC.
The two types below are shared by those modules' threads.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Progress:
    """Counters shared by a stream's thread and status queries.

    Only the stream thread writes; readers may see a slightly stale value,
    which is fine for progress reporting.
    """

    size: int = 0
    data_total: int = 0
    bytes: int = 0
    wire_bytes: int = 0
    # incremental streams (doc/transfer-protocol.md, "Incremental streams"): the
    # sender's mode, bytes read from the source, raw bytes of DATA and ZERO
    # frames, the base generation and how the receiver copied the base dump
    mode: str | None = None
    read_bytes: int = 0
    changed_bytes: int = 0
    base: str | None = None
    base_copy: str | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return max(0.0, end - self.started)

    def rate(self) -> float:
        elapsed = self.elapsed()
        return self.bytes / elapsed if elapsed > 0 else 0.0


MODE_FULL = "full"
MODE_HASH = "hash"
MODE_EXTENTS = "extents"
MODES = frozenset({MODE_FULL, MODE_HASH, MODE_EXTENTS})


class BufferPool:
    """A few block buffers handed between a stream's I/O thread and its helper.

    Reading, hashing and writing run beside the TLS stream, so the checksum
    costs little wall time where a core is free.
    """

    def __init__(self, count: int, size: int) -> None:
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(bytearray(size))

    def get(self, stopped: Callable[[], bool]) -> bytearray | None:
        """A free buffer, or None once ``stopped()`` says the other side gave up."""
        while True:
            try:
                return self._free.get(timeout=0.05)
            except queue.Empty:
                if stopped():
                    return None

    def put(self, buf: bytearray) -> None:
        self._free.put(buf)
