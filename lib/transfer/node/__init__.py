"""Node side of the transfer engine: what runs in the node daemon.

``registry`` keeps the daemon's streams, ``sender``/``receiver`` run one
stream each and ``ioprio`` sets their threads' priorities.  Nothing here
imports :mod:`ganeti.transfer.master`; the master reaches it through RPC.
The types below are shared by those modules' threads, and
:func:`guard_stream` by both sides' error handling.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ganeti import errors
from ganeti.transfer import TransferAborted, TransferError
from ganeti.transfer import protocol as proto


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
        """A free buffer, or None once ``stopped()`` says the other side gave up.

        Stopped wins over a free buffer: a sender's compressed blocks hand theirs
        back at once, so a pool that looked only when empty never stopped its
        reader (which then read and compressed the rest of the disk after an
        abort, holding up the stream thread and registry.cleanup).
        """
        while not stopped():
            try:
                return self._free.get(timeout=0.05)
            except queue.Empty:
                continue
        return None

    def put(self, buf: bytearray) -> None:
        self._free.put(buf)


def guard_stream(sock: Any, peer: str, progress: Progress, progress_timeout: float,
                 abort: threading.Event, work: Callable[[], str],
                 peer_reason: Callable[[], str | None] = lambda: None) -> str:
    """Run one side of a stream; any failure becomes a TransferError saying why.

    The side that fails tells its ``peer`` ("sender" or "receiver") with an
    ERROR frame (best effort); a failure the peer reported, a closed
    connection or an abort is said as such.  ``peer_reason`` may find the
    ERROR frame the peer left before a socket error.
    """
    name = peer.capitalize()
    try:
        try:
            return work()
        except (TransferError, errors.StorageError, OSError, ValueError):
            if abort.is_set():  # whatever broke, the abort was the cause
                raise TransferAborted("Transfer aborted") from None
            raise
    except proto.PeerError as err:
        raise TransferError(proto.peer_failure(name, str(err))) from None
    except proto.ConnectionClosed:
        if abort.is_set():
            raise TransferAborted("Transfer aborted") from None
        raise TransferError(f"{name} closed the connection before the end of the"
                            " stream") from None
    except TransferError as err:  # protocol errors and aborts included
        proto.send_error(sock, str(err))
        raise
    except errors.StorageError as err:
        proto.send_error(sock, str(err))
        raise TransferError(str(err)) from None
    except (OSError, ValueError) as err:
        message = peer_reason()
        if message is None:
            if abort.is_set():
                raise TransferAborted("Transfer aborted") from None
            message = proto.describe_io_error(err, peer, progress_timeout)
        raise TransferError(message) from None
    finally:
        if progress.finished is None:
            progress.finished = time.monotonic()
