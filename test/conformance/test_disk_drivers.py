"""One contract, every disk driver (as restic tests every backend).

Each test runs against every driver registered in ``ganeti.storage`` on real
storage: file disks on the test directory's own filesystem (live snapshots
work only where it has reflink), on the shared reflink test filesystem
(test/support/fsfixture.py: btrfs where mkfs.btrfs exists) and on a reflink XFS loop
filesystem (slow: its own mkfs and mount), and plain (LVM) disks in a
scratch volume group on a loop device, skipped with the reason where
device-mapper or lvm2 is missing.  Per-driver details stay in
test/unit/test_storage_*.py.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.fsfixture import FsUnavailable, mount_reflink_fs
from support.lvm import lvm_unavailable, scratch_volume_group

from ganeti import constants, errors, pathutils
from ganeti.objects import Disk
from ganeti.storage import (
    MIB,
    SNAP_MARKER,
    DiskDriver,
    FileDiskDriver,
    LvmDiskDriver,
    SnapshotUnsupportedError,
    get_driver,
    supported_dev_types,
)

CASES = {
    "file": constants.DT_FILE,
    "file-reflink": constants.DT_FILE,
    "file-xfs": constants.DT_FILE,
    "lvm": constants.DT_PLAIN,
}
SLOW = {"file-xfs"}


def test_every_driver_has_a_case() -> None:
    assert set(CASES.values()) == set(supported_dev_types())


@dataclass
class Setup:
    name: str
    driver: DiskDriver
    # logical id of a disk that is not there (for the "missing" contract)
    missing_id: list[Any]
    # a logical id the driver must refuse whatever it is asked
    foreign_id: list[Any]


@pytest.fixture(scope="module")
def xfs_dir() -> Iterator[Path]:
    """A reflink XFS of its own, in a fixed slot per worker so a crashed run's is reused."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    slot = Path(tempfile.gettempdir()) / f"ganeti-test-xfs-{worker}"
    fd = os.open(f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.skip(f"{slot} is in use by another test run")
        try:
            mnt, cleanup = mount_reflink_fs(slot, fstypes=("xfs",))
        except FsUnavailable as err:
            pytest.skip(f"no reflink XFS filesystem: {err}")
        try:
            yield mnt
        finally:
            cleanup()
    finally:
        os.close(fd)


@pytest.fixture
def real_vg(tmp_path: Path) -> Iterator[str]:
    reason = lvm_unavailable()
    if reason:
        pytest.skip(reason)
    with scratch_volume_group(tmp_path, "gntconf") as vg:
        yield vg


def _file_setup(name: str, storage_dir: Path) -> Setup:
    paths = pathutils.Paths.for_root(storage_dir.parent / "root")
    driver = get_driver(constants.DT_FILE, paths, storage_dir=storage_dir)
    assert isinstance(driver, FileDiskDriver)
    return Setup(name, driver, ["file", str(storage_dir / "inst9" / "gone.disk0")],
                 ["file", str(storage_dir.parent / "elsewhere.img")])


@pytest.fixture(params=[pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else [])
                        for n in CASES])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    name = request.param
    if name == "file":
        return _file_setup(name, tmp_path / "storage")
    if name == "file-reflink":
        return _file_setup(name, request.getfixturevalue("reflink_dir") / "storage")
    if name == "file-xfs":
        base = request.getfixturevalue("xfs_dir") / tmp_path.name
        base.mkdir()
        request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
        return _file_setup(name, base / "storage")
    vg = request.getfixturevalue("real_vg")
    driver = get_driver(constants.DT_PLAIN, pathutils.Paths.for_root(tmp_path),
                        vg_name=vg, snapshot_floor_mib=8)
    assert isinstance(driver, LvmDiskDriver)
    return Setup(name, driver, [vg, "gone.disk0"], [vg, "../../etc/passwd"])


@pytest.fixture
def driver(setup: Setup) -> Iterator[DiskDriver]:
    yield setup.driver


_counter = iter(range(1_000_000))


def _disk(size: int = 8) -> Disk:
    return Disk(size=size, dev_type="file", iv_name=f"disk/{next(_counter)}")


def _write(driver: DiskDriver, lid: list[Any], offset: int, data: bytes) -> None:
    with open(driver.device_path(lid), "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _read(driver: DiskDriver, lid: list[Any], offset: int, length: int) -> bytes:
    with driver.open_reader(lid) as reader:
        return reader.read(offset, length)


def test_create_exists_size_and_reads_zeros(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    assert driver.exists(lid)
    assert driver.size_mib(lid) == 8
    assert driver.device_path(lid).exists()
    with driver.open_reader(lid) as reader:
        assert reader.size == 8 * MIB
        assert reader.read(0, 4096) == bytes(4096)
    assert driver.list_snapshots(lid) == []
    driver.remove(lid)


def test_create_refuses_an_existing_disk_and_keeps_it(driver: DiskDriver) -> None:
    disk = _disk(8)
    lid = driver.create("inst1", disk)
    _write(driver, lid, 0, b"keep me")
    disk.logical_id = lid
    with pytest.raises(errors.StorageError):
        driver.create("inst1", disk)
    assert _read(driver, lid, 0, 7) == b"keep me"
    driver.remove(lid)


def test_grow_keeps_data_and_refuses_to_shrink(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    _write(driver, lid, MIB, b"payload")
    driver.grow(lid, 8)  # the same size: nothing to do
    driver.grow(lid, 16)
    assert driver.size_mib(lid) == 16
    assert _read(driver, lid, MIB, 7) == b"payload"
    with pytest.raises(errors.StorageError, match="shrink"):
        driver.grow(lid, 4)
    assert driver.size_mib(lid) == 16
    driver.remove(lid)


@pytest.mark.parametrize("size", [2**50, 2**60])  # beyond any device, beyond 64-bit bytes
def test_impossible_sizes_are_a_storage_error_and_leave_nothing(driver: DiskDriver,
                                                                size: int) -> None:
    disk = _disk(8)
    with pytest.raises(errors.StorageError):
        driver.create("inst1", disk.model_copy(update={"size": size}))
    lid = driver.create("inst1", disk)
    _write(driver, lid, 0, b"kept")
    with pytest.raises(errors.StorageError):
        driver.grow(lid, size)
    assert driver.size_mib(lid) == 8
    assert _read(driver, lid, 0, 4) == b"kept"
    driver.remove(lid)
    assert not driver.exists(lid)


def test_remove_is_idempotent(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    driver.remove(lid)
    assert not driver.exists(lid)
    driver.remove(lid)
    assert not driver.exists(lid)


def test_missing_disk(driver: DiskDriver, setup: Setup) -> None:
    lid = setup.missing_id
    assert not driver.exists(lid)
    assert driver.list_snapshots(lid) == []
    assert not driver.can_snapshot_live(lid)
    driver.remove(lid)
    driver.remove_snapshot([lid[0], lid[1] + SNAP_MARKER + "x"])
    for call in (lambda: driver.size_mib(lid), lambda: driver.grow(lid, 16),
                 lambda: driver.snapshot(lid, "s1")):
        with pytest.raises(errors.StorageError):
            call()
    assert driver.list_snapshots(lid) == []


def test_open_writer_writes_in_place_and_keeps_size(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    data = os.urandom(10000)
    with driver.open_writer(lid) as writer:
        assert writer.size == 8 * MIB
        writer.write_at(5 * MIB, data)
        with pytest.raises(errors.StorageError, match="outside"):
            writer.write_at(8 * MIB - 1, b"xy")
    assert driver.size_mib(lid) == 8
    assert _read(driver, lid, 5 * MIB, len(data)) == data
    driver.remove(lid)


def test_snapshot_is_a_point_in_time_copy_or_refused(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    _write(driver, lid, 0, b"before")
    if not driver.can_snapshot_live(lid):
        with pytest.raises(SnapshotUnsupportedError):
            driver.snapshot(lid, "s1")
        assert driver.list_snapshots(lid) == [], "a refused snapshot leaves nothing"
        driver.remove(lid)
        return
    snap = driver.snapshot(lid, "s1")
    _write(driver, lid, 0, b"after!")
    assert _read(driver, snap, 0, 6) == b"before"
    assert _read(driver, lid, 0, 6) == b"after!"
    assert driver.exists(snap)
    assert driver.list_snapshots(lid) == [snap]
    with pytest.raises(errors.StorageError):
        driver.snapshot(lid, "s1")  # the name is taken
    assert driver.list_snapshots(lid) == [snap]
    driver.remove_snapshot(snap)
    driver.remove_snapshot(snap)  # idempotent
    assert driver.list_snapshots(lid) == []
    assert _read(driver, lid, 0, 6) == b"after!"
    driver.remove(lid)


def test_snapshots_are_listed_per_disk_in_name_order(driver: DiskDriver) -> None:
    a = driver.create("inst1", _disk(8))
    b = driver.create("inst1", _disk(8))
    if not driver.can_snapshot_live(a):
        pytest.skip("no live snapshots on this storage")
    snaps = [driver.snapshot(a, name) for name in ("s2", "s1")]
    other = driver.snapshot(b, "s1")
    assert driver.list_snapshots(a) == sorted(snaps)
    assert driver.list_snapshots(b) == [other]
    for snap in [*snaps, other]:
        driver.remove_snapshot(snap)
    assert driver.list_snapshots(a) == driver.list_snapshots(b) == []
    driver.remove(a)
    driver.remove(b)


def test_removing_a_disk_removes_its_snapshots(driver: DiskDriver) -> None:
    # as lvremove does with an origin: no snapshot outlives its disk unseen
    lid = driver.create("inst1", _disk(8))
    keep = driver.create("inst1", _disk(8))
    if not driver.can_snapshot_live(lid):
        pytest.skip("no live snapshots on this storage")
    snap = driver.snapshot(lid, "s1")
    other = driver.snapshot(keep, "s1")
    driver.remove(lid)
    assert not driver.exists(lid) and not driver.exists(snap)
    assert driver.list_snapshots(lid) == []
    assert driver.list_snapshots(keep) == [other], "another disk's snapshots stay"
    driver.remove(keep)


def test_remove_snapshot_refuses_a_disk(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    with pytest.raises(errors.StorageError, match="not a snapshot"):
        driver.remove_snapshot(lid)
    assert driver.exists(lid)
    driver.remove(lid)


@pytest.mark.parametrize("snap_name", ["", ".hidden", "a/b", "x" * 65, "a b", "../up"])
def test_invalid_snapshot_names_make_nothing(driver: DiskDriver, snap_name: str) -> None:
    lid = driver.create("inst1", _disk(8))
    with pytest.raises(errors.StorageError, match="Invalid snapshot name"):
        driver.snapshot(lid, snap_name)
    assert driver.list_snapshots(lid) == []
    driver.remove(lid)


@pytest.mark.parametrize("bad", [None, [], ["only-one"], ["a", "b", "c"], ["", "x"],
                                 [1, 2], "file"])
def test_malformed_logical_ids_are_refused_everywhere(driver: DiskDriver, bad: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: driver.exists(bad), lambda: driver.size_mib(bad), lambda: driver.remove(bad),
        lambda: driver.grow(bad, 16), lambda: driver.device_path(bad),
        lambda: driver.snapshot(bad, "s1"), lambda: driver.remove_snapshot(bad),
        lambda: driver.list_snapshots(bad), lambda: driver.can_snapshot_live(bad)]
    for call in calls:
        with pytest.raises(errors.StorageError):
            call()


def test_ids_outside_the_driver_s_storage_are_refused(driver: DiskDriver,
                                                      setup: Setup) -> None:
    bad = setup.foreign_id
    for call in (lambda: driver.exists(bad), lambda: driver.remove(bad),
                 lambda: driver.device_path(bad), lambda: driver.grow(bad, 16),
                 lambda: driver.list_snapshots(bad)):
        with pytest.raises(errors.StorageError):
            call()


def test_disk_name_that_looks_like_a_snapshot_is_refused(driver: DiskDriver,
                                                         setup: Setup) -> None:
    disk = _disk(8)
    vg_or_driver, base = setup.missing_id
    disk.logical_id = [vg_or_driver, base + SNAP_MARKER + "x"]
    with pytest.raises(errors.StorageError, match="looks like a snapshot"):
        driver.create("inst9", disk)
    assert not driver.exists(disk.logical_id)


# -- export bases (doc/incremental-exports.md): kept, or refused with False ---

def _base_record(size: int) -> dict[str, Any]:
    return {"checksum": "blake3-4m:" + "0f" * 32, "target": "node3", "instance": "inst1",
            "generation": "20261130T031500Z", "size": size, "created": 1764472500}


def test_export_base_is_kept_or_refused(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    assert driver.export_base(lid) is None
    driver.drop_export_base(lid)    # none yet: fine
    _write(driver, lid, 0, os.urandom(8 * MIB))
    if not driver.can_snapshot_live(lid):
        driver.remove(lid)
        pytest.skip("no live snapshots on this storage")
    snap = driver.snapshot(lid, "export-1")
    before = _read(driver, snap, 0, 8 * MIB)
    if not driver.keep_export_base(lid, snap, _base_record(8 * MIB)):
        # this storage keeps no bases: the snapshot is still the caller's to remove
        assert driver.exists(snap) and driver.export_base(lid) is None
        driver.remove_snapshot(snap)
        driver.remove(lid)
        return
    assert not driver.exists(snap)
    found = driver.export_base(lid)
    assert found is not None
    base, record = found
    assert record == _base_record(8 * MIB)
    assert driver.list_snapshots(lid) == [base]
    assert _read(driver, base, 0, 8 * MIB) == before

    change = os.urandom(5000)
    _write(driver, lid, 3 * MIB + 10, change)
    snap2 = driver.snapshot(lid, "export-2")
    ranges = driver.changed_ranges(base, snap2)
    if ranges is not None:   # None: cannot tell, the caller hashes instead
        assert any(o <= 3 * MIB + 10 and 3 * MIB + 10 + len(change) <= o + n
                   for o, n in ranges), ranges
        assert sum(n for _, n in ranges) < MIB
        pos = 0
        for offset, length in [*ranges, (8 * MIB, 0)]:
            assert _read(driver, base, pos, offset - pos) == \
                _read(driver, snap2, pos, offset - pos)
            pos = offset + length
    driver.remove_snapshot(snap2)
    driver.drop_export_base(lid)
    assert driver.export_base(lid) is None and driver.list_snapshots(lid) == []
    driver.drop_export_base(lid)
    assert driver.exists(lid)
    driver.remove(lid)


def test_removing_a_disk_removes_its_export_base(driver: DiskDriver) -> None:
    lid = driver.create("inst1", _disk(8))
    if not driver.can_snapshot_live(lid):
        driver.remove(lid)
        pytest.skip("no live snapshots on this storage")
    snap = driver.snapshot(lid, "export-1")
    if not driver.keep_export_base(lid, snap, _base_record(8 * MIB)):
        driver.remove(lid)
        assert not driver.exists(snap)
        return
    found = driver.export_base(lid)
    assert found is not None
    driver.remove(lid)
    assert not driver.exists(found[0]) and driver.export_base(lid) is None


def test_missing_disk_has_no_export_base(driver: DiskDriver, setup: Setup) -> None:
    assert driver.export_base(setup.missing_id) is None
    driver.drop_export_base(setup.missing_id)
