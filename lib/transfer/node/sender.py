"""Sending side of a disk stream: connects to the receiver and streams data regions.

Three modes per stream (doc/transfer-protocol.md, "Incremental streams"):
``full`` sends every data region; with a base on the receiver, ``hash`` reads
and hashes every block and sends the blocks whose digest differs from the
base's, and ``extents`` reads only the blocks a :class:`ChangeSource` says
were touched and sends only the changed ranges.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ganeti import errors
from ganeti.backup.blockindex import checksum_of
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
from ganeti.transfer.checksum import (
    DEFAULT_ALGORITHM,
    BlockChecksum,
    algorithm_of,
    block_digest,
    block_pieces,
    zero_digest,
)
from ganeti.transfer.node import (
    MODE_EXTENTS,
    MODE_FULL,
    MODE_HASH,
    BufferPool,
    Progress,
    guard_stream,
)
from ganeti.transfer.node.ioprio import apply as apply_priority
from ganeti.transfer.priority import IoPriority
from ganeti.transfer.ratelimit import Limiter

LOG = logging.getLogger(__name__)

_ZEROS = memoryview(bytes(BLOCK_SIZE))
_PROBE = 64
# Blocks read ahead of the socket
PIPELINE_DEPTH = 3
# Bytes per DATA frame (checksum blocks stay 4 MiB): the pipeline's buffers then
# stay in the CPU cache; on loopback 1 MiB took less CPU than 4, 2 or 0.25 MiB
SEND_PIECE = 1024 * 1024


class ChangeSource(Protocol):
    """What changed in the source since its export base (the storage driver knows)."""

    def changed_ranges(self, base_checksum: str) -> list[tuple[int, int]] | None:
        """Sorted, merged ``(offset, length)`` ranges that may differ from the base whose
        content has ``base_checksum``; None: no such base here, or cannot tell."""


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
                io_priority: IoPriority | None = None, incremental: bool = False,
                changes: ChangeSource | None = None) -> str:
    """Stream ``reader``'s data regions; returns the checksum of what was read.

    ``checksum`` is the algorithm (e.g. an old export's, to verify it on import).
    ``limiter`` caps the wire bytes (compressed, framed: what the network
    carries); ``io_priority`` is given to the thread that reads the source.
    ``incremental`` asks the receiver for its base; ``changes`` then tells the
    changed ranges (extents mode), otherwise every block is hashed.
    """
    progress = progress or Progress()
    abort = abort or threading.Event()
    frames = proto.FrameReader(sock.recv_into)
    return guard_stream(
        sock, "receiver", progress, progress_timeout, abort,
        lambda: _send(sock, frames, reader, magic, compress, level, progress,
                      progress_timeout, abort, skip_zeros, checksum, limiter, io_priority,
                      incremental, changes),
        lambda: _peer_reason(sock, frames))


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


# What the producer hands to the socket thread: (kind, item, raw bytes of the
# frame, bytes of the source done); kinds: "buf" (a pool buffer holding a raw
# DATA frame), "zframe" ((compressed DATA frame, the pool buffer it holds until it
# is sent: the pool bounds the frames in flight)), "frame" (bytes: a ZERO frame),
# "done" (nothing to send), "end", "error"
_Item = tuple[str, Any, int, int]


class _Plan:
    """How one stream is sent, decided once the receiver answered READY."""

    def __init__(self, mode: str, base: bytes | None = None,
                 ranges: list[tuple[int, int]] | None = None,
                 every_block: bool = False) -> None:
        self.mode = mode
        self.base = base          # the base's block digests
        self.ranges = ranges      # extents mode: what changed
        self.every_block = every_block  # the destination holds a base we cannot use


class _Producer(threading.Thread):
    """Reads, hashes and compresses blocks ahead of the thread that sends them."""

    def __init__(self, reader: DiskReader, codec: proto.Codec, skip_zeros: bool,
                 algorithm: str, depth: int = PIPELINE_DEPTH,
                 io_priority: IoPriority | None = None, plan: _Plan | None = None,
                 progress: Progress | None = None) -> None:
        super().__init__(name="transfer-read", daemon=True)
        self.io_priority = io_priority
        self.reader = reader
        self.codec = codec
        self.skip_zeros = skip_zeros
        self.algorithm = algorithm
        self.plan = plan or _Plan(MODE_FULL)
        self.progress = progress or Progress()
        self.pool = BufferPool(depth, proto.DATA_PREFIX + SEND_PIECE)
        self.ready: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self.stop = threading.Event()

    def run(self) -> None:
        apply_priority(self.io_priority, "gnt-xfer-read")
        try:
            if self.plan.mode == MODE_FULL and not self.plan.every_block:
                result = self._produce()
            else:
                result = self._produce_blocks()
            self.ready.put(("end", result, 0, 0))
        except BaseException as err:
            self.ready.put(("error", err, 0, 0))

    def _read(self, offset: int, into: memoryview) -> None:
        got = self.reader.readinto(offset, into)
        self.progress.read_bytes += got
        if got != len(into):
            raise TransferError(f"Source {self.reader.path} shrank while reading at"
                                f" {offset}")

    def _data(self, offset: int, part: memoryview, buf: bytearray | None = None) -> None:
        """Queue ``part`` as a DATA frame (``buf``: the pool buffer it already lies in)."""
        if self.stop.is_set():  # before the costly part: a stopped stream compresses nothing
            raise TransferAborted("Transfer aborted")
        got = len(part)
        in_pool = buf is not None
        # a compressed frame keeps a pool buffer too, or a reader faster than the
        # network would queue compressed frames without bound
        buf = buf if buf is not None else self._buffer()
        encoding, payload = self.codec.compress(part)
        done = got if self.plan.mode == MODE_FULL else 0
        if encoding == proto.ENC_RAW:
            if not in_pool:
                buf[proto.DATA_PREFIX:proto.DATA_PREFIX + got] = part
            proto.pack_data_prefix(buf, offset, got, proto.ENC_RAW, got)
            self.ready.put(("buf", buf, got, done))
            return
        frame = proto.data_prefix(offset, got, encoding, len(payload)) + payload
        self.ready.put(("zframe", (frame, buf), got, done))

    def _buffer(self) -> bytearray:
        buf = self.pool.get(self.stop.is_set)
        if buf is None:
            raise TransferAborted("Transfer aborted")
        return buf

    def _produce(self) -> tuple[str, bytes]:
        summer = BlockChecksum(self.reader.size, algorithm=self.algorithm, keep_digests=True)
        for offset, length in block_pieces(self.reader.extents(), SEND_PIECE):
            buf = self._buffer()
            body = memoryview(buf)[proto.DATA_PREFIX:proto.DATA_PREFIX + length]
            self._read(offset, body)
            if self.skip_zeros and _is_zero(body):
                self.pool.put(buf)  # stays a hole on the receiver, hashes as a gap
                self.ready.put(("done", None, 0, length))
                continue
            summer.update(offset, body)
            self._data(offset, body, buf)
        assert summer.digests is not None
        return summer.finish(), bytes(summer.digests)

    def _produce_blocks(self) -> tuple[str, bytes]:
        """Block by block against the base's digests (hash and extents modes)."""
        size, plan = self.reader.size, self.plan
        summer = BlockChecksum(size, algorithm=self.algorithm, keep_digests=True)
        block = memoryview(bytearray(BLOCK_SIZE))
        touched = None if plan.ranges is None else _ranges_by_block(plan.ranges, size)
        for index, pieces in _blocks(self.reader.extents(), size):
            if self.stop.is_set():
                raise TransferAborted("Transfer aborted")
            start = index * BLOCK_SIZE
            length = min(BLOCK_SIZE, size - start)
            data_len = sum(n for _, n in pieces)
            base = b"" if plan.base is None else \
                plan.base[index * proto.DIGEST_SIZE:(index + 1) * proto.DIGEST_SIZE]
            if touched is not None and index not in touched:
                summer.add_digest(start, base)  # shares the base's extents: unchanged
                self.ready.put(("done", None, 0, data_len))
                continue
            if pieces:
                if data_len < length:
                    block[:length] = _ZEROS[:length]
                for offset, n in pieces:
                    self._read(offset, block[offset - start:offset - start + n])
                digest = block_digest(self.algorithm, block[:length])
            else:
                digest = zero_digest(self.algorithm, length)
            summer.add_digest(start, digest)
            if digest != base or plan.every_block:
                changed = [(start, length)] if touched is None else touched[index]
                for offset, n in changed:
                    self._send_range(offset, n, block[offset - start:offset - start + n]
                                     if pieces else None)
            self.ready.put(("done", None, 0, data_len))
        assert summer.digests is not None
        return summer.finish(), bytes(summer.digests)

    def _send_range(self, offset: int, length: int, data: memoryview | None) -> None:
        """DATA frames for the data, one ZERO frame per run of zeros (``data`` None: all)."""
        zero_at, zero_len = offset, 0
        if data is None:
            zero_len = length
        else:
            for at, n in block_pieces([(offset, length)], SEND_PIECE):
                part = data[at - offset:at - offset + n]
                if _is_zero(part):
                    zero_len += n
                    continue
                self._zero(zero_at, zero_len)
                self._data(at, part)
                zero_at, zero_len = at + n, 0
        self._zero(zero_at, zero_len)

    def _zero(self, offset: int, length: int) -> None:
        if length:
            self.ready.put(("frame", proto.data_prefix(offset, length, proto.ENC_ZERO, 0),
                            length, 0))


def _blocks(extents: Iterator[tuple[int, int]], size: int
            ) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """Every block of the disk with the data regions inside it (none: all hole)."""
    pieces = block_pieces(extents)
    pending = next(pieces, None)
    for index in range(-(-size // BLOCK_SIZE)):
        inside = []
        end = (index + 1) * BLOCK_SIZE
        while pending is not None and pending[0] < end:
            inside.append(pending)
            pending = next(pieces, None)
        yield index, inside


def _ranges_by_block(ranges: list[tuple[int, int]], size: int
                     ) -> dict[int, list[tuple[int, int]]]:
    """The changed ranges cut at block boundaries (and the disk's end), per block."""
    by_block: dict[int, list[tuple[int, int]]] = {}
    merged: list[tuple[int, int]] = []  # frames must not overlap, whatever the driver says
    for offset, length in sorted(ranges):
        end = min(offset + length, size)
        if length <= 0 or not 0 <= offset < size:
            continue
        if merged and offset <= merged[-1][0] + merged[-1][1]:
            start = merged[-1][0]
            merged[-1] = (start, max(end, start + merged[-1][1]) - start)
        else:
            merged.append((offset, end - offset))
    for offset, length in block_pieces(merged):
        by_block.setdefault(offset // BLOCK_SIZE, []).append((offset, length))
    return by_block


def _plan(size: int, algorithm: str, base: dict[str, Any] | None, digests: bytes,
          changes: ChangeSource | None) -> _Plan:
    """The mode: full without a usable base, else extents where the source can tell."""
    if base is None:
        return _Plan(MODE_FULL)
    try:
        same_algorithm = algorithm_of(base["checksum"]) == algorithm
    except ValueError:
        same_algorithm = False
    if (base["blocks"] != -(-size // BLOCK_SIZE) or not same_algorithm
            or checksum_of(digests, algorithm) != base["checksum"]):
        # the destination starts as the base: overwrite all of it
        return _Plan(MODE_FULL, every_block=True)
    if changes is not None:
        try:
            ranges = changes.changed_ranges(base["checksum"])
        except (errors.StorageError, OSError) as err:
            LOG.warning("Cannot tell the changed ranges, hashing every block: %s", err)
            ranges = None
        if ranges is not None:
            return _Plan(MODE_EXTENTS, digests, ranges)
    return _Plan(MODE_HASH, digests)


def _read_base(frames: proto.FrameReader, blocks: int) -> bytes:
    digests = bytearray()
    while len(digests) < blocks * proto.DIGEST_SIZE:
        _, payload = frames.expect(proto.BASE)
        proto.add_digests(digests, payload, blocks, "BASE")
    return bytes(digests)


def _send(sock: ssl.SSLSocket, frames: proto.FrameReader, reader: DiskReader, magic: str,
          compress: str, level: int, progress: Progress, progress_timeout: float,
          abort: threading.Event, skip_zeros: bool, algorithm: str,
          limiter: Limiter | None, io_priority: IoPriority | None,
          incremental: bool = False, changes: ChangeSource | None = None) -> str:
    codec = proto.Codec(compress, level)
    sock.settimeout(progress_timeout)
    size = reader.size
    progress.size = size
    progress.data_total = reader.data_bytes()
    sock.sendall(proto.encode_json(
        proto.HEADER, proto.make_header(magic, size, progress.data_total, compress,
                                        algorithm, incremental)))
    # WAIT: the receiver is still copying the base dump (a local copy can take
    # longer than the progress timeout; each WAIT restarts it)
    while (ready := frames.expect(proto.READY, proto.WAIT))[0] == proto.WAIT:
        pass
    base = proto.parse_ready(proto.decode_json(ready[1]))
    digests = b""
    if base is not None:
        if not incremental:
            raise proto.ProtocolError("READY names a base, but the stream is not"
                                      " incremental")
        digests = _read_base(frames, base["blocks"])
        progress.base = base["generation"]
    plan = _plan(size, algorithm, base, digests, changes)
    progress.mode = plan.mode
    producer = _Producer(reader, codec, skip_zeros, algorithm, io_priority=io_priority,
                         plan=plan, progress=progress)
    producer.start()
    sendall = _sendall(sock, limiter)
    try:
        checksum, blocks, sent = _pump(sock, frames, producer, progress, abort, sendall)
    finally:
        producer.stop.set()
        producer.join()
    for frame in proto.digest_frames(proto.BLOCKS, blocks):
        sendall(frame)
        progress.wire_bytes += len(frame)
    sock.sendall(proto.encode_json(proto.END, {"data_bytes": progress.bytes,
                                               "sent_bytes": sent, "checksum": checksum,
                                               "mode": plan.mode}))
    _, payload = frames.expect(proto.ACK)
    theirs = proto.decode_json(payload).get("checksum")
    # null: the receiver checked the byte counts but did not hash (not asked to)
    if theirs is not None and theirs != checksum:
        raise TransferError(f"Checksum mismatch: sent {checksum}, receiver computed {theirs}")
    return checksum


def _sendall(sock: ssl.SSLSocket, limiter: Limiter | None) -> Callable[[Any], None]:
    if limiter is None:
        return sock.sendall

    def sendall(data: Any) -> None:
        limiter.sendall(sock.sendall, memoryview(data))

    return sendall


def _pump(sock: ssl.SSLSocket, frames: proto.FrameReader, producer: _Producer,
          progress: Progress, abort: threading.Event,
          sendall: Callable[[Any], None]) -> tuple[str, bytes, int]:
    """Send what the producer prepared; its checksum and digests, and the raw bytes sent."""
    sent = 0
    while True:
        if abort.is_set():
            raise TransferAborted("Transfer aborted")
        kind, item, raw, done = producer.ready.get()
        if kind == "end":
            checksum, blocks = item
            return str(checksum), bytes(blocks), sent
        if kind == "error":
            raise item
        if kind != "done":
            sent += raw
            _check_peer(sock, frames)
            if kind == "buf":
                sendall(memoryview(item)[:proto.DATA_PREFIX + raw])
                producer.pool.put(item)
                progress.wire_bytes += proto.DATA_PREFIX + raw
            elif kind == "zframe":
                frame, buf = item
                sendall(frame)
                producer.pool.put(buf)
                progress.wire_bytes += len(frame)
            else:
                sendall(item)
                progress.wire_bytes += len(item)
            progress.changed_bytes = sent
        progress.bytes += done
