"""Reflink snapshots of file disks, including consistency under concurrent writes.

The consistency proof runs a separate writer process (this file run as a
script) that rewrites the disk pass after pass.  Every 4 KiB block carries
its generation, its index and a checksum, so a snapshot can be checked
block by block for torn writes and as a whole for being one point in time.
"""

from __future__ import annotations

import hashlib
import os
import select
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ganeti import errors, pathutils
from ganeti.objects import Disk
from ganeti.storage import MIB, FileDiskDriver, allocated_bytes, open_reader

BLOCK = 4096
HEADER = struct.Struct("<QQ32s")  # generation, block index, sha256 of everything else
DISK_MIB = 8
WAIT = 120.0  # generous: other test runs share the two cores


def make_block(gen: int, index: int) -> bytes:
    seed = hashlib.sha256(struct.pack("<QQ", gen, index)).digest()
    payload = (seed * (BLOCK // len(seed)))[:BLOCK - HEADER.size]
    digest = hashlib.sha256(struct.pack("<QQ", gen, index) + payload).digest()
    return HEADER.pack(gen, index, digest) + payload


def check_block(block: bytes, index: int) -> int:
    """Generation of a self-consistent block; AssertionError for a torn one."""
    gen, idx, digest = HEADER.unpack_from(block)
    assert idx == index, f"block {index} carries index {idx}"
    assert hashlib.sha256(block[:16] + block[HEADER.size:]).digest() == digest, \
        f"block {index} (generation {gen}) is torn"
    assert block == make_block(gen, index), f"block {index} payload is not generation {gen}"
    return gen


def writer_main(path: str) -> None:
    """Rewrite every block, one pwrite per block, forever; report each finished pass."""
    fd = os.open(path, os.O_WRONLY)
    nblocks = os.fstat(fd).st_size // BLOCK
    gen = 0
    while True:
        gen += 1
        for index in range(nblocks):
            os.pwrite(fd, make_block(gen, index), index * BLOCK)
        print(gen, flush=True)
        if select.select([sys.stdin], [], [], 0)[0]:  # parent closed stdin: stop
            return


class Writer:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, str(path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def wait_pass(self) -> int:
        """Block until the writer reports its next finished pass."""
        assert self.proc.stdout is not None
        ready = select.select([self.proc.stdout], [], [], WAIT)[0]
        assert ready, "writer process made no progress"
        line = self.proc.stdout.readline()
        assert line, f"writer process died (exit code {self.proc.poll()})"
        return int(line)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def snapshot_generations(path: Path) -> list[int]:
    with open_reader(path) as reader:
        data = reader.read(0, reader.size)
    return [check_block(data[i * BLOCK:(i + 1) * BLOCK], i) for i in range(len(data) // BLOCK)]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_torn_blocks_are_detected() -> None:
    """The checker used by the consistency proof can fail."""
    assert check_block(make_block(7, 3), 3) == 7
    torn = make_block(1, 3)[:2048] + make_block(2, 3)[2048:]
    with pytest.raises(AssertionError, match="torn"):
        check_block(torn, 3)
    with pytest.raises(AssertionError, match="index"):
        check_block(make_block(1, 4), 3)


@pytest.fixture
def driver(reflink_dir: Path) -> FileDiskDriver:
    return FileDiskDriver(pathutils.Paths.for_root(None), storage_dir=reflink_dir)


def _create(driver: FileDiskDriver, size: int = DISK_MIB) -> list[str]:
    return driver.create("inst1", Disk(size=size, dev_type="file", iv_name="disk/0"))


def test_snapshot_is_an_independent_copy(driver: FileDiskDriver) -> None:
    lid = _create(driver)
    path = driver.device_path(lid)
    original = os.urandom(2 * MIB)
    with open(path, "r+b") as fh:
        fh.write(original)
    assert driver.can_snapshot_live(lid)
    snap = driver.snapshot(lid, "exp1")
    snap_path = driver.device_path(snap)
    assert snap == ["file", f"{path}.snap-exp1"]
    assert snap_path.stat().st_size == DISK_MIB * MIB
    with open(path, "r+b") as fh:
        fh.write(os.urandom(2 * MIB))
    with open_reader(snap_path) as reader:
        assert reader.read(0, 2 * MIB) == original
        assert reader.read(2 * MIB, MIB) == bytes(MIB)
    with open(snap_path, "r+b") as fh:  # and writing the snapshot leaves the origin alone
        fh.write(b"\0" * 4096)
    assert path.read_bytes()[:4096] != b"\0" * 4096


def test_snapshot_keeps_holes(driver: FileDiskDriver) -> None:
    lid = _create(driver, size=64)
    with open(driver.device_path(lid), "r+b") as fh:
        fh.seek(10 * MIB)
        fh.write(os.urandom(MIB))
    snap = driver.snapshot(lid, "exp1")
    with open_reader(driver.device_path(snap)) as reader:
        extents = list(reader.extents())
    assert extents == [(10 * MIB, MIB)]


def test_snapshot_name_clash_and_cleanup(driver: FileDiskDriver) -> None:
    lid = _create(driver)
    other = driver.create("inst1", Disk(size=1, dev_type="file", iv_name="disk/1"))
    first = driver.snapshot(lid, "a")
    second = driver.snapshot(lid, "b")
    driver.snapshot(other, "a")
    with pytest.raises(errors.StorageError, match="already exists"):
        driver.snapshot(lid, "a")
    assert driver.list_snapshots(lid) == [first, second]
    driver.remove_snapshot(first)
    driver.remove_snapshot(first)
    assert driver.list_snapshots(lid) == [second]
    driver.remove_snapshot(second)
    assert driver.list_snapshots(lid) == []
    assert driver.exists(lid)
    assert len(driver.list_snapshots(other)) == 1


def test_snapshots_under_concurrent_writes_are_consistent_and_stable(
        driver: FileDiskDriver) -> None:
    lid = _create(driver)
    path = driver.device_path(lid)
    nblocks = DISK_MIB * MIB // BLOCK
    writer = Writer(path)
    snaps: list[tuple[Path, list[int], str]] = []
    try:
        writer.wait_pass()  # every block now carries a generation
        for n in range(5):
            writer.wait_pass()  # the origin has changed since the last snapshot
            snap_path = driver.device_path(driver.snapshot(lid, f"s{n}"))
            gens = snapshot_generations(snap_path)  # asserts: no torn block
            assert len(gens) == nblocks
            # one point in time: passes run in block order, so the snapshot is
            # generation g+1 up to some block and generation g after it
            assert gens == sorted(gens, reverse=True), f"snapshot s{n} mixes passes"
            assert gens[0] - gens[-1] <= 1
            snaps.append((snap_path, gens, file_hash(snap_path)))
        last_gen = max(snaps[-1][1])
        while writer.wait_pass() < last_gen + 2:
            pass
        for snap_path, gens, digest in snaps:  # the origin keeps changing, snapshots not
            assert file_hash(snap_path) == digest
            assert snapshot_generations(snap_path) == gens
    finally:
        writer.stop()
    assert writer.proc.returncode == 0
    assert min(snapshot_generations(path)) > last_gen
    assert [gens[0] for _, gens, _ in snaps] == sorted(gens[0] for _, gens, _ in snaps)
    assert len(driver.list_snapshots(lid)) == 5
    for snap in driver.list_snapshots(lid):
        driver.remove_snapshot(snap)
    assert driver.list_snapshots(lid) == []
    assert allocated_bytes(path) >= DISK_MIB * MIB


if __name__ == "__main__":
    writer_main(sys.argv[1])
