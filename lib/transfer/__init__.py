"""Disk transfer engine: one TLS stream per disk, node to node.

The receiving node listens, the sending node connects; both verify the peer
against a CA given by the caller (the cluster CA for local exports).  The
stream carries only the data regions of a disk, so sparse images stay sparse
and cost no bandwidth for their holes.  Submodules: ``protocol`` (framing),
``checksum`` (layout-independent disk checksum), ``sender``/``receiver`` (one
stream each), ``registry`` (node daemon table) and ``coordinator`` (master).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ganeti import errors

# Data frames never cross a checksum block, so block size = largest frame
BLOCK_SIZE = 4 * 1024 * 1024

COMPRESS_NONE = "none"
COMPRESS_ZSTD = "zstd"
COMPRESS_GZIP = "gzip"
COMPRESSIONS = frozenset({COMPRESS_NONE, COMPRESS_ZSTD, COMPRESS_GZIP})
DEFAULT_COMPRESS_LEVEL = 3

DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_LISTEN_TIMEOUT = 120.0
DEFAULT_PROGRESS_TIMEOUT = 60.0


class TransferError(errors.GenericError):
    """A stream failed; the message says why, for the operator."""


class TransferAborted(TransferError):
    """The transfer was aborted locally (by the master or the daemon)."""


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
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return max(0.0, end - self.started)

    def rate(self) -> float:
        elapsed = self.elapsed()
        return self.bytes / elapsed if elapsed > 0 else 0.0


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


__all__ = [
    "BLOCK_SIZE",
    "COMPRESSIONS",
    "COMPRESS_GZIP",
    "COMPRESS_NONE",
    "COMPRESS_ZSTD",
    "DEFAULT_COMPRESS_LEVEL",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_LISTEN_TIMEOUT",
    "DEFAULT_PROGRESS_TIMEOUT",
    "BufferPool",
    "Progress",
    "TransferAborted",
    "TransferError",
]
