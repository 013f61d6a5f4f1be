"""Sending side of a disk stream: connects to the receiver and streams data regions."""

from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time
from typing import Any

from ganeti import errors
from ganeti.storage.extents import DiskReader
from ganeti.transfer import (
    BLOCK_SIZE,
    COMPRESS_NONE,
    DEFAULT_COMPRESS_LEVEL,
    DEFAULT_PROGRESS_TIMEOUT,
    TransferAborted,
    TransferError,
)
from ganeti.transfer import protocol as proto
from ganeti.transfer.checksum import DEFAULT_ALGORITHM, BlockChecksum, block_pieces
from ganeti.transfer.node import BufferPool, Progress
from ganeti.transfer.node.ioprio import apply as apply_priority
from ganeti.transfer.priority import IoPriority
from ganeti.transfer.ratelimit import Limiter

_ZEROS = memoryview(bytes(BLOCK_SIZE))
_PROBE = 64
# Blocks read ahead of the socket
PIPELINE_DEPTH = 3
# Bytes per DATA frame (checksum blocks stay 4 MiB): the pipeline's buffers then
# stay in the CPU cache; on loopback 1 MiB took less CPU than 4, 2 or 0.25 MiB
SEND_PIECE = 1024 * 1024


def connect(host: str, port: int, ssl_ctx: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    """TCP connect plus TLS handshake, both bounded by ``timeout``."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise TransferError(f"Cannot connect to the receiver at {host}:{port}: {err}") from None
    try:
        return ssl_ctx.wrap_socket(raw, server_side=False)
    except (OSError, ValueError) as err:
        raw.close()
        raise TransferError(
            f"TLS handshake with the receiver at {host}:{port} failed: {err}") from None


def _is_zero(part: memoryview) -> bool:
    # Data blocks are rarely zero: look at both ends before comparing everything
    n = len(part)
    if part[:_PROBE] != _ZEROS[:min(_PROBE, n)] or part[-_PROBE:] != _ZEROS[:min(_PROBE, n)]:
        return False
    return part == _ZEROS[:n]


def _check_peer(sock: ssl.SSLSocket, frames: proto.FrameReader) -> None:
    """The receiver only talks mid-stream to report an error; notice it between frames."""
    if sock.pending() or select.select([sock], [], [], 0)[0]:
        ftype, payload = frames.read()
        if ftype == proto.ERROR:
            raise proto.PeerError(proto.error_message(payload))
        raise proto.ProtocolError(f"Unexpected {proto.FRAME_NAMES[ftype]} frame from the"
                                  " receiver")


def send_stream(sock: ssl.SSLSocket, reader: DiskReader, magic: str, *,
                compress: str = COMPRESS_NONE, level: int = DEFAULT_COMPRESS_LEVEL,
                progress: Progress | None = None,
                progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT,
                abort: threading.Event | None = None, skip_zeros: bool = True,
                checksum: str = DEFAULT_ALGORITHM, limiter: Limiter | None = None,
                io_priority: IoPriority | None = None) -> str:
    """Stream ``reader``'s data regions; returns the checksum of what was read.

    ``checksum`` is the algorithm (e.g. an old export's, to verify it on import).
    ``limiter`` caps the wire bytes (compressed, framed: what the network
    carries); ``io_priority`` is given to the thread that reads the source.
    """
    progress = progress or Progress()
    abort = abort or threading.Event()
    frames = proto.FrameReader(sock.recv_into)
    try:
        try:
            return _send(sock, frames, reader, magic, compress, level, progress,
                         progress_timeout, abort, skip_zeros, checksum, limiter,
                         io_priority)
        except (TransferError, errors.StorageError, OSError, ValueError):
            if abort.is_set():  # whatever broke, the abort was the cause
                raise TransferAborted("Transfer aborted") from None
            raise
    except proto.PeerError as err:
        raise TransferError(proto.peer_failure("Receiver", str(err))) from None
    except proto.ConnectionClosed:
        if abort.is_set():
            raise TransferAborted("Transfer aborted") from None
        raise TransferError("Receiver closed the connection before the end of the"
                            " stream") from None
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
        message = _peer_reason(sock, frames)
        if message is None:
            if abort.is_set():
                raise TransferAborted("Transfer aborted") from None
            message = proto.describe_io_error(err, "receiver", progress_timeout)
        raise TransferError(message) from None
    finally:
        if progress.finished is None:
            progress.finished = time.monotonic()


def _peer_reason(sock: ssl.SSLSocket, frames: proto.FrameReader) -> str | None:
    """After a send failure the receiver may have left an ERROR frame saying why."""
    try:
        sock.settimeout(1.0)
        ftype, payload = frames.read()
    except (OSError, ValueError, TransferError):
        return None
    if ftype == proto.ERROR:
        return proto.peer_failure("Receiver", proto.error_message(payload))
    return None


class _Producer(threading.Thread):
    """Reads, hashes and compresses blocks ahead of the thread that sends them."""

    def __init__(self, reader: DiskReader, codec: proto.Codec, skip_zeros: bool,
                 algorithm: str, depth: int = PIPELINE_DEPTH,
                 io_priority: IoPriority | None = None) -> None:
        super().__init__(name="transfer-read", daemon=True)
        self.io_priority = io_priority
        self.reader = reader
        self.codec = codec
        self.skip_zeros = skip_zeros
        self.algorithm = algorithm
        self.pool = BufferPool(depth, proto.DATA_PREFIX + SEND_PIECE)
        self.ready: queue.SimpleQueue[tuple[str, Any, int]] = queue.SimpleQueue()
        self.stop = threading.Event()

    def run(self) -> None:
        apply_priority(self.io_priority, "gnt-xfer-read")
        try:
            self.ready.put(("end", self._produce(), 0))
        except BaseException as err:
            self.ready.put(("error", err, 0))

    def _produce(self) -> str:
        summer = BlockChecksum(self.reader.size, algorithm=self.algorithm)
        for offset, length in block_pieces(self.reader.extents(), SEND_PIECE):
            buf = self.pool.get(self.stop.is_set)
            if buf is None:
                raise TransferAborted("Transfer aborted")
            view = memoryview(buf)
            body = view[proto.DATA_PREFIX:proto.DATA_PREFIX + length]
            got = self.reader.readinto(offset, body)
            if got != length:
                raise TransferError(f"Source {self.reader.path} shrank while reading at"
                                    f" {offset}")
            if self.skip_zeros and _is_zero(body):
                self.pool.put(buf)  # stays a hole on the receiver, hashes as a gap
                self.ready.put(("skip", None, got))
                continue
            summer.update(offset, body)
            encoding, payload = self.codec.compress(body)
            if encoding == proto.ENC_RAW:
                proto.pack_data_prefix(buf, offset, got, proto.ENC_RAW, got)
                self.ready.put(("buf", buf, got))
            else:
                self.pool.put(buf)
                frame = proto.data_prefix(offset, got, encoding, len(payload)) + payload
                self.ready.put(("frame", frame, got))
        return summer.finish()


def _send(sock: ssl.SSLSocket, frames: proto.FrameReader, reader: DiskReader, magic: str,
          compress: str, level: int, progress: Progress, progress_timeout: float,
          abort: threading.Event, skip_zeros: bool, algorithm: str,
          limiter: Limiter | None, io_priority: IoPriority | None) -> str:
    codec = proto.Codec(compress, level)
    sock.settimeout(progress_timeout)
    size = reader.size
    progress.size = size
    progress.data_total = reader.data_bytes()
    sock.sendall(proto.encode_json(
        proto.HEADER, proto.make_header(magic, size, progress.data_total, compress,
                                        algorithm)))
    frames.expect(proto.READY)
    producer = _Producer(reader, codec, skip_zeros, algorithm, io_priority=io_priority)
    producer.start()
    try:
        checksum, sent = _pump(sock, frames, producer, progress, abort, limiter)
    finally:
        producer.stop.set()
        producer.join()
    sock.sendall(proto.encode_json(proto.END, {"data_bytes": progress.bytes,
                                               "sent_bytes": sent, "checksum": checksum}))
    _, payload = frames.expect(proto.ACK)
    theirs = proto.decode_json(payload).get("checksum")
    # null: the receiver checked the byte counts but did not hash (not asked to)
    if theirs is not None and theirs != checksum:
        raise TransferError(f"Checksum mismatch: sent {checksum}, receiver computed {theirs}")
    return checksum


def _pump(sock: ssl.SSLSocket, frames: proto.FrameReader, producer: _Producer,
          progress: Progress, abort: threading.Event,
          limiter: Limiter | None = None) -> tuple[str, int]:
    """Send what the producer prepared; returns its checksum and the raw bytes sent."""
    sent = 0
    sendall: Any = sock.sendall
    if limiter is not None:
        def sendall(data: Any) -> None:
            limiter.sendall(sock.sendall, memoryview(data))
    while True:
        if abort.is_set():
            raise TransferAborted("Transfer aborted")
        kind, item, got = producer.ready.get()
        if kind == "end":
            return str(item), sent
        if kind == "error":
            raise item
        if kind != "skip":
            sent += got
            _check_peer(sock, frames)
            if kind == "buf":
                sendall(memoryview(item)[:proto.DATA_PREFIX + got])
                producer.pool.put(item)
                progress.wire_bytes += proto.DATA_PREFIX + got
            else:
                sendall(item)
                progress.wire_bytes += len(item)
        progress.bytes += got
