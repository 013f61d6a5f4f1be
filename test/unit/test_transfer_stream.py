"""Sender and receiver over real TLS sockets on 127.0.0.1, driven through the registry."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ganeti import crypto, pathutils
from ganeti.storage import FileDiskDriver
from ganeti.storage.extents import DiskReader, DiskWriter, allocated_bytes
from ganeti.transfer import (
    BLOCK_SIZE,
    COMPRESS_GZIP,
    COMPRESS_NONE,
    COMPRESS_ZSTD,
    TransferError,
)
from ganeti.transfer import protocol as proto
from ganeti.transfer.checksum import checksum_file
from ganeti.transfer.node import registry
from ganeti.transfer.node.receiver import Listener, receive_stream
from ganeti.transfer.node.sender import connect, send_stream

WAIT = 60.0
MIB = 1024 * 1024
OPTS = registry.StreamOptions(connect_timeout=20, listen_timeout=30, progress_timeout=30)


@dataclass
class Certs:
    server: ssl.SSLContext
    client: ssl.SSLContext
    stranger: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("certs")
    ca_cert, ca_key = crypto.generate_cluster_ca("transfer.test", 1)
    (tmp / "ca.pem").write_text(ca_cert)
    for name in ("node-a", "node-b"):
        cert, key = crypto.generate_node_certificate(ca_cert, ca_key, name, ["127.0.0.1"], 1)
        crypto.write_pem_pair(tmp / f"{name}.pem", cert, key)
    other_cert, other_key = crypto.generate_cluster_ca("other.test", 1)
    (tmp / "other-ca.pem").write_text(other_cert)
    cert, key = crypto.generate_node_certificate(other_cert, other_key, "evil", ["127.0.0.1"], 1)
    crypto.write_pem_pair(tmp / "evil.pem", cert, key)
    return Certs(
        server=crypto.server_ssl_context(tmp / "node-b.pem", tmp / "ca.pem"),
        client=crypto.client_ssl_context(tmp / "node-a.pem", tmp / "ca.pem"),
        # trusts our CA (so only the server side can refuse it)
        stranger=crypto.client_ssl_context(tmp / "evil.pem", tmp / "ca.pem"))


def _sparse(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
        for offset, data in pieces:
            handle.seek(offset)
            handle.write(data)
    return path


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(BLOCK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _unlinker(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)


def _receive(certs: Certs, tid: str, dest: Path, magic: str, size: int | None = None,
             options: registry.StreamOptions = OPTS) -> registry.Transfer:
    return registry.start_receive(tid, "test", "127.0.0.1", certs.server, magic, size,
                                  lambda n: DiskWriter.create(dest, n), _unlinker(dest),
                                  options)


def _send(certs: Certs, tid: str, src: Path, port: int, magic: str,
          compress: str = COMPRESS_NONE,
          options: registry.StreamOptions = OPTS) -> registry.Transfer:
    return registry.start_send(tid, "test", "127.0.0.1", port, certs.client, magic,
                               lambda: DiskReader(src), compress, options)


def _finish(*transfers: registry.Transfer) -> None:
    for tr in transfers:
        assert tr.join(WAIT), f"transfer {tr.id} did not finish"
    registry.cleanup([tr.id for tr in transfers])


@pytest.mark.parametrize("compress", [COMPRESS_NONE, COMPRESS_ZSTD, COMPRESS_GZIP])
def test_sparse_unaligned_copy_keeps_content_holes_and_checksum(
        certs: Certs, tmp_path: Path, compress: str) -> None:
    size = 5 * BLOCK_SIZE + 4321
    text = b"compressible text " * 20000
    src = _sparse(tmp_path / "src", size, [
        (100, os.urandom(3 * MIB)),
        (2 * BLOCK_SIZE - 7, text),            # crosses a block boundary
        (4 * BLOCK_SIZE, bytes(BLOCK_SIZE)),   # written zeros: skipped, stays a hole
        (size - 10, b"0123456789")])           # last, short block
    dest = tmp_path / "out" / "dest"
    dest.parent.mkdir()
    magic = f"magic-{compress}-1234"
    recv = _receive(certs, f"r-{compress}", dest, magic, size)
    send = _send(certs, f"s-{compress}", src, recv.port or 0, magic, compress)
    assert recv.join(WAIT) and send.join(WAIT)
    assert (send.success, recv.success) == (True, True), (send.error, recv.error)
    assert _sha(dest) == _sha(src)
    assert send.checksum == recv.checksum == checksum_file(dest) == checksum_file(src)
    assert allocated_bytes(dest) < allocated_bytes(src)  # the zero block stayed a hole
    status = send.status()
    assert status["bytes"] == status["data_total"] == DiskReader(src).data_bytes()
    if compress != COMPRESS_NONE:
        assert status["wire_bytes"] < status["bytes"]
    _finish(send, recv)
    assert dest.exists()  # cleanup keeps a successful receiver's output


def test_checksum_independent_of_receiver_hole_layout(certs: Certs, tmp_path: Path) -> None:
    # the source has zeros written out; the copy has holes there instead
    size = 3 * BLOCK_SIZE + 99
    data = bytearray(size)
    data[BLOCK_SIZE:BLOCK_SIZE + 5000] = os.urandom(5000)
    src = tmp_path / "thick"
    src.write_bytes(data)
    dest = tmp_path / "copy"
    recv = _receive(certs, "r-thick", dest, "magic-thick-0001")
    send = _send(certs, "s-thick", src, recv.port or 0, "magic-thick-0001")
    _finish(send, recv)
    assert send.success and recv.success
    assert allocated_bytes(dest) < allocated_bytes(src)
    assert dest.read_bytes() == bytes(data)
    assert checksum_file(dest) == send.checksum == checksum_file(src)


def test_target_whose_holes_are_not_zero_gets_explicit_zeros(certs: Certs,
                                                             tmp_path: Path) -> None:
    # like a block device: old content shows through wherever nothing is written
    size = 2 * BLOCK_SIZE + 100
    src = _sparse(tmp_path / "src", size, [(BLOCK_SIZE + 10, os.urandom(1000))])
    dest = tmp_path / "dev"
    dest.write_bytes(b"\xee" * size)

    def open_device(n: int) -> DiskWriter:
        return DiskWriter(dest, os.open(dest, os.O_WRONLY), n, holes_are_zero=False)

    recv = registry.start_receive("r-dev", "test", "127.0.0.1", certs.server,
                                  "magic-device-001", size, open_device, None, OPTS)
    send = _send(certs, "s-dev", src, recv.port or 0, "magic-device-001")
    _finish(send, recv)
    assert send.success and recv.success, (send.error, recv.error)
    assert dest.read_bytes() == src.read_bytes()


def test_sparse_4gib_with_64mib_of_data(certs: Certs, tmp_path: Path) -> None:
    size = 4 * 1024 * MIB
    block = os.urandom(MIB)
    pieces = [(i * 256 * MIB + 3 * MIB, block * 4) for i in range(16)]  # 16 x 4 MiB
    src = _sparse(tmp_path / "big", size, pieces)
    dest = tmp_path / "big-copy"
    recv = _receive(certs, "r-big", dest, "magic-big-000001", size)
    send = _send(certs, "s-big", src, recv.port or 0, "magic-big-000001")
    _finish(send, recv)
    assert send.success and recv.success, (send.error, recv.error)
    assert os.stat(dest).st_size == size
    assert 64 * MIB <= allocated_bytes(dest) <= 72 * MIB
    assert send.progress.wire_bytes < 65 * MIB
    # compare content without reading 4 GiB of holes: data regions plus the checksum
    with open(dest, "rb") as handle:
        for offset, data in pieces:
            handle.seek(offset)
            assert handle.read(len(data)) == data
    assert checksum_file(dest) == send.checksum == checksum_file(src)


def test_wrong_magic_refused_before_anything_is_written(certs: Certs,
                                                        tmp_path: Path) -> None:
    src = _sparse(tmp_path / "src", MIB, [(0, os.urandom(1000))])
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-magic", dest, "the-right-magic")
    send = _send(certs, "s-magic", src, recv.port or 0, "some-other-magic")
    assert recv.join(WAIT) and send.join(WAIT)
    assert recv.success is False and "Wrong stream magic" in (recv.error or "")
    assert send.success is False and "Wrong stream magic" in (send.error or "")
    assert not dest.exists()
    _finish(send, recv)


def test_bad_version_refused(certs: Certs, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-version", dest, "magic-version-01")
    with connect("127.0.0.1", recv.port or 0, certs.client, WAIT) as sock:
        header = proto.make_header("magic-version-01", 10, 10, COMPRESS_NONE)
        sock.sendall(proto.encode_json(proto.HEADER, {**header, "version": 99}))
        with pytest.raises(proto.PeerError, match="Unsupported protocol version 99"):
            proto.FrameReader(sock.recv_into).expect(proto.READY)
    _finish(recv)
    assert recv.success is False and not dest.exists()


def test_stranger_certificate_refused_then_real_sender_accepted(certs: Certs,
                                                                tmp_path: Path) -> None:
    src = _sparse(tmp_path / "src", MIB, [(5, b"hello")])
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-stranger", dest, "magic-stranger-1")
    # TLS 1.3: the client learns that its certificate was refused on first read
    with (pytest.raises((ssl.SSLError, OSError, TransferError)),
          connect("127.0.0.1", recv.port or 0, certs.stranger, WAIT) as sock):
        sock.sendall(proto.encode_json(proto.HEADER, proto.make_header(
            "magic-stranger-1", MIB, 5, COMPRESS_NONE)))
        proto.FrameReader(sock.recv_into).read()
    assert not recv.done.is_set() and not dest.exists()
    send = _send(certs, "s-stranger", src, recv.port or 0, "magic-stranger-1")
    _finish(send, recv)
    assert recv.success and dest.read_bytes() == src.read_bytes()


def test_sender_killed_mid_stream_receiver_fails_and_removes_file(certs: Certs,
                                                                  tmp_path: Path) -> None:
    size = 4 * BLOCK_SIZE
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-killed", dest, "magic-killed-001", size)
    sock = connect("127.0.0.1", recv.port or 0, certs.client, WAIT)
    sock.sendall(proto.encode_json(proto.HEADER, proto.make_header(
        "magic-killed-001", size, size, COMPRESS_NONE)))
    proto.FrameReader(sock.recv_into).expect(proto.READY)
    block = os.urandom(BLOCK_SIZE)
    sock.sendall(proto.data_prefix(0, BLOCK_SIZE, proto.ENC_RAW, BLOCK_SIZE) + block)
    sock.sendall(proto.data_prefix(BLOCK_SIZE, BLOCK_SIZE, proto.ENC_RAW, BLOCK_SIZE)
                 + block[:1000])  # half a frame, then the sender dies
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    socket.socket.close(sock)
    assert recv.join(WAIT)
    assert recv.success is False and recv.error
    assert not dest.exists()
    _finish(recv)


def test_receiver_aborted_sender_fails_promptly(certs: Certs, tmp_path: Path) -> None:
    size = 8 * BLOCK_SIZE
    src = _sparse(tmp_path / "src", size, [(0, os.urandom(size))])
    dest = tmp_path / "dest"
    reached = threading.Event()

    def slow_writer(n: int) -> DiskWriter:
        writer = DiskWriter.create(dest, n)
        original = writer.write_at

        def write_at(offset: int, data: bytes | bytearray | memoryview) -> None:
            original(offset, data)
            reached.set()
            recv.abort_event.wait(WAIT)  # park until the abort arrives

        writer.write_at = write_at  # type: ignore[method-assign]
        return writer

    recv = registry.start_receive("r-abort", "test", "127.0.0.1", certs.server,
                                  "magic-abort-0001", size, slow_writer, _unlinker(dest),
                                  OPTS)
    send = _send(certs, "s-abort", src, recv.port or 0, "magic-abort-0001")
    assert reached.wait(WAIT)
    registry.abort(["r-abort"])
    assert send.join(WAIT) and recv.join(WAIT)
    assert recv.success is False and "abort" in (recv.error or "").lower()
    assert send.success is False and send.error
    assert send.progress.bytes < size
    _finish(send, recv)
    assert not dest.exists()


def test_listen_timeout(certs: Certs, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-listen", dest, "magic-listen-001",
                    options=registry.StreamOptions(listen_timeout=0.3))
    assert recv.join(WAIT)
    assert recv.success is False and "No sender connected within 0.3s" in (recv.error or "")
    assert not dest.exists()
    _finish(recv)


def test_progress_timeout_on_both_sides(certs: Certs, tmp_path: Path) -> None:
    listener = Listener("127.0.0.1")
    accepted = threading.Event()
    release = threading.Event()

    def silent_receiver() -> None:
        sock = listener.accept(certs.server, WAIT)
        accepted.set()
        try:  # reads the header and never answers
            proto.FrameReader(sock.recv_into).read()
            release.wait(WAIT)
        finally:
            sock.close()

    thread = threading.Thread(target=silent_receiver)
    thread.start()
    src = _sparse(tmp_path / "src", MIB, [(0, b"x")])
    sock = connect("127.0.0.1", listener.port, certs.client, WAIT)
    with DiskReader(src) as reader, pytest.raises(TransferError, match="No progress") as info:
        send_stream(sock, reader, "magic-progress-1", progress_timeout=0.3)
    assert "receiver" in str(info.value)
    release.set()
    sock.close()
    thread.join(WAIT)
    assert accepted.is_set()

    recv = _receive(certs, "r-progress", tmp_path / "dest", "magic-progress-2",
                    options=registry.StreamOptions(progress_timeout=0.3))
    with connect("127.0.0.1", recv.port or 0, certs.client, WAIT):
        assert recv.join(WAIT)  # nothing sent at all
    assert recv.success is False and "No progress from the sender" in (recv.error or "")
    _finish(recv)


def test_receiver_refuses_out_of_order_frames(certs: Certs, tmp_path: Path) -> None:
    listener = Listener("127.0.0.1")
    errors: list[BaseException] = []
    dest = tmp_path / "dest"

    def run() -> None:
        sock = listener.accept(certs.server, WAIT)
        try:
            receive_stream(sock, "magic-order-0001", None,
                           lambda n: DiskWriter.create(dest, n))
        except TransferError as err:
            errors.append(err)
        finally:
            sock.close()

    thread = threading.Thread(target=run)
    thread.start()
    with connect("127.0.0.1", listener.port, certs.client, WAIT) as sock:
        sock.sendall(proto.encode_json(proto.HEADER, proto.make_header(
            "magic-order-0001", 2 * BLOCK_SIZE, 10, COMPRESS_NONE)))
        frames = proto.FrameReader(sock.recv_into)
        frames.expect(proto.READY)
        sock.sendall(proto.data_prefix(BLOCK_SIZE, 5, proto.ENC_RAW, 5) + b"hello")
        sock.sendall(proto.data_prefix(0, 5, proto.ENC_RAW, 5) + b"hello")
        with pytest.raises(proto.PeerError, match="out of order"):
            frames.expect(proto.ACK)
    thread.join(WAIT)
    assert errors and "out of order" in str(errors[0])


def test_duplicate_and_invalid_ids(certs: Certs, tmp_path: Path) -> None:
    recv = _receive(certs, "r-dup", tmp_path / "d", "magic-dup-000001",
                    options=registry.StreamOptions(listen_timeout=0.2))
    with pytest.raises(TransferError, match="already exists"):
        _receive(certs, "r-dup", tmp_path / "d2", "magic-dup-000001")
    with pytest.raises(TransferError, match="Invalid transfer id"):
        _receive(certs, "../x", tmp_path / "d3", "magic-dup-000001")
    assert "r-dup" in registry.list_transfers()
    _finish(recv)
    assert "r-dup" not in registry.list_transfers()


def test_verifying_receiver_with_an_old_sha256_sender(certs: Certs, tmp_path: Path) -> None:
    # an import of an old export: the sender re-reads the dump with sha256-4m
    size = 2 * BLOCK_SIZE + 333
    src = _sparse(tmp_path / "src", size, [(10, os.urandom(BLOCK_SIZE + 50))])
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-verify", dest, "magic-verify-001", size,
                    options=registry.StreamOptions(verify_receive=True))
    send = _send(certs, "s-verify", src, recv.port or 0, "magic-verify-001",
                 options=registry.StreamOptions(checksum="sha256-4m"))
    _finish(send, recv)
    assert send.success and recv.success, (send.error, recv.error)
    assert send.checksum == recv.checksum == checksum_file(dest, "sha256-4m")
    assert (send.checksum or "").startswith("sha256-4m:")


def _hand_sender(certs: Certs, port: int, magic: str, size: int,
                 end: dict[str, object]) -> str:
    """Send 5 bytes at offset 0 and the given END; the receiver's answer (ERROR text or ACK)."""
    with connect("127.0.0.1", port, certs.client, WAIT) as sock:
        sock.sendall(proto.encode_json(proto.HEADER, proto.make_header(
            magic, size, 5, COMPRESS_NONE)))
        frames = proto.FrameReader(sock.recv_into)
        frames.expect(proto.READY)
        sock.sendall(proto.data_prefix(0, 5, proto.ENC_RAW, 5) + b"hello")
        sock.sendall(proto.encode_json(proto.END, end))
        try:
            _, payload = frames.expect(proto.ACK)
        except proto.PeerError as err:
            return f"ERROR {err}"
    return f"ACK {proto.decode_json(payload)}"


def test_receiver_checks_byte_counts_and_removes_the_output(certs: Certs,
                                                            tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-count", dest, "magic-count-0001", MIB)
    real = checksum_file(_sparse(tmp_path / "src", MIB, [(0, b"hello")]))
    message = _hand_sender(certs, recv.port or 0, "magic-count-0001", MIB,
                           {"data_bytes": 10, "sent_bytes": 10, "checksum": real})
    assert message.startswith("ERROR ")
    assert "Byte count mismatch: the sender sent 10 data bytes, 5 arrived" in message
    assert recv.join(WAIT) and recv.success is False
    assert "Byte count mismatch" in (recv.error or "")
    assert not dest.exists()
    _finish(recv)


@pytest.mark.parametrize(("checksum", "expected"), [
    ("md5:1234", "END frame: Unknown checksum algorithm"),
    (None, "END frame: invalid checksum None")])
def test_receiver_refuses_a_malformed_end(certs: Certs, tmp_path: Path,
                                          checksum: str | None, expected: str) -> None:
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-end", dest, "magic-end-000001", MIB)
    message = _hand_sender(certs, recv.port or 0, "magic-end-000001", MIB,
                           {"data_bytes": 5, "sent_bytes": 5, "checksum": checksum})
    assert message.startswith("ERROR ") and expected in message
    _finish(recv)
    assert recv.success is False and not dest.exists()


def test_verifying_receiver_catches_a_wrong_checksum(certs: Certs, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    recv = _receive(certs, "r-wrong", dest, "magic-wrong-0001", MIB,
                    options=registry.StreamOptions(verify_receive=True))
    real = checksum_file(_sparse(tmp_path / "src", MIB, [(0, b"hello")]))
    wrong = real[:-1] + ("0" if real[-1] != "0" else "1")
    message = _hand_sender(certs, recv.port or 0, "magic-wrong-0001", MIB,
                           {"data_bytes": 5, "sent_bytes": 5, "checksum": wrong})
    assert message == f"ACK {{'checksum': '{real}', 'ok': False}}"
    _finish(recv)
    assert recv.success is False and not dest.exists()
    assert f"Checksum mismatch: sender {wrong}, received data {real}" in (recv.error or "")


def test_destination_disk_outside_storage_fails_both_sides_with_the_reason(
        certs: Certs, tmp_path: Path) -> None:
    # the logical id arrives over RPC; the driver refuses it once the header is in
    driver = FileDiskDriver(pathutils.Paths.for_root(tmp_path), storage_dir=tmp_path / "st")
    outside = ["file", str(tmp_path / "elsewhere.img")]
    src = _sparse(tmp_path / "src", MIB, [(0, b"data")])
    recv = registry.start_receive("r-outside", "t", "127.0.0.1", certs.server, "magic-out",
                                  MIB, lambda _size: driver.open_writer(outside), None, OPTS)
    send = _send(certs, "s-outside", src, recv.port or 0, "magic-out")
    assert recv.join(WAIT) and send.join(WAIT)
    assert recv.success is False and "not inside the file storage directory" in (
        recv.error or "")
    assert send.success is False and "not inside the file storage directory" in (
        send.error or ""), send.error
    assert not (tmp_path / "elsewhere.img").exists()
    _finish(send, recv)
