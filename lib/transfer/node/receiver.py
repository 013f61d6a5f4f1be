"""Receiving side of a disk stream: listens, checks the header, writes data regions."""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from ganeti import errors
from ganeti.server import connlimit
from ganeti.storage.extents import DiskWriter
from ganeti.transfer import (
    BLOCK_SIZE,
    COMPRESS_NONE,
    DEFAULT_LISTEN_TIMEOUT,
    DEFAULT_PROGRESS_TIMEOUT,
    TransferAborted,
    TransferError,
)
from ganeti.transfer import protocol as proto
from ganeti.transfer.checksum import BlockChecksum, algorithm_of
from ganeti.transfer.node import BufferPool, Progress
from ganeti.transfer.node.ioprio import apply as apply_priority
from ganeti.transfer.priority import IoPriority
from ganeti.transfer.ratelimit import Limiter

# Opens the destination once the header is accepted; gets the disk size in bytes
WriterFactory = Callable[[int], DiskWriter]

HANDSHAKE_TIMEOUT = 15.0
# Handshakes in progress at once while waiting for the sender (strangers included)
MAX_PENDING_HANDSHAKES = 16
# How often a waiting listener looks at the abort flag
ABORT_POLL = 0.5
# Blocks received ahead of the disk writes
PIPELINE_DEPTH = 3


class Listener:
    """A listening socket for one stream; bound before the sender is told the port."""

    def __init__(self, address: str, port: int = 0,
                 port_range: tuple[int, int] | None = None) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        candidates = range(port_range[0], port_range[1] + 1) if port_range else [port]
        last_err: OSError | None = None
        for candidate in candidates:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.bind((address, candidate))
                sock.listen(4)
            except OSError as err:
                sock.close()
                last_err = err
                continue
            self._sock = sock
            break
        else:
            where = (f"ports {port_range[0]}-{port_range[1]}" if port_range
                     else f"port {port}")
            raise TransferError(f"Cannot listen on {address} {where}: {last_err}")
        self.address = address
        self.port: int = self._sock.getsockname()[1]
        self._closed = False

    def accept(self, ssl_ctx: ssl.SSLContext, timeout: float = DEFAULT_LISTEN_TIMEOUT,
               abort: threading.Event | None = None,
               handshake_timeout: float = HANDSHAKE_TIMEOUT) -> ssl.SSLSocket:
        """The first peer that passes the TLS handshake; strangers are turned away.

        Handshakes run side by side (at most ``MAX_PENDING_HANDSHAKES``, the
        oldest dropped for a newcomer), each with a deadline for the whole of
        it: strangers that connect first, stay silent or drip bytes cannot
        keep the real sender out.
        """
        deadline = time.monotonic() + timeout
        rejected: list[str] = []
        pending: dict[ssl.SSLSocket, tuple[float, str]] = {}
        self._sock.setblocking(False)
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if abort is not None and abort.is_set():
                    raise TransferAborted("Transfer aborted while waiting for the sender")
                for tls, (until, peer) in list(pending.items()):
                    if now >= until:
                        rejected.append(f"{peer}: TLS handshake not finished within"
                                        f" {handshake_timeout:g}s")
                        self._drop(sel, pending, tls)
                if now >= deadline:
                    extra = f" (refused: {'; '.join(rejected[-3:])})" if rejected else ""
                    raise TransferError(f"No sender connected within {timeout:g}s{extra}")
                wake = min([deadline, now + ABORT_POLL, *(u for u, _ in pending.values())])
                for key, _ in sel.select(max(0.0, wake - now)):
                    if key.fileobj is self._sock:
                        self._accept_ready(sel, pending, ssl_ctx, handshake_timeout,
                                           deadline, abort)
                        continue
                    ready = key.fileobj
                    assert isinstance(ready, ssl.SSLSocket)
                    if self._advance(sel, pending, ready, rejected):
                        sel.unregister(ready)
                        del pending[ready]
                        ready.setblocking(True)
                        ready.settimeout(handshake_timeout)
                        self.close()
                        return ready
        finally:
            for tls in list(pending):
                self._drop(sel, pending, tls)
            sel.close()

    def _accept_ready(self, sel: selectors.BaseSelector,
                      pending: dict[ssl.SSLSocket, tuple[float, str]], ssl_ctx: ssl.SSLContext,
                      handshake_timeout: float, deadline: float,
                      abort: threading.Event | None) -> None:
        while True:
            try:
                conn, peer = self._sock.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if abort is not None and abort.is_set():
                    raise TransferAborted("Transfer aborted while waiting for the sender") \
                        from None
                raise TransferError(f"Listening socket failed: {err}") from None
            if len(pending) >= MAX_PENDING_HANDSHAKES:
                self._drop(sel, pending, min(pending, key=lambda t: pending[t][0]))
            conn.setblocking(False)
            try:
                tls = ssl_ctx.wrap_socket(conn, server_side=True,
                                          do_handshake_on_connect=False)
            except (OSError, ValueError):
                conn.close()
                continue
            until = min(time.monotonic() + handshake_timeout, deadline)
            pending[tls] = (until, str(peer[0]))
            sel.register(tls, selectors.EVENT_READ)

    @staticmethod
    def _advance(sel: selectors.BaseSelector,
                 pending: dict[ssl.SSLSocket, tuple[float, str]], tls: ssl.SSLSocket,
                 rejected: list[str]) -> bool:
        """One step of a handshake; True once it is complete."""
        try:
            tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            sel.modify(tls, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            sel.modify(tls, selectors.EVENT_WRITE)
        except (OSError, ValueError) as err:
            rejected.append(f"{pending[tls][1]}: {err}")
            Listener._drop(sel, pending, tls)
        return False

    @staticmethod
    def _drop(sel: selectors.BaseSelector,
              pending: dict[ssl.SSLSocket, tuple[float, str]], tls: ssl.SSLSocket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(tls)
        pending.pop(tls, None)
        tls.close()

    def close(self) -> None:
        """Also wakes up a thread blocked in :meth:`accept` (used for aborts)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def receive_stream(sock: ssl.SSLSocket, magic: str, expected_size: int | None,
                   open_writer: WriterFactory, *, progress: Progress | None = None,
                   progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT,
                   abort: threading.Event | None = None, verify: bool = False,
                   limiter: Limiter | None = None,
                   io_priority: IoPriority | None = None) -> str:
    """Receive one stream into the writer ``open_writer`` returns; returns the checksum.

    Nothing is opened or written before the header (magic, version, size)
    has been accepted.  The byte counts are always checked; ``verify`` also
    hashes the received data and compares it with the sender's checksum,
    otherwise the sender's checksum is returned as is (TLS protected it).
    ``limiter`` paces the reads from the socket (the node's bandwidth limit);
    ``io_priority`` is given to the thread that writes the destination.
    """
    progress = progress or Progress()
    abort = abort or threading.Event()
    recv_into = sock.recv_into if limiter is None else limiter.recv_into(sock.recv_into)
    frames = proto.FrameReader(recv_into)
    try:
        try:
            return _receive(sock, frames, magic, expected_size, open_writer, progress,
                            progress_timeout, abort, verify, io_priority)
        except (TransferError, errors.StorageError, OSError, ValueError):
            if abort.is_set():  # whatever broke, the abort was the cause
                raise TransferAborted("Transfer aborted") from None
            raise
    except proto.PeerError as err:
        raise TransferError(proto.peer_failure("Sender", str(err))) from None
    except proto.ConnectionClosed:
        if abort.is_set():
            raise TransferAborted("Transfer aborted") from None
        raise TransferError("Sender closed the connection before the end of the stream") \
            from None
    except (proto.ProtocolError, TransferAborted) as err:
        proto.send_error(sock, str(err))
        raise
    except TransferError as err:
        proto.send_error(sock, str(err))
        raise
    except errors.StorageError as err:
        proto.send_error(sock, str(err))
        raise TransferError(str(err)) from None
    except (OSError, ValueError) as err:
        if abort.is_set():
            raise TransferAborted("Transfer aborted") from None
        raise TransferError(proto.describe_io_error(err, "sender", progress_timeout)) \
            from None
    finally:
        if progress.finished is None:
            progress.finished = time.monotonic()


def _receive(sock: ssl.SSLSocket, frames: proto.FrameReader, magic: str,
             expected_size: int | None, open_writer: WriterFactory, progress: Progress,
             progress_timeout: float, abort: threading.Event, verify: bool,
             io_priority: IoPriority | None = None) -> str:
    sock.settimeout(progress_timeout)
    # the whole header within the progress timeout, not just each read of it
    deadline = connlimit.WATCHDOG.arm(sock, progress_timeout)
    try:
        _, payload = frames.expect(proto.HEADER)
    except (TransferError, OSError, ValueError):
        if deadline.expired:
            raise TransferError("No progress from the sender: no complete header within"
                                f" {progress_timeout:g}s") from None
        raise
    finally:
        connlimit.WATCHDOG.cancel(deadline)
    header = proto.decode_json(payload)
    proto.check_header(header, magic, expected_size)
    size: int = header["size"]
    progress.size = size
    data_total = header.get("data_total")
    progress.data_total = data_total if isinstance(data_total, int) else size
    algorithm = str(header["checksum"])
    with open_writer(size) as writer:
        return _receive_data(sock, frames, writer, size, progress, abort,
                             algorithm if verify else None, io_priority)


class _Writer(threading.Thread):
    """Decompresses, writes (and hashes, if asked) while the stream thread keeps reading."""

    def __init__(self, writer: DiskWriter, size: int, progress: Progress,
                 algorithm: str | None, depth: int = PIPELINE_DEPTH,
                 io_priority: IoPriority | None = None) -> None:
        super().__init__(name="transfer-write", daemon=True)
        self.io_priority = io_priority
        self.writer = writer
        self.progress = progress
        self.summer = None if algorithm is None else BlockChecksum(size,
                                                                   algorithm=algorithm)
        self.received = 0  # raw bytes of the DATA frames
        self.codec = proto.Codec(COMPRESS_NONE, 0)
        self.pool = BufferPool(depth, proto.MAX_PAYLOAD)
        self.work: queue.SimpleQueue[tuple[bytearray, memoryview] | None] = \
            queue.SimpleQueue()
        self.error: BaseException | None = None
        self.pos = 0

    def run(self) -> None:
        apply_priority(self.io_priority, "gnt-xfer-write")
        while (item := self.work.get()) is not None:
            buf, payload = item
            if self.error is None:
                try:
                    self._store(payload)
                except BaseException as err:
                    self.error = err
            self.pool.put(buf)

    def _store(self, payload: memoryview) -> None:
        offset, raw_len, encoding, body = proto.decode_data(payload)
        data = self.codec.decompress(encoding, body, raw_len)
        if not self.writer.holes_are_zero and offset > self.pos:
            self.writer.write_zeros(self.pos, offset - self.pos)
        self.writer.write_at(offset, data)
        if self.summer is not None:
            self.summer.update(offset, data)
        self.pos = offset + raw_len
        self.received += raw_len
        self.progress.bytes += raw_len

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _receive_data(sock: ssl.SSLSocket, frames: proto.FrameReader, writer: DiskWriter,
                  size: int, progress: Progress, abort: threading.Event,
                  algorithm: str | None, io_priority: IoPriority | None = None) -> str:
    """Store the data frames; ``algorithm`` None: check byte counts, do not hash."""
    if writer.size < size:
        raise TransferError(f"Destination {writer.path} has {writer.size} bytes,"
                            f" the stream {size}")
    sock.sendall(proto.encode_json(proto.READY, {}))
    worker = _Writer(writer, size, progress, algorithm, io_priority=io_priority)
    worker.start()
    try:
        payload = _read_data(frames, worker, size, progress, abort)
    finally:
        worker.work.put(None)
        worker.join()
    worker.check()
    end = proto.decode_json(payload)
    theirs = _check_end(end, worker.received)
    if not writer.holes_are_zero and worker.pos < size:
        writer.write_zeros(worker.pos, size - worker.pos)
    writer.fsync()
    sent = end.get("data_bytes")
    if isinstance(sent, int) and sent > progress.bytes:
        progress.bytes = sent  # zero blocks the sender skipped count as done
    if worker.summer is None:
        sock.sendall(proto.encode_json(proto.ACK, {"checksum": None, "ok": True}))
        return theirs
    checksum = worker.summer.finish()
    sock.sendall(proto.encode_json(proto.ACK, {"checksum": checksum, "ok": theirs == checksum}))
    if theirs != checksum:
        raise TransferError(f"Checksum mismatch: sender {theirs}, received data {checksum}")
    return checksum


def _check_end(end: dict[str, Any], received: int) -> str:
    """The sender's checksum from END, once its byte count matches what arrived."""
    theirs = end.get("checksum")
    if not isinstance(theirs, str):
        raise proto.ProtocolError(f"END frame: invalid checksum {theirs!r}")
    try:
        algorithm_of(theirs)
    except ValueError as err:
        raise proto.ProtocolError(f"END frame: {err}") from None
    sent = end.get("sent_bytes")
    if isinstance(sent, bool) or not isinstance(sent, int):
        raise proto.ProtocolError(f"END frame: invalid sent_bytes {sent!r}")
    if sent != received:
        raise TransferError(f"Byte count mismatch: the sender sent {sent} data bytes,"
                            f" {received} arrived")
    return theirs


def _read_data(frames: proto.FrameReader, worker: _Writer, size: int, progress: Progress,
               abort: threading.Event) -> memoryview:
    """Hand DATA frames to the writer until END; returns the END payload."""
    pos = 0
    while True:
        if abort.is_set():
            raise TransferAborted("Transfer aborted")
        worker.check()
        buf = worker.pool.get(lambda: worker.error is not None or abort.is_set())
        if buf is None:
            continue  # the loop top reports why
        ftype, payload = frames.expect(proto.DATA, proto.END, into=memoryview(buf))
        if ftype == proto.END:
            worker.pool.put(buf)
            return memoryview(bytes(payload))
        offset, raw_len, _, _ = proto.decode_data(payload)
        if offset < pos or raw_len > BLOCK_SIZE or offset + raw_len > size:
            worker.pool.put(buf)
            raise proto.ProtocolError(
                f"Data frame at {offset} (+{raw_len}) is out of order or beyond the disk"
                f" end ({size})")
        pos = offset + raw_len
        progress.wire_bytes += proto.FRAME_HEAD.size + len(payload)
        worker.work.put((buf, payload))
