"""Receiving side of a disk stream: listens, checks the header, writes data regions.

A file destination may start as a copy of a base dump (an incremental
export): the receiver then announces the base in READY, sends its block
digests and writes only what the sender says changed; either way it writes the
new dump's block index beside it (doc/transfer-protocol.md).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganeti.backup.blockindex import BlockIndex, IndexProblem, checksum_of, index_path
from ganeti.server import connlimit
from ganeti.storage import reflink
from ganeti.storage.extents import DiskReader, DiskWriter
from ganeti.transfer import (
    BLOCK_SIZE,
    COMPRESS_NONE,
    DEFAULT_LISTEN_TIMEOUT,
    DEFAULT_PROGRESS_TIMEOUT,
    TransferAborted,
    TransferError,
)
from ganeti.transfer import protocol as proto
from ganeti.transfer.checksum import BlockChecksum, algorithm_of, block_digest
from ganeti.transfer.node import MODES, BufferPool, Progress, guard_stream
from ganeti.transfer.node.ioprio import apply as apply_priority
from ganeti.transfer.priority import IoPriority
from ganeti.transfer.ratelimit import Limiter

LOG = logging.getLogger(__name__)

# Opens the destination once the header is accepted; gets the disk size in bytes
WriterFactory = Callable[[int], DiskWriter]


@dataclass(frozen=True)
class FileOutput:
    """A file destination: its block index goes beside it, it may start from a base dump."""

    path: Path
    base: Path | None = None
    base_generation: str | None = None

HANDSHAKE_TIMEOUT = 15.0
# Handshakes in progress at once while waiting for the sender (strangers included)
MAX_PENDING_HANDSHAKES = 16
# How often a waiting listener looks at the abort flag
ABORT_POLL = 0.5
# Longest pause between WAIT frames while the base dump is copied
WAIT_INTERVAL = 5.0
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


@dataclass
class _Base:
    """The base dump a stream builds on: its index and generation."""

    index: BlockIndex
    generation: str | None


def receive_stream(sock: ssl.SSLSocket, magic: str, expected_size: int | None,
                   open_writer: WriterFactory, *, progress: Progress | None = None,
                   progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT,
                   abort: threading.Event | None = None, verify: bool = False,
                   limiter: Limiter | None = None,
                   io_priority: IoPriority | None = None,
                   output: FileOutput | None = None) -> str:
    """Receive one stream into the writer ``open_writer`` returns; returns the checksum.

    Nothing is opened or written before the header (magic, version, size)
    has been accepted.  The byte counts are always checked; ``verify`` also
    hashes the received data and compares it with the sender's checksum,
    otherwise the sender's checksum is returned as is (TLS protected it).
    ``limiter`` paces the reads from the socket (the node's bandwidth limit);
    ``io_priority`` is given to the thread that writes the destination.
    ``output`` (file destinations): where the block index goes and the base
    dump an incremental stream may start from (then ``open_writer`` is unused).
    """
    progress = progress or Progress()
    abort = abort or threading.Event()
    recv_into = sock.recv_into if limiter is None else limiter.recv_into(sock.recv_into)
    frames = proto.FrameReader(recv_into)
    return guard_stream(
        sock, "sender", progress, progress_timeout, abort,
        lambda: _receive(sock, frames, magic, expected_size, open_writer, progress,
                         progress_timeout, abort, verify, io_priority, output))


def _receive(sock: ssl.SSLSocket, frames: proto.FrameReader, magic: str,
             expected_size: int | None, open_writer: WriterFactory, progress: Progress,
             progress_timeout: float, abort: threading.Event, verify: bool,
             io_priority: IoPriority | None = None,
             output: FileOutput | None = None) -> str:
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
    base: _Base | None = None
    if (header.get("incremental") is True and output is not None
            and output.base is not None and output.base != output.path):
        index = _usable_base(output.base, size, algorithm)
        if index is not None:
            base = _Base(index, output.base_generation)
    if base is not None:
        assert output is not None and output.base is not None
        output.path.unlink(missing_ok=True)
        progress.base_copy = _copy_base(sock, output.base, output.path, size, abort,
                                        progress_timeout, io_priority)
        progress.base = base.generation
        writer = DiskWriter.open_existing(output.path, size)
    else:
        writer = open_writer(size)
    with writer:
        return _receive_data(sock, frames, writer, size, progress, abort,
                             algorithm if verify else None, io_priority, base, output,
                             algorithm)


def _copy_base(sock: ssl.SSLSocket, base: Path, dest: Path, size: int,
               abort: threading.Event, progress_timeout: float,
               io_priority: IoPriority | None) -> str:
    """Start the destination as a copy of the base ("reflink" or "copy").

    A clone is instant; a local copy of a big dump may take longer than the
    sender waits for READY, so WAIT frames tell it the receiver is busy.
    """
    outcome: list[Any] = []
    stop = threading.Event()

    def run() -> None:
        apply_priority(io_priority, "gnt-xfer-copy")
        try:
            outcome.append(reflink.clone_or_copy(
                base, dest, should_stop=lambda: stop.is_set() or abort.is_set()))
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=run, name="transfer-base-copy", daemon=True)
    worker.start()
    try:
        while True:
            worker.join(min(WAIT_INTERVAL, progress_timeout / 4))
            if not worker.is_alive():
                break
            if abort.is_set():
                raise TransferAborted("Transfer aborted while copying the base")
            sock.sendall(proto.encode_json(proto.WAIT, {"size": size}))
    finally:
        stop.set()
        worker.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return str(outcome[0])


def _usable_base(dump: Path, size: int, algorithm: str) -> BlockIndex | None:
    """The base dump's index if the stream can build on it (else it is sent in full)."""
    try:
        if not dump.is_file() or dump.is_symlink() or dump.stat().st_size != size:
            LOG.warning("Base %s is missing or not %d bytes: receiving in full", dump, size)
            return None
        index = BlockIndex.read(index_path(dump))
    except (IndexProblem, OSError) as err:
        LOG.warning("Base %s is unusable, receiving in full: %s", dump, err)
        return None
    if index.size != size or index.algorithm != algorithm:
        LOG.warning("Base %s has %d bytes in %s, the stream %d in %s: receiving in full",
                    dump, index.size, index.algorithm, size, algorithm)
        return None
    return index


class _Writer(threading.Thread):
    """Decompresses, writes (and hashes, if asked) while the stream thread keeps reading."""

    def __init__(self, writer: DiskWriter, size: int, progress: Progress,
                 algorithm: str | None, depth: int = PIPELINE_DEPTH,
                 io_priority: IoPriority | None = None, based: bool = False) -> None:
        super().__init__(name="transfer-write", daemon=True)
        self.io_priority = io_priority
        self.writer = writer
        self.progress = progress
        self.summer = None if algorithm is None else BlockChecksum(size,
                                                                   algorithm=algorithm)
        # the destination holds a base: what is not sent is kept, not zeros
        self.based = based
        self.touched: set[int] = set()  # blocks written (based streams)
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
        if not self.based and not self.writer.holes_are_zero and offset > self.pos:
            self.writer.write_zeros(self.pos, offset - self.pos)
        if encoding == proto.ENC_ZERO:
            if body:
                raise proto.ProtocolError("ZERO data frame has a body")
            self.writer.punch(offset, raw_len)  # gaps hash as zeros: no summer update
        else:
            data = self.codec.decompress(encoding, body, raw_len)
            self.writer.write_at(offset, data)
            if self.summer is not None:
                self.summer.update(offset, data)
        if self.based and raw_len:
            self.touched.update(range(offset // BLOCK_SIZE,
                                      (offset + raw_len - 1) // BLOCK_SIZE + 1))
        self.pos = offset + raw_len
        self.received += raw_len
        self.progress.bytes += raw_len
        self.progress.changed_bytes = self.received

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _receive_data(sock: ssl.SSLSocket, frames: proto.FrameReader, writer: DiskWriter,
                  size: int, progress: Progress, abort: threading.Event,
                  algorithm: str | None, io_priority: IoPriority | None = None,
                  base: _Base | None = None, output: FileOutput | None = None,
                  stream_algorithm: str | None = None) -> str:
    """Store the data frames; ``algorithm`` None: check byte counts, do not hash."""
    if writer.size < size:
        raise TransferError(f"Destination {writer.path} has {writer.size} bytes,"
                            f" the stream {size}")
    if base is None:
        sock.sendall(proto.encode_json(proto.READY, {"base": None}))
    else:
        sock.sendall(proto.encode_json(proto.READY, {"base": {
            "generation": base.generation, "checksum": base.index.checksum,
            "blocks": base.index.blocks}}))
        for frame in proto.digest_frames(proto.BASE, base.index.digests):
            sock.sendall(frame)
    worker = _Writer(writer, size, progress, algorithm if base is None else None,
                     io_priority=io_priority, based=base is not None)
    worker.start()
    try:
        payload, blocks = _read_data(frames, worker, size, progress, abort)
    finally:
        worker.work.put(None)
        worker.join()
    worker.check()
    end = proto.decode_json(payload)
    theirs = _check_end(end, worker.received)
    mode = end.get("mode")
    progress.mode = mode if mode in MODES else None
    if not worker.based and not writer.holes_are_zero and worker.pos < size:
        writer.write_zeros(worker.pos, size - worker.pos)
    writer.fsync()
    sent = end.get("data_bytes")
    if isinstance(sent, int) and sent > progress.bytes:
        progress.bytes = sent  # zero blocks the sender skipped count as done
    checksum: str | None = None
    if algorithm is not None and base is None:
        assert worker.summer is not None
        checksum = worker.summer.finish()
        if checksum != theirs:
            sock.sendall(proto.encode_json(proto.ACK, {"checksum": checksum, "ok": False}))
            raise TransferError(f"Checksum mismatch: sender {theirs}, received data"
                                f" {checksum}")
    _check_blocks(blocks, size, theirs)
    if algorithm is not None and base is not None:
        checksum = _verify_based(writer.path, size, blocks, base.index, worker.touched,
                                 algorithm)
    if output is not None:
        BlockIndex(size=size, digests=bytes(blocks),
                   algorithm=stream_algorithm or algorithm_of(theirs),
                   base=base.generation if base is not None else None
                   ).write(index_path(output.path))
    sock.sendall(proto.encode_json(proto.ACK, {"checksum": checksum, "ok": True}))
    return theirs if checksum is None else checksum


def _check_blocks(blocks: bytearray, size: int, checksum: str) -> None:
    """The BLOCKS digests: one per block, and they make the END checksum."""
    expected = -(-size // BLOCK_SIZE)
    if len(blocks) != expected * proto.DIGEST_SIZE:
        raise proto.ProtocolError(f"BLOCKS frames carry {len(blocks) // proto.DIGEST_SIZE}"
                                  f" digests, the disk has {expected} blocks")
    if checksum_of(blocks, algorithm_of(checksum)) != checksum:
        raise TransferError(f"Block digests do not match the sender's checksum {checksum}")


def _verify_based(path: Path, size: int, blocks: bytearray, base: BlockIndex,
                  touched: set[int], algorithm: str) -> str:
    """Re-read the written blocks; the others must be the base's.  The checksum they make."""
    step = proto.DIGEST_SIZE
    buf = memoryview(bytearray(BLOCK_SIZE))
    with DiskReader(path) as reader:
        for index in range(len(blocks) // step):
            theirs_digest = bytes(blocks[index * step:(index + 1) * step])
            offset, length = index * BLOCK_SIZE, min(BLOCK_SIZE, size - index * BLOCK_SIZE)
            if index in touched:
                got = reader.readinto(offset, buf[:length])
                ours = block_digest(algorithm, buf[:got])
                if got != length or ours != theirs_digest:
                    raise TransferError(f"Block {index} (offset {offset}) of {path} does not"
                                        " match the sender's digest after writing")
            elif base.digest(index) != theirs_digest:
                raise TransferError(f"Block {index} (offset {offset}) changed, but the"
                                    " sender sent no data for it")
    return checksum_of(blocks, algorithm)


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
               abort: threading.Event) -> tuple[memoryview, bytearray]:
    """Hand DATA frames to the writer until END; the END payload and the BLOCKS digests."""
    pos = 0
    blocks = bytearray()
    expected = -(-size // BLOCK_SIZE)
    while True:
        if abort.is_set():
            raise TransferAborted("Transfer aborted")
        worker.check()
        buf = worker.pool.get(lambda: worker.error is not None or abort.is_set())
        if buf is None:
            continue  # the loop top reports why
        ftype, payload = frames.expect(proto.DATA, proto.BLOCKS, proto.END,
                                       into=memoryview(buf))
        if ftype == proto.END:
            worker.pool.put(buf)
            return memoryview(bytes(payload)), blocks
        if ftype == proto.BLOCKS:
            try:
                proto.add_digests(blocks, payload, expected, "BLOCKS")
            finally:
                worker.pool.put(buf)
            progress.wire_bytes += proto.FRAME_HEAD.size + len(payload)
            continue
        offset, raw_len, encoding, _ = proto.decode_data(payload)
        if blocks or offset < pos or raw_len > BLOCK_SIZE or offset + raw_len > size or (
                encoding == proto.ENC_ZERO and raw_len
                and offset // BLOCK_SIZE != (offset + raw_len - 1) // BLOCK_SIZE):
            worker.pool.put(buf)
            raise proto.ProtocolError(
                f"Data frame at {offset} (+{raw_len}) is out of order or beyond the disk"
                f" end ({size})")
        pos = offset + raw_len
        progress.wire_bytes += proto.FRAME_HEAD.size + len(payload)
        worker.work.put((buf, payload))
