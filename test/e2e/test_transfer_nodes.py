"""Disk transfers between real node daemons of a 3-node local cluster."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path

import pytest
from support.cluster import E2ECluster

from ganeti import constants, daemon
from ganeti.rpc.client import RpcRunner
from ganeti.tools.local_cluster import NodeSpec
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import checksum_file
from ganeti.transfer.master.coordinator import DiskTransfer, run_transfers

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
WAIT = 120.0
# zstd level 19 needs about 2 s per 4 MiB block of text here: slow enough that
# progress lines appear and a daemon can be killed mid-stream
SLOW_LEVEL = 19
_PROGRESS_RE = re.compile(
    r"^disk/0 sent \d+(\.\d)?[BKMGT]?, \d+\.\d MiB/s, \d+%(, ETA (\d+h )?(\d+m )?\d+s)?$")
_FINISHED_RE = re.compile(
    r"^disk/0 finished: \d+(\.\d)?[BKMGT]? in \d+\.\ds, \d+\.\d MiB/s,"
    r" checksum blake3-4m:[0-9a-f]{64}$")


def _text_block(seed: int) -> bytes:
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(2, 8)).hex().encode() for _ in range(2000)]
    return b" ".join(rnd.choice(words) for _ in range(700000))[:BLOCK_SIZE]


def _make_source(node: NodeSpec, name: str, blocks: int) -> tuple[Path, str]:
    """A 1 GiB sparse image with ``blocks`` text blocks spread over it."""
    directory = node.paths.file_storage_dir / "inst1"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with open(path, "wb") as handle:
        handle.truncate(1024 * MIB)
        for index in range(blocks):
            handle.seek(index * 200 * MIB + 12345)
            handle.write(_text_block(index))
    return path, f"/var/lib/ganeti/file-storage/inst1/{name}"


def _spec(cluster: E2ECluster, src_wire: str, dest_name: str) -> DiskTransfer:
    source, target = cluster.nodes[1], cluster.nodes[2]
    return DiskTransfer("disk/0", source.name, {"kind": "file", "path": src_wire},
                        target.name,
                        {"kind": "file", "path": f"/srv/ganeti/export/inst1/{dest_name}"},
                        size=1024 * MIB, compress="zstd", dest_address=target.address)


def test_transfer_between_nodes_with_progress(cluster: E2ECluster, rpc: RpcRunner) -> None:
    src, src_wire = _make_source(cluster.nodes[1], "disk0", 2)
    lines: list[str] = []
    (result,) = run_transfers(rpc, [_spec(cluster, src_wire, "disk0.snap")], lines.append,
                              poll_interval=0.2, report_interval=0.5,
                              compress_level=SLOW_LEVEL, progress_timeout=WAIT)
    assert result.success, result.error
    dest = cluster.nodes[2].paths.export_dir / "inst1" / "disk0.snap"
    assert os.stat(dest).st_size == os.stat(src).st_size
    assert os.stat(dest).st_blocks * 512 < 16 * MIB  # holes stayed holes
    with open(src, "rb") as a, open(dest, "rb") as b:
        for index in range(2):
            a.seek(index * 200 * MIB + 12345)
            b.seek(index * 200 * MIB + 12345)
            assert a.read(BLOCK_SIZE) == b.read(BLOCK_SIZE)
    assert result.checksum == checksum_file(dest) == checksum_file(src)
    progress = [line for line in lines if " sent " in line]
    assert progress, lines
    assert all(_PROGRESS_RE.match(line) for line in progress), progress
    assert _FINISHED_RE.match(lines[-1]), lines
    assert result.checksum and result.checksum in lines[-1]
    # both daemons forgot the transfer
    for node in cluster.nodes[1:]:
        listing = rpc.call_transfer_list([node.name])[node.name]
        assert not listing.failed and listing.payload == {}


def _dead_or_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _forget_killed_daemon(node: NodeSpec, pid: int) -> None:
    """SIGKILL leaves the pid file behind (and maybe a zombie nobody reaps)."""
    deadline = time.monotonic() + WAIT
    while not _dead_or_zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    node.paths.pid_file(constants.NODED).unlink(missing_ok=True)


def test_receiver_daemon_killed_mid_transfer(cluster: E2ECluster, rpc: RpcRunner) -> None:
    source, target = cluster.nodes[1], cluster.nodes[2]
    _, src_wire = _make_source(source, "disk1", 4)
    killed: list[int] = []

    def sleep_then_kill(seconds: float) -> None:
        # the event we wait for is the receiver having written data
        time.sleep(seconds)
        if killed:
            return
        listing = rpc.call_transfer_list([target.name])[target.name]
        if listing.failed or not any(st["bytes"] > 0 for st in listing.payload.values()):
            return
        pid = daemon.read_pid(target.paths.pid_file(constants.NODED))
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    lines: list[str] = []
    try:
        (result,) = run_transfers(rpc, [_spec(cluster, src_wire, "disk1.snap")],
                                  lines.append, poll_interval=0.2, report_interval=60,
                                  compress_level=SLOW_LEVEL, progress_timeout=WAIT,
                                  sleep_fn=sleep_then_kill)
        assert killed, "the transfer ended before the receiver could be killed"
        assert not result.success
        assert result.error and result.error.startswith("disk/0: ")
        # whichever is seen first: the dead receiver node or the sender's lost connection
        assert target.name in result.error
        assert "unreachable" in result.error or "does not answer" in result.error
        assert any(line.startswith("disk/0 failed: ") for line in lines)
        # the sender side was cleaned up on its node
        listing = rpc.call_transfer_list([source.name])[source.name]
        assert not listing.failed and listing.payload == {}
    finally:
        if killed:
            _forget_killed_daemon(target, killed[0])
        cluster.start(log=lambda _msg: None)
    assert rpc.call_ping([target.name])[target.name].payload is True
