"""The node daemon's table of running transfers (process-wide, thread-safe).

Each transfer runs in its own daemon thread; the master polls
:func:`status`, stops streams with :func:`abort` and forgets them with
:func:`cleanup`, which also removes a failed receiver's partial output.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ganeti.storage.extents import DiskReader
from ganeti.transfer import (
    COMPRESS_NONE,
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LISTEN_TIMEOUT,
    DEFAULT_PROGRESS_TIMEOUT,
    TransferAborted,
    TransferError,
    ratelimit,
)
from ganeti.transfer.checksum import DEFAULT_ALGORITHM
from ganeti.transfer.node import Progress
from ganeti.transfer.node.ioprio import apply as apply_priority
from ganeti.transfer.node.receiver import FileOutput, Listener, WriterFactory, receive_stream
from ganeti.transfer.node.sender import ChangeSource, connect, send_stream
from ganeti.transfer.priority import IoPriority

LOG = logging.getLogger(__name__)

ROLE_SEND = "send"
ROLE_RECEIVE = "receive"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# How long cleanup waits for an aborted stream thread to let go of its files
JOIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class StreamOptions:
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    listen_timeout: float = DEFAULT_LISTEN_TIMEOUT
    progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT
    compress_level: int = DEFAULT_COMPRESS_LEVEL
    # the sender's checksum algorithm (imports ask for the one the export recorded)
    checksum: str = DEFAULT_ALGORITHM
    # receivers: hash the received data too (TLS already protects it in transit)
    verify_receive: bool = False
    # senders: KiB/s of the export, shared by the streams of ``bwlimit_group``
    bwlimit: int = 0
    bwlimit_group: str | None = None
    # KiB/s of this node (0: none); None: this side does not count against it
    node_bwlimit: int | None = None
    io_priority: IoPriority | None = None
    # senders: ask the receiver for its base (the target holds an earlier export)
    incremental: bool = False

    def limits(self, role: str) -> dict[str, Any]:
        """What this side applies, for the master's status view."""
        return {"bwlimit": self.bwlimit if role == ROLE_SEND else 0,
                "node_bwlimit": self.node_bwlimit or 0,
                "ionice": None if self.io_priority is None else str(self.io_priority)}


@contextlib.contextmanager
def _limiter(options: StreamOptions, role: str, abort: threading.Event
             ) -> Iterator[ratelimit.Limiter | None]:
    """The buckets of one stream: its export's (senders) and its node's."""
    buckets = []
    with contextlib.ExitStack() as stack:
        if role == ROLE_SEND and options.bwlimit > 0:
            buckets.append(stack.enter_context(ratelimit.group_bucket(
                options.bwlimit_group, options.bwlimit * ratelimit.KIB)))
        if options.node_bwlimit is not None:
            node = ratelimit.node_bucket(options.node_bwlimit * ratelimit.KIB)
            if options.node_bwlimit > 0:
                buckets.append(node)
        yield ratelimit.Limiter(buckets, abort) if buckets else None


def check_id(transfer_id: Any) -> str:
    if not isinstance(transfer_id, str) or not _ID_RE.match(transfer_id):
        raise TransferError(f"Invalid transfer id {transfer_id!r}")
    return transfer_id


class Transfer:
    """One stream in a thread; status readable at any time."""

    def __init__(self, transfer_id: str, role: str, label: str,
                 remove_output: Callable[[], None] | None = None) -> None:
        self.id = transfer_id
        self.role = role
        self.label = label
        self.progress = Progress()
        self.done = threading.Event()
        self.abort_event = threading.Event()
        self.success: bool | None = None
        self.checksum: str | None = None
        self.error: str | None = None
        self._remove_output = remove_output
        self._sock: ssl.SSLSocket | None = None
        self._listener: Listener | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.port: int | None = None  # receivers: where they listen
        self.limits: dict[str, Any] = {}

    def start(self, work: Callable[[Transfer], str]) -> None:
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True,
                                        name=f"transfer-{self.role}-{self.id}")
        try:
            self._thread.start()
        except RuntimeError as err:  # out of threads: leave nothing behind
            self._close_sockets(force=True)
            _forget(self.id)
            raise TransferError(f"Cannot start a thread for transfer {self.id}: {err}") \
                from None

    def _run(self, work: Callable[[Transfer], str]) -> None:
        try:
            checksum = work(self)
        except TransferAborted as err:
            self._fail(str(err))
        except TransferError as err:
            self._fail(str(err))
        except Exception as err:
            LOG.exception("Transfer %s failed unexpectedly", self.id)
            self._fail(f"{type(err).__name__}: {err}")
        else:
            self.checksum = checksum
            self.success = True
            LOG.info("Transfer %s (%s %s) finished: %d bytes, %s", self.id, self.role,
                     self.label, self.progress.bytes, checksum)
        finally:
            self._close_sockets(force=self.abort_event.is_set())
            if self.progress.finished is None:
                self.progress.finished = time.monotonic()
            self.done.set()

    def _fail(self, message: str) -> None:
        self.error = message
        self.success = False
        LOG.warning("Transfer %s (%s %s) failed: %s", self.id, self.role, self.label, message)
        if self.role == ROLE_RECEIVE:
            self.remove_output()

    def remove_output(self) -> None:
        if self._remove_output is not None:
            try:
                self._remove_output()
            except OSError as err:
                LOG.warning("Cannot remove partial output of %s: %s", self.id, err)

    def attach_socket(self, sock: ssl.SSLSocket) -> None:
        with self._lock:
            self._sock = sock
            aborted = self.abort_event.is_set()
        if aborted:
            self._shutdown()

    def attach_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listener = listener

    def _shutdown(self) -> None:
        # socket.socket.shutdown, not SSLSocket's: that one drops the TLS state
        # under the stream thread's feet
        with self._lock:
            sock, listener = self._sock, self._listener
        if listener is not None:
            listener.close()
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _close_sockets(self, force: bool) -> None:
        with self._lock:
            sock, listener = self._sock, self._listener
            self._sock = self._listener = None
        if listener is not None:
            listener.close()
        if sock is not None:
            if force:  # reset, so a peer blocked in send notices at once
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()

    def abort(self) -> None:
        self.abort_event.set()
        self._shutdown()

    def join(self, timeout: float) -> bool:
        return self.done.wait(timeout)

    def status(self) -> dict[str, Any]:
        prog = self.progress
        return {"role": self.role, "label": self.label, "done": self.done.is_set(),
                "success": self.success, "bytes": prog.bytes, "total": prog.size,
                "data_total": prog.data_total, "wire_bytes": prog.wire_bytes,
                "rate": round(prog.rate(), 1), "elapsed": round(prog.elapsed(), 3),
                "checksum": self.checksum, "error": self.error, "mode": prog.mode,
                "read_bytes": prog.read_bytes, "changed_bytes": prog.changed_bytes,
                "base": prog.base, "base_copy": prog.base_copy, **self.limits}


_LOCK = threading.Lock()
_TRANSFERS: dict[str, Transfer] = {}


def _register(transfer: Transfer) -> None:
    with _LOCK:
        if transfer.id in _TRANSFERS:
            raise TransferError(f"Transfer {transfer.id} already exists on this node")
        _TRANSFERS[transfer.id] = transfer


def get(transfer_id: str) -> Transfer | None:
    with _LOCK:
        return _TRANSFERS.get(transfer_id)


def start_receive(transfer_id: str, label: str, address: str, ssl_ctx: ssl.SSLContext,
                  magic: str, size: int | None, open_writer: WriterFactory,
                  remove_output: Callable[[], None] | None, options: StreamOptions,
                  port: int = 0, port_range: tuple[int, int] | None = None,
                  output: FileOutput | None = None) -> Transfer:
    """Listen now (so the port can be returned) and receive in a thread.

    ``output``: a file destination (its index, and the base it may start from).
    """
    transfer = Transfer(check_id(transfer_id), ROLE_RECEIVE, label, remove_output)
    transfer.limits = options.limits(ROLE_RECEIVE)
    _register(transfer)
    try:
        listener = Listener(address, port, port_range)
    except TransferError:
        _forget(transfer.id)
        raise
    transfer.attach_listener(listener)

    def work(tr: Transfer) -> str:
        apply_priority(options.io_priority, "gnt-xfer-recv")
        sock = listener.accept(ssl_ctx, options.listen_timeout, tr.abort_event,
                               min(options.connect_timeout, options.progress_timeout))
        tr.attach_socket(sock)
        with _limiter(options, ROLE_RECEIVE, tr.abort_event) as limiter:
            return receive_stream(sock, magic, size, open_writer, progress=tr.progress,
                                  progress_timeout=options.progress_timeout,
                                  abort=tr.abort_event, verify=options.verify_receive,
                                  limiter=limiter, io_priority=options.io_priority,
                                  output=output)

    transfer.port = listener.port
    transfer.start(work)
    return transfer


def start_send(transfer_id: str, label: str, host: str, port: int,
               ssl_ctx: ssl.SSLContext, magic: str, open_reader: Callable[[], DiskReader],
               compress: str, options: StreamOptions,
               changes: ChangeSource | None = None) -> Transfer:
    """Connect and send in a thread; ``changes``: the source's changed ranges, if known."""
    transfer = Transfer(check_id(transfer_id), ROLE_SEND, label)
    transfer.limits = options.limits(ROLE_SEND)
    _register(transfer)

    def work(tr: Transfer) -> str:
        apply_priority(options.io_priority, "gnt-xfer-send")
        with open_reader() as reader, \
                _limiter(options, ROLE_SEND, tr.abort_event) as limiter:
            tr.progress.size = reader.size
            sock = connect(host, port, ssl_ctx, options.connect_timeout)
            tr.attach_socket(sock)
            return send_stream(sock, reader, magic, compress=compress or COMPRESS_NONE,
                               level=options.compress_level, progress=tr.progress,
                               progress_timeout=options.progress_timeout,
                               abort=tr.abort_event, checksum=options.checksum,
                               limiter=limiter, io_priority=options.io_priority,
                               incremental=options.incremental, changes=changes)

    transfer.start(work)
    return transfer


def status(transfer_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Status of the known ids; unknown ids are left out (the master notices)."""
    with _LOCK:
        found = {tid: _TRANSFERS[tid] for tid in transfer_ids if tid in _TRANSFERS}
    return {tid: tr.status() for tid, tr in found.items()}


def abort(transfer_ids: Iterable[str]) -> list[str]:
    with _LOCK:
        found = [_TRANSFERS[tid] for tid in transfer_ids if tid in _TRANSFERS]
    for tr in found:
        if not tr.done.is_set():
            tr.abort()
    return [tr.id for tr in found]


def _forget(transfer_id: str) -> None:
    with _LOCK:
        _TRANSFERS.pop(transfer_id, None)


def cleanup(transfer_ids: Iterable[str], join_timeout: float = JOIN_TIMEOUT) -> list[str]:
    """Abort what still runs, remove failed receivers' output and forget the transfers."""
    with _LOCK:
        found = [_TRANSFERS[tid] for tid in transfer_ids if tid in _TRANSFERS]
    for tr in found:
        if not tr.done.is_set():
            tr.abort()
    cleaned = []
    for tr in found:
        if not tr.join(join_timeout):
            LOG.warning("Transfer %s did not stop within %gs; kept for a later cleanup",
                        tr.id, join_timeout)
            continue
        if tr.role == ROLE_RECEIVE and not tr.success:
            tr.remove_output()
        _forget(tr.id)
        cleaned.append(tr.id)
    return cleaned


def list_transfers() -> dict[str, dict[str, Any]]:
    with _LOCK:
        found = dict(_TRANSFERS)
    return {tid: tr.status() for tid, tr in found.items()}
