"""Incremental streams (protocol version 3) over real TLS sockets on 127.0.0.1.

Full streams write the block index; hash and extents modes send only what
changed into a copy of the base dump (a reflink clone where the filesystem
can), and every result is byte-identical to its source.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from support.files import sha256_file, sparse_file
from support.rpc import as_runner

from ganeti import crypto, pathutils, storage
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import transfer as bk
from ganeti.backup.blockindex import BlockIndex, from_digests, index_path
from ganeti.rpc.result import RpcResult
from ganeti.storage import reflink
from ganeti.storage.extents import DiskReader, DiskWriter, allocated_bytes
from ganeti.transfer import BLOCK_SIZE, COMPRESS_NONE, COMPRESS_ZSTD
from ganeti.transfer import protocol as proto
from ganeti.transfer.checksum import BlockChecksum, block_digest, checksum_file, zero_digest
from ganeti.transfer.master.coordinator import (
    DiskTransfer,
    TransferResult,
    finished_line,
    run_transfers,
)
from ganeti.transfer.node import receiver, registry
from ganeti.transfer.node.receiver import FileOutput, Listener
from ganeti.transfer.node.sender import connect

WAIT = 60.0
MIB = 1024 * 1024
OPTS = registry.StreamOptions(connect_timeout=20, listen_timeout=30, progress_timeout=30)
INCREMENTAL = registry.StreamOptions(connect_timeout=20, listen_timeout=30,
                                     progress_timeout=30, incremental=True)


# --- fixtures and helpers -----------------------------------------------------------

def _node(tmp: Path, name: str, ca: tuple[str, str]) -> NodeContext:
    paths = pathutils.Paths.for_root(tmp / name)
    for directory in (paths.data_dir, paths.export_dir, paths.file_storage_dir):
        directory.mkdir(parents=True)
    cert, key = crypto.generate_node_certificate(ca[0], ca[1], name, ["127.0.0.1"], 1)
    crypto.write_pem_pair(paths.node_cert_file, cert, key)
    paths.cluster_ca_file.write_text(ca[0])
    return NodeContext(paths=paths)


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return crypto.generate_cluster_ca("incremental.test", 1)


@pytest.fixture
def node(tmp_path: Path, ca: tuple[str, str]) -> NodeContext:
    return _node(tmp_path, "node1", ca)


class _Tls:
    def __init__(self, ctx: NodeContext) -> None:
        paths = ctx.paths
        self.server = crypto.server_ssl_context(paths.node_cert_file, paths.cluster_ca_file)
        self.client = crypto.client_ssl_context(paths.node_cert_file, paths.cluster_ca_file)


def _write(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def _is_hole(path: Path, offset: int, length: int) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) >= offset + length
    except OSError:  # ENXIO: only a hole is left
        return True
    finally:
        os.close(fd)


class Changes:
    """A test double of the driver's export base: fixed changed ranges for one base."""

    def __init__(self, base_checksum: str, ranges: list[tuple[int, int]] | None) -> None:
        self.base_checksum = base_checksum
        self.ranges = ranges
        self.asked: list[str] = []

    def changed_ranges(self, base_checksum: str) -> list[tuple[int, int]] | None:
        self.asked.append(base_checksum)
        return self.ranges if base_checksum == self.base_checksum else None


def _stream(tls: _Tls, tid: str, src: Path, output: FileOutput, *,
            options: registry.StreamOptions = INCREMENTAL,
            recv_options: registry.StreamOptions = OPTS, changes: Changes | None = None,
            compress: str = COMPRESS_NONE) -> tuple[registry.Transfer, registry.Transfer]:
    dest = output.path

    def remove() -> None:
        dest.unlink(missing_ok=True)
        index_path(dest).unlink(missing_ok=True)

    recv = registry.start_receive(f"{tid}-r", "test", "127.0.0.1", tls.server,
                                  f"magic-{tid}-0001", None,
                                  lambda n: DiskWriter.create(dest, n), remove, recv_options,
                                  output=output)
    send = registry.start_send(f"{tid}-s", "test", "127.0.0.1", recv.port or 0, tls.client,
                               f"magic-{tid}-0001", lambda: DiskReader(src), compress,
                               options, changes=changes)
    assert send.join(WAIT) and recv.join(WAIT)
    registry.cleanup([send.id, recv.id])
    return send, recv


def _full(tls: _Tls, src: Path, dest: Path) -> registry.Transfer:
    dest.parent.mkdir(parents=True, exist_ok=True)
    send, recv = _stream(tls, f"full{time.monotonic_ns()}", src, FileOutput(dest),
                         options=OPTS)
    assert send.success and recv.success, (send.error, recv.error)
    return send


SIZE = 6 * BLOCK_SIZE + 1234


def _source(path: Path) -> Path:
    return sparse_file(path, SIZE, [(0, os.urandom(SIZE))])


# --- pieces: checksum, protocol, writer ----------------------------------------------

def test_block_checksum_keeps_digests_and_takes_known_ones() -> None:
    size = 3 * BLOCK_SIZE + 77
    data = os.urandom(size)
    plain = BlockChecksum(size)
    plain.update(0, data)
    kept = BlockChecksum(size, keep_digests=True)
    kept.update(0, data)
    assert kept.finish() == plain.finish()
    assert kept.digests is not None and len(kept.digests) == 4 * 32
    known = BlockChecksum(size, keep_digests=True)
    known.add_digest(0, kept.digests[:32])
    known.update(BLOCK_SIZE, data[BLOCK_SIZE:2 * BLOCK_SIZE])
    known.add_digest(3 * BLOCK_SIZE, block_digest("blake3-4m", data[3 * BLOCK_SIZE:]))
    # block 2 was skipped: it counts as zeros
    assert known.digests is not None
    assert known.digests[64:96] == zero_digest("blake3-4m", BLOCK_SIZE)
    with pytest.raises(ValueError, match="not a block start"):
        BlockChecksum(size).add_digest(5, bytes(32))
    assert known.finish() == from_digests(size, bytes(known.digests)).checksum


def test_digest_frames_and_ready() -> None:
    digests = os.urandom(32 * (proto.DIGESTS_PER_FRAME + 3))
    frames = list(proto.digest_frames(proto.BLOCKS, digests))
    assert len(frames) == 2
    got = bytearray()
    for frame in frames:
        proto.add_digests(got, frame[proto.FRAME_HEAD.size:], len(digests) // 32, "BLOCKS")
    assert bytes(got) == digests
    with pytest.raises(proto.ProtocolError, match="more than the 1 block digests"):
        proto.add_digests(bytearray(), bytes(64), 1, "BASE")
    with pytest.raises(proto.ProtocolError, match="is not 1 to"):
        proto.add_digests(bytearray(), bytes(33), 9, "BASE")
    assert proto.parse_ready({"base": None}) is None
    assert proto.parse_ready({}) is None
    with pytest.raises(proto.ProtocolError, match="invalid base block count"):
        proto.parse_ready({"base": {"generation": None, "checksum": "x", "blocks": True}})
    header = proto.make_header("m" * 16, 10, 10, COMPRESS_NONE, incremental=True)
    assert header["version"] == 3 and header["incremental"] is True
    with pytest.raises(proto.ProtocolError, match="Invalid incremental flag"):
        proto.check_header({**header, "incremental": "yes"}, "m" * 16, None)


def test_writer_on_an_existing_file_keeps_content_and_punches_holes(tmp_path: Path) -> None:
    path = sparse_file(tmp_path / "f", 3 * MIB, [(0, b"\x07" * (3 * MIB))])
    with DiskWriter.open_existing(path, 3 * MIB) as writer:
        writer.write_at(10, b"new")
        writer.punch(MIB, MIB)
    data = path.read_bytes()
    assert data[:10] == b"\x07" * 10 and data[10:13] == b"new"
    assert data[MIB:2 * MIB] == bytes(MIB) and data[2 * MIB:] == b"\x07" * MIB
    assert _is_hole(path, MIB, MIB)
    # where holes do not read as zeros (a block device), zeros are written
    path.write_bytes(b"\xee" * MIB)
    writer = DiskWriter(path, os.open(path, os.O_WRONLY), MIB, holes_are_zero=False)
    with writer:
        writer.punch(100, 200)
    assert path.read_bytes() == b"\xee" * 100 + bytes(200) + b"\xee" * (MIB - 300)


def test_finished_line_for_incremental_and_full_disks() -> None:
    result = TransferResult("disk/0", True, 4096 * MIB, "blake3-4m:ab", None, 0.6,
                            mode="extents", size=4096 * MIB, read_bytes=44 * MIB,
                            changed_bytes=41 * MIB, wire_bytes=41 * MIB,
                            base="20261130T031500Z", base_copy="reflink")
    assert finished_line(result) == (
        "disk/0: 41M of 4.0G changed (1.0%), read 44M, sent 41M in 0.6s,"
        " base 20261130T031500Z (extents)")
    full = TransferResult("disk/1", True, 268 * MIB, "blake3-4m:cd", None, 2.0, mode="full")
    assert finished_line(full) == ("disk/1 finished: 268M in 2.0s, 134.0 MiB/s, checksum"
                                   " blake3-4m:cd")


# --- full ---------------------------------------------------------------------------

def test_full_stream_writes_an_index_matching_the_checksum(node: NodeContext,
                                                           tmp_path: Path) -> None:
    tls = _Tls(node)
    src = sparse_file(tmp_path / "src", SIZE, [(5, os.urandom(MIB)),
                                           (3 * BLOCK_SIZE, os.urandom(BLOCK_SIZE + 9))])
    dest = tmp_path / "out" / "disk0.img"
    send = _full(tls, src, dest)
    index = BlockIndex.read(index_path(dest))
    assert index.checksum == send.checksum == checksum_file(dest) == checksum_file(src)
    assert index.base is None and index.size == SIZE and index.blocks == 7
    status = send.status()
    assert status["mode"] == "full" and status["base"] is None
    assert status["read_bytes"] == status["changed_bytes"] == DiskReader(src).data_bytes()


# --- hash mode ----------------------------------------------------------------------

@pytest.mark.parametrize(("fs", "verify"), [("reflink_dir", False), ("reflink_dir", True),
                                            ("noreflink_dir", False)])
def test_hash_mode_sends_only_changed_blocks(node: NodeContext, fs: str, verify: bool,
                                             request: pytest.FixtureRequest) -> None:
    where: Path = request.getfixturevalue(fs)
    tls = _Tls(node)
    src = _source(where / "src.img")
    base = where / "gen1" / "disk0.img"
    _full(tls, src, base)
    base_sha, base_index_sha = sha256_file(base), sha256_file(index_path(base))
    _write(src, BLOCK_SIZE + 4096, os.urandom(4096))        # block 1: 4 KiB changed
    _write(src, 3 * BLOCK_SIZE, bytes(BLOCK_SIZE))            # block 3: now all zeros
    dest = where / "gen2" / "disk0.img"
    dest.parent.mkdir()
    recv_options = registry.StreamOptions(connect_timeout=20, listen_timeout=30,
                                          progress_timeout=30, verify_receive=verify)
    send, recv = _stream(tls, f"hash-{fs[:3]}-{int(verify)}", src,
                         FileOutput(dest, base, "gen1"), recv_options=recv_options)
    assert send.success and recv.success, (send.error, recv.error)
    assert sha256_file(dest) == sha256_file(src)
    assert send.checksum == recv.checksum == checksum_file(src)
    status, rstatus = send.status(), recv.status()
    assert status["mode"] == rstatus["mode"] == "hash"
    assert status["base"] == rstatus["base"] == "gen1"
    assert status["read_bytes"] == SIZE                        # hash mode reads it all
    assert status["changed_bytes"] == rstatus["changed_bytes"] == 2 * BLOCK_SIZE
    # block 1 travels whole, block 3 as one ZERO frame; the digests are small
    assert status["wire_bytes"] < BLOCK_SIZE + 4096
    assert rstatus["base_copy"] == ("reflink" if fs == "reflink_dir" else "copy")
    assert _is_hole(dest, 3 * BLOCK_SIZE, BLOCK_SIZE)
    index = BlockIndex.read(index_path(dest))
    assert index.base == "gen1" and index.checksum == send.checksum
    assert (sha256_file(base), sha256_file(index_path(base))) == (base_sha, base_index_sha)


def test_hash_mode_does_not_read_holes_that_were_holes(node: NodeContext,
                                                       tmp_path: Path) -> None:
    tls = _Tls(node)
    src = sparse_file(tmp_path / "src", SIZE, [(BLOCK_SIZE, os.urandom(BLOCK_SIZE))])
    base = tmp_path / "gen1" / "disk0.img"
    _full(tls, src, base)
    _write(src, 4 * BLOCK_SIZE, os.urandom(10))  # a new block inside a hole
    dest = tmp_path / "gen2" / "disk0.img"
    dest.parent.mkdir()
    send, recv = _stream(tls, "hash-holes", src, FileOutput(dest, base, "gen1"),
                         compress=COMPRESS_ZSTD)
    assert send.success and recv.success, (send.error, recv.error)
    assert sha256_file(dest) == sha256_file(src)
    status = send.status()
    assert status["read_bytes"] == DiskReader(src).data_bytes() < 3 * BLOCK_SIZE
    assert status["changed_bytes"] == BLOCK_SIZE
    # stays sparse: the new data lands in one 1 MiB piece, the rest are holes
    assert allocated_bytes(dest) <= allocated_bytes(src) + MIB


# --- extents mode -------------------------------------------------------------------

def test_extents_mode_reads_only_touched_blocks(node: NodeContext, reflink_dir: Path) -> None:
    tls = _Tls(node)
    src = _source(reflink_dir / "src.img")
    base = reflink_dir / "gen1" / "disk0.img"
    first = _full(tls, src, base)
    assert first.checksum is not None
    ranges = [(2 * BLOCK_SIZE + 8192, 4096), (5 * BLOCK_SIZE - 50, 100)]
    for offset, length in ranges:
        _write(src, offset, os.urandom(length))
    _write(src, SIZE - 34, bytes(34))                      # zeros at the end, also told
    ranges.append((SIZE - 34, 34))
    # unsorted and overlapping, as a careless driver might say it
    changes = Changes(first.checksum, [*ranges[::-1], (2 * BLOCK_SIZE + 8200, 10)])
    dest = reflink_dir / "gen2" / "disk0.img"
    dest.parent.mkdir()
    send, recv = _stream(tls, "extents", src, FileOutput(dest, base, "gen1"),
                         changes=changes)
    assert send.success and recv.success, (send.error, recv.error)
    assert changes.asked == [first.checksum]
    assert sha256_file(dest) == sha256_file(src)
    status = send.status()
    assert status["mode"] == "extents"
    # blocks 2, 4, 5 and the short last one are read whole, nothing else
    assert status["read_bytes"] == 3 * BLOCK_SIZE + 1234
    assert status["changed_bytes"] == 4096 + 100 + 34
    assert status["wire_bytes"] < 64 * 1024
    assert BlockIndex.read(index_path(dest)).checksum == send.checksum == checksum_file(src)


def test_extents_source_that_does_not_know_the_base_hashes_instead(
        node: NodeContext, tmp_path: Path) -> None:
    tls = _Tls(node)
    src = _source(tmp_path / "src.img")
    base = tmp_path / "gen1" / "disk0.img"
    _full(tls, src, base)
    _write(src, 7, b"changed")
    changes = Changes("blake3-4m:" + "0" * 64, [(7, 7)])  # a base for another target
    dest = tmp_path / "gen2" / "disk0.img"
    dest.parent.mkdir()
    send, recv = _stream(tls, "extents-other", src, FileOutput(dest, base, None),
                         changes=changes)
    assert send.success and recv.success, (send.error, recv.error)
    assert send.status()["mode"] == "hash" and send.status()["read_bytes"] == SIZE
    assert sha256_file(dest) == sha256_file(src)
    assert BlockIndex.read(index_path(dest)).base is None


# --- falling back to full -----------------------------------------------------------

def test_unusable_base_index_receives_in_full(node: NodeContext, tmp_path: Path) -> None:
    tls = _Tls(node)
    src = _source(tmp_path / "src.img")
    base = tmp_path / "gen1" / "disk0.img"
    _full(tls, src, base)
    raw = bytearray(index_path(base).read_bytes())
    raw[-1] ^= 1
    index_path(base).write_bytes(raw)
    dest = tmp_path / "gen2" / "disk0.img"
    dest.parent.mkdir()
    send, recv = _stream(tls, "bad-index", src, FileOutput(dest, base, "gen1"))
    assert send.success and recv.success, (send.error, recv.error)
    assert send.status()["mode"] == "full" and recv.status()["base_copy"] is None
    assert send.status()["changed_bytes"] == SIZE
    assert sha256_file(dest) == sha256_file(src)
    assert BlockIndex.read(index_path(dest)).base is None


def test_base_digest_count_mismatch_sends_everything(node: NodeContext,
                                                     tmp_path: Path) -> None:
    """A receiver announcing a base of another block count gets every block (full)."""
    tls = _Tls(node)
    src = sparse_file(tmp_path / "src", 3 * BLOCK_SIZE, [(10, os.urandom(100))])
    listener = Listener("127.0.0.1")
    send = registry.start_send("count-s", "test", "127.0.0.1", listener.port, tls.client,
                               "magic-count-001", lambda: DiskReader(src), COMPRESS_NONE,
                               INCREMENTAL)
    sock = listener.accept(tls.server, WAIT)
    frames = proto.FrameReader(sock.recv_into)
    _, payload = frames.expect(proto.HEADER)
    assert proto.decode_json(payload)["incremental"] is True
    digests = os.urandom(2 * 32)
    sock.sendall(proto.encode_json(proto.READY, {"base": {
        "generation": "g", "checksum": from_digests(2 * BLOCK_SIZE, digests).checksum,
        "blocks": 2}}))
    for frame in proto.digest_frames(proto.BASE, digests):
        sock.sendall(frame)
    covered: list[tuple[int, int, int]] = []
    blocks = bytearray()
    while True:
        ftype, payload = frames.expect(proto.DATA, proto.BLOCKS, proto.END)
        if ftype == proto.END:
            end = proto.decode_json(payload)
            break
        if ftype == proto.BLOCKS:
            proto.add_digests(blocks, payload, 3, "BLOCKS")
            continue
        offset, raw_len, encoding, _ = proto.decode_data(payload)
        covered.append((offset, raw_len, encoding))
    sock.sendall(proto.encode_json(proto.ACK, {"checksum": None, "ok": True}))
    assert send.join(WAIT) and send.success, send.error
    sock.close()
    registry.cleanup([send.id])
    assert end["mode"] == "full" and send.status()["mode"] == "full"
    assert sum(n for _, n, _ in covered) == 3 * BLOCK_SIZE  # zeros too: ZERO frames
    assert {enc for _, _, enc in covered} == {proto.ENC_RAW, proto.ENC_ZERO}
    assert from_digests(3 * BLOCK_SIZE, bytes(blocks)).checksum == end["checksum"] \
        == checksum_file(src)


# --- failures -----------------------------------------------------------------------

def test_failed_receive_removes_dump_and_index_and_keeps_the_base(
        node: NodeContext, tmp_path: Path) -> None:
    tls = _Tls(node)
    export = node.paths.export_dir
    src = _source(tmp_path / "src.img")
    base = export / "inst" / "disk0.img"
    _full(tls, src, base)
    before = (sha256_file(base), sha256_file(index_path(base)))
    staging = export / ".staging" / "inst" / "disk0.img"
    staging.parent.mkdir(parents=True)
    index_path(staging).write_bytes(b"left over by an earlier attempt")
    endpoint = bk.transfer_receive_start(
        node, "fail-r", {"kind": "file", "path": "/srv/ganeti/export/.staging/inst/disk0.img",
                         "base": "/srv/ganeti/export/inst/disk0.img",
                         "base_generation": "g1"},
        None, "magic-fail-0001", COMPRESS_NONE, {"bind": "127.0.0.1"})
    sock = connect("127.0.0.1", endpoint["port"], tls.client, WAIT)
    sock.sendall(proto.encode_json(proto.HEADER, proto.make_header(
        "magic-fail-0001", SIZE, SIZE, COMPRESS_NONE, incremental=True)))
    frames = proto.FrameReader(sock.recv_into)
    _, payload = frames.expect(proto.READY)
    ready = proto.parse_ready(proto.decode_json(payload))
    assert ready is not None and ready["generation"] == "g1" and ready["blocks"] == 7
    got = bytearray()
    while len(got) < 7 * 32:
        _, payload = frames.expect(proto.BASE)
        proto.add_digests(got, payload, 7, "BASE")
    assert bytes(got) == BlockIndex.read(index_path(base)).digests
    sock.sendall(proto.data_prefix(0, 5, proto.ENC_RAW, 5) + b"hello")
    sock.sendall(proto.data_prefix(BLOCK_SIZE, BLOCK_SIZE, proto.ENC_ZERO, 0))
    sock.sendall(proto.data_prefix(3 * BLOCK_SIZE, MIB, proto.ENC_RAW, MIB) + b"x" * 1000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    socket.socket.close(sock)  # the sender dies in the middle of a frame
    transfer = registry.get("fail-r")
    assert transfer is not None and transfer.join(WAIT)
    assert transfer.success is False and transfer.error
    assert not staging.exists() and not index_path(staging).exists()
    assert (sha256_file(base), sha256_file(index_path(base))) == before
    registry.cleanup(["fail-r"])


def test_verifying_receiver_with_a_base_catches_a_block_sent_without_data(
        node: NodeContext, tmp_path: Path) -> None:
    tls = _Tls(node)
    src = _source(tmp_path / "src.img")
    base = tmp_path / "gen1" / "disk0.img"
    _full(tls, src, base)
    dest = tmp_path / "gen2" / "disk0.img"
    dest.parent.mkdir()
    recv = registry.start_receive(
        "lie-r", "test", "127.0.0.1", tls.server, "magic-lie-00001", None,
        lambda n: DiskWriter.create(dest, n), lambda: dest.unlink(missing_ok=True),
        registry.StreamOptions(verify_receive=True), output=FileOutput(dest, base, "g1"))
    with connect("127.0.0.1", recv.port or 0, tls.client, WAIT) as sock:
        sock.sendall(proto.encode_json(proto.HEADER, proto.make_header(
            "magic-lie-00001", SIZE, SIZE, COMPRESS_NONE, incremental=True)))
        frames = proto.FrameReader(sock.recv_into)
        frames.expect(proto.READY)
        digests = bytearray()
        while len(digests) < 7 * 32:
            _, payload = frames.expect(proto.BASE)
            proto.add_digests(digests, payload, 7, "BASE")
        digests[64:96] = os.urandom(32)  # block 2 "changed", but no DATA for it
        for frame in proto.digest_frames(proto.BLOCKS, digests):
            sock.sendall(frame)
        checksum = from_digests(SIZE, bytes(digests)).checksum
        sock.sendall(proto.encode_json(proto.END, {"data_bytes": SIZE, "sent_bytes": 0,
                                                   "checksum": checksum, "mode": "hash"}))
        with pytest.raises(proto.PeerError, match=r"Block 2 \(offset 8388608\) changed"):
            frames.expect(proto.ACK)
    assert recv.join(WAIT) and recv.success is False
    registry.cleanup([recv.id])
    assert not dest.exists() and not index_path(dest).exists()


def test_version_2_peer_refused(node: NodeContext, tmp_path: Path) -> None:
    tls = _Tls(node)
    dest = tmp_path / "dest"
    recv = registry.start_receive("v2-r", "test", "127.0.0.1", tls.server, "magic-v2-00001",
                                  None, lambda n: DiskWriter.create(dest, n), None, OPTS)
    with connect("127.0.0.1", recv.port or 0, tls.client, WAIT) as sock:
        header = proto.make_header("magic-v2-00001", 10, 10, COMPRESS_NONE)
        sock.sendall(proto.encode_json(proto.HEADER, {**header, "version": 2}))
        with pytest.raises(proto.PeerError,
                           match=r"Unsupported protocol version 2 \(this node speaks 3\)"):
            proto.FrameReader(sock.recv_into).expect(proto.READY)
    assert recv.join(WAIT) and recv.success is False and not dest.exists()
    registry.cleanup([recv.id])


def test_dest_and_source_spec_checks(node: NodeContext) -> None:
    dest = {"kind": "file", "path": "/srv/ganeti/export/x/disk0.img"}
    for bad, message in ((dict(dest, base="/etc/passwd"), "outside"),
                         (dict(dest, base="/srv/ganeti/export/x/disk0.img"), "destination"),
                         (dict(dest, base_generation=5), "Invalid base_generation"),
                         (dict(dest, base_generation="a/b"), "Invalid base_generation")):
        with pytest.raises(RpcFail, match=message):
            bk.transfer_receive_start(node, "t1", bad, 10, "magic-magic", "none", {})
    with pytest.raises(RpcFail, match="Invalid incremental 1"):
        bk.transfer_send_start(node, "t1", {"kind": "file", "path": "/srv/ganeti/export/a"},
                               "127.0.0.1", 1, "magic-magic", "none", {"incremental": 1})
    with pytest.raises(RpcFail, match="Invalid origin"):
        bk.transfer_send_start(node, "t1", {"kind": "disk", "dev_type": "file",
                                            "logical_id": ["file", "/x"], "origin": "x"},
                               "127.0.0.1", 1, "magic-magic", "none", {})
    assert registry.list_transfers() == {}


# --- through the backend and the coordinator, with the file driver's export base -----

class FakeRpc:
    """Calls the backend procedures directly, one NodeContext per node name."""

    def __init__(self, nodes: dict[str, NodeContext]) -> None:
        self.nodes = nodes
        self.options: dict[str, dict[str, Any]] = {}

    def __getattr__(self, attr: str) -> Any:
        name = attr.removeprefix("call_")

        def one(node: str, args: tuple[Any, ...]) -> RpcResult:
            if name.endswith("_start"):
                self.options[name] = args[-1]
            try:
                return RpcResult(node, getattr(bk, name)(self.nodes[node], *args), call=name)
            except RpcFail as err:
                return RpcResult(node, fail_msg=str(err), call=name)

        def call(nodes: Any, *args: Any) -> Any:
            if isinstance(nodes, str):
                return one(nodes, args)
            return {node: one(node, args) for node in nodes}

        return call


def test_export_base_of_a_file_disk_gives_an_extents_stream(
        reflink_dir: Path, ca: tuple[str, str]) -> None:
    nodes = {name: _node(reflink_dir, name, ca) for name in ("node1", "node2")}
    rpc = FakeRpc(nodes)
    driver = storage.get_driver("file", nodes["node1"].paths)
    disk = sparse_file(nodes["node1"].paths.file_storage_dir / "inst" / "disk0", SIZE,
                   [(0, os.urandom(SIZE))])
    lid = ["file", str(disk)]

    def export(generation: str, base: str | None, recorded: str | None = None
               ) -> tuple[TransferResult, list[str]]:
        snap = driver.snapshot(lid, f"export-{generation}")
        dest: dict[str, Any] = {"kind": "file",
                                "path": f"/srv/ganeti/export/inst/{generation}/disk0.img"}
        if base is not None:
            dest.update(base=f"/srv/ganeti/export/inst/{base}/disk0.img",
                        base_generation=base)
        spec = DiskTransfer("disk/0", "node1",
                            {"kind": "disk", "dev_type": "file", "logical_id": snap,
                             "origin": lid},
                            "node2", dest, size=SIZE, dest_address="127.0.0.1",
                            incremental=base is not None)
        lines: list[str] = []
        (result,) = run_transfers(as_runner(rpc), [spec], lines.append, poll_interval=0.05)
        assert result.success, result.error
        assert result.checksum is not None
        assert driver.keep_export_base(lid, snap, {
            "checksum": recorded or result.checksum, "target": "node2", "instance": "inst",
            "generation": generation, "size": SIZE, "created": int(time.time())})
        return result, lines

    first, lines = export("g1", None)
    assert first.mode == "full" and any("disk/0 finished: " in line for line in lines)
    _write(disk, 4 * BLOCK_SIZE + 100, os.urandom(5000))
    second, lines = export("g2", "g1")
    assert rpc.options["transfer_send_start"]["incremental"] is True
    assert (second.mode, second.base, second.base_copy) == ("extents", "g1", "reflink")
    assert second.size == SIZE and second.read_bytes == BLOCK_SIZE
    assert 5000 <= second.changed_bytes <= BLOCK_SIZE
    assert any(line.startswith("disk/0: ") and line.endswith(", base g1 (extents)")
               for line in lines), lines
    dump = nodes["node2"].paths.export_dir / "inst" / "g2" / "disk0.img"
    assert sha256_file(dump) == sha256_file(disk)
    assert BlockIndex.read(index_path(dump)).checksum == second.checksum
    # a base whose record names other content (another target's) is not trusted
    _write(disk, 100, b"more")
    export("g3", "g2", recorded="blake3-4m:" + "1" * 64)
    _write(disk, 200, b"again")
    third, _ = export("g4", "g3")
    assert (third.mode, third.read_bytes) == ("hash", SIZE)
    dump = nodes["node2"].paths.export_dir / "inst" / "g4" / "disk0.img"
    assert sha256_file(dump) == sha256_file(disk)
    assert registry.list_transfers() == {}


def test_slow_base_copy_keeps_the_sender_waiting(node: NodeContext, noreflink_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A local base copy longer than the progress timeout: WAIT frames keep it alive."""
    tls = _Tls(node)
    src = _source(noreflink_dir / "src.img")
    base = noreflink_dir / "gen1" / "disk0.img"
    _full(tls, src, base)
    _write(src, 2 * BLOCK_SIZE, os.urandom(4096))
    real_copy = reflink.clone_or_copy

    def slow_copy(src_path: Any, dst: Any, should_stop: Any = None) -> str:
        time.sleep(3.0)                    # three times the progress timeout below
        return real_copy(src_path, dst, should_stop)

    monkeypatch.setattr(reflink, "clone_or_copy", slow_copy)
    monkeypatch.setattr(receiver, "WAIT_INTERVAL", 0.2)
    quick = registry.StreamOptions(connect_timeout=20, listen_timeout=30, progress_timeout=1,
                                   incremental=True)
    dest = noreflink_dir / "gen2" / "disk0.img"
    dest.parent.mkdir()
    send, recv = _stream(tls, "slowcopy", src, FileOutput(dest, base, "gen1"), options=quick,
                         recv_options=quick)
    assert send.success and recv.success, (send.error, recv.error)
    assert sha256_file(dest) == sha256_file(src)
    assert send.status()["changed_bytes"] == BLOCK_SIZE
