"""The export base of file disks: keep, replace, read back, drop, and who leaves it alone.

Real files on the reflink test filesystem (snapshots are reflink clones);
the RPC and maintenance tests use the loopback cluster, whose disks live on
the test directory's own filesystem (an existing file stands in for the
export's snapshot there: only its name and xattr matter to them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env

from ganeti import constants, errors, opcodes, pathutils, storage
from ganeti.objects import Disk
from ganeti.storage import MIB, FileDiskDriver
from ganeti.storage.base import EXPORT_BASE_SNAP, check_export_base_record
from ganeti.storage.filedisk import EXPORT_BASE_XATTR

STAMP = "20261130T031500Z"


def _record(size_: int, **changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"checksum": "blake3-4m:" + "ab" * 32, "target": "node3",
                           "instance": "inst1", "generation": STAMP, "size": size_,
                           "created": 1764472500}
    rec.update(changes)
    return rec


@pytest.fixture
def driver(reflink_dir: Path) -> FileDiskDriver:
    drv = storage.get_driver(constants.DT_FILE, pathutils.Paths.for_root(reflink_dir / "root"),
                             storage_dir=reflink_dir / "storage")
    assert isinstance(drv, FileDiskDriver)
    return drv


def _disk(driver: FileDiskDriver, size_mib: int = 8) -> list[Any]:
    return driver.create("inst1", Disk(size=size_mib, dev_type="file", iv_name="disk/0"))


def _write(driver: FileDiskDriver, lid: list[Any], offset: int, data: bytes) -> None:
    fd = os.open(driver.device_path(lid), os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _content(driver: FileDiskDriver, lid: list[Any]) -> bytes:
    return driver.device_path(lid).read_bytes()


def _base_path(driver: FileDiskDriver, lid: list[Any]) -> Path:
    disk = driver.device_path(lid)
    return disk.with_name(disk.name + constants.SNAP_MARKER + EXPORT_BASE_SNAP)


def test_keep_makes_the_snapshot_the_base(driver: FileDiskDriver) -> None:
    lid = _disk(driver)
    _write(driver, lid, MIB, os.urandom(2 * MIB))
    snap = driver.snapshot(lid, f"export-{STAMP}")
    expected = _content(driver, snap)
    _write(driver, lid, MIB, b"later")     # the disk moves on; the base must not
    assert driver.export_base(lid) is None

    assert driver.keep_export_base(lid, snap, _record(8 * MIB)) is True
    assert not driver.exists(snap), "the snapshot was renamed, not copied"
    found = driver.export_base(lid)
    assert found is not None
    base, record = found
    assert base == ["file", str(_base_path(driver, lid))]
    assert record == _record(8 * MIB)
    assert _content(driver, base) == expected
    assert driver.list_snapshots(lid) == [base]
    assert os.stat(driver.device_path(base)).st_mode & 0o777 == 0o600
    raw = os.getxattr(driver.device_path(base), EXPORT_BASE_XATTR)
    assert json.loads(raw) == _record(8 * MIB)


def test_keep_replaces_the_older_base(driver: FileDiskDriver) -> None:
    lid = _disk(driver)
    _write(driver, lid, 0, b"first")
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), _record(8 * MIB))
    _write(driver, lid, 0, b"second")
    snap = driver.snapshot(lid, "export-2")
    new_record = _record(8 * MIB, generation=None, checksum="blake3-4m:" + "cd" * 32)
    assert driver.keep_export_base(lid, snap, new_record) is True
    found = driver.export_base(lid)
    assert found is not None
    base, record = found
    assert record == new_record
    assert _content(driver, base)[:6] == b"second"
    assert driver.list_snapshots(lid) == [base], "one base, no leftovers"


def test_changed_ranges_between_the_base_and_a_new_snapshot(driver: FileDiskDriver) -> None:
    lid = _disk(driver, 16)
    _write(driver, lid, 0, os.urandom(16 * MIB))
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), _record(16 * MIB))
    _write(driver, lid, 5 * MIB, os.urandom(MIB))
    _write(driver, lid, 12 * MIB + 100, b"z" * 10)
    snap = driver.snapshot(lid, "export-2")
    found = driver.export_base(lid)
    assert found is not None
    ranges = driver.changed_ranges(found[0], snap)
    assert ranges is not None
    block = os.statvfs(driver.device_path(lid).parent).f_bsize
    assert ranges[0][0] <= 5 * MIB and ranges[0][0] + ranges[0][1] >= 6 * MIB
    assert any(o <= 12 * MIB + 100 and o + n >= 12 * MIB + 110 for o, n in ranges)
    assert sum(n for _, n in ranges) <= MIB + 4 * block
    assert driver.changed_ranges(found[0], found[0]) == []
    # the ids are checked like every other
    with pytest.raises(errors.StorageError):
        driver.changed_ranges(["file", "/etc/passwd"], snap)
    with pytest.raises(errors.StorageError, match="Cannot compare"):
        driver.changed_ranges(found[0], [snap[0], snap[1] + "-gone"])


def test_drop_is_idempotent(driver: FileDiskDriver) -> None:
    lid = _disk(driver)
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), _record(8 * MIB))
    driver.drop_export_base(lid)
    assert driver.export_base(lid) is None
    assert driver.list_snapshots(lid) == []
    driver.drop_export_base(lid)
    assert driver.exists(lid)


def test_removing_the_disk_removes_its_base(driver: FileDiskDriver) -> None:
    lid = _disk(driver)
    other = driver.create("inst1", Disk(size=8, dev_type="file", iv_name="disk/1"))
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), _record(8 * MIB))
    driver.keep_export_base(other, driver.snapshot(other, "export-1"), _record(8 * MIB))
    base = _base_path(driver, lid)
    assert base.exists()
    driver.remove(lid)
    assert not base.exists() and driver.export_base(lid) is None
    assert driver.export_base(other) is not None, "another disk's base stays"


@pytest.mark.parametrize("raw", [
    b"", b"not json", b"\xff\xfe", b"[]", b"null",
    json.dumps(_record(8 * MIB, size=4 * MIB)).encode(),          # not the file's size
    json.dumps(_record(8 * MIB, checksum="md5")).encode(),
    json.dumps(_record(8 * MIB, size=True)).encode(),
    json.dumps(_record(8 * MIB, extra=1)).encode(),
    json.dumps({k: v for k, v in _record(8 * MIB).items() if k != "target"}).encode(),
    b" " * 5000,
], ids=["empty", "text", "binary", "list", "null", "size", "checksum", "bool-size",
        "extra-field", "no-target", "huge"])
def test_a_bad_record_means_no_base(driver: FileDiskDriver, raw: bytes) -> None:
    lid = _disk(driver)
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), _record(8 * MIB))
    base = _base_path(driver, lid)
    if raw:
        os.setxattr(base, EXPORT_BASE_XATTR, raw)
    else:
        os.removexattr(base, EXPORT_BASE_XATTR)
    assert driver.export_base(lid) is None
    assert base.exists(), "reading never removes anything"


def test_a_base_that_is_not_a_regular_file_is_ignored(driver: FileDiskDriver) -> None:
    lid = _disk(driver)
    elsewhere = driver.device_path(lid).parent / "elsewhere"
    elsewhere.write_bytes(bytes(8 * MIB))
    _base_path(driver, lid).symlink_to(elsewhere)
    assert driver.export_base(lid) is None


@pytest.mark.parametrize("changes, field", [
    ({"checksum": "blake3-4m:XYZ"}, "checksum"),
    ({"checksum": 5}, "checksum"),
    ({"target": ""}, "target"),
    ({"instance": "a/b"}, "instance"),
    ({"generation": "../x"}, "generation"),
    ({"generation": 7}, "generation"),
    ({"size": -1}, "size"),
    ({"size": 1.5}, "size"),
    ({"size": 4 * MIB}, "size"),       # valid, but not the snapshot's size
    ({"created": float("nan")}, "created"),
    ({"created": "now"}, "created"),
    ({"surprise": 1}, "surprise"),
])
def test_keep_refuses_a_bad_record_and_changes_nothing(driver: FileDiskDriver,
                                                        changes: dict[str, Any],
                                                        field: str) -> None:
    lid = _disk(driver)
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), _record(8 * MIB))
    snap = driver.snapshot(lid, "export-2")
    with pytest.raises(errors.StorageError, match=field):
        driver.keep_export_base(lid, snap, _record(8 * MIB, **changes))
    assert driver.exists(snap), "the caller still owns (and removes) the snapshot"
    found = driver.export_base(lid)
    assert found is not None and found[1] == _record(8 * MIB), "the old base is kept"


def test_keep_refuses_what_is_not_this_disk_s_snapshot(driver: FileDiskDriver) -> None:
    lid = _disk(driver)
    other = driver.create("inst1", Disk(size=8, dev_type="file", iv_name="disk/1"))
    other_snap = driver.snapshot(other, "export-1")
    rec = _record(8 * MIB)
    for disk_id, snap_id, match in (
            (lid, other_snap, "not a snapshot of"),
            (lid, lid, "not a snapshot of"),
            (lid, [lid[0], lid[1] + ".snap-gone"], "does not exist"),
            (other_snap, other_snap, "is a snapshot, not a disk"),
            (lid, ["file", "/tmp/x.snap-1"], "not inside")):
        with pytest.raises(errors.StorageError, match=match):
            driver.keep_export_base(disk_id, snap_id, rec)
    driver.keep_export_base(lid, driver.snapshot(lid, "export-1"), rec)
    base = driver.export_base(lid)
    assert base is not None
    with pytest.raises(errors.StorageError, match="already the export base"):
        driver.keep_export_base(lid, base[0], rec)
    assert driver.exists(other_snap) and driver.export_base(other) is None


def test_record_check_names_the_field() -> None:
    assert check_export_base_record(_record(10)) == _record(10)
    with pytest.raises(errors.StorageError, match=r"missing field.*size"):
        check_export_base_record({k: v for k, v in _record(10).items() if k != "size"})
    with pytest.raises(errors.StorageError, match="expected a mapping"):
        check_export_base_record(["checksum"])


# -- through the RPC layer and next to the maintenance LU (loopback cluster) ---

def _fake_snapshot(disk: Path, name: str) -> list[Any]:
    snap = disk.with_name(disk.name + constants.SNAP_MARKER + name)
    os.truncate(disk, disk.stat().st_size)
    snap.write_bytes(disk.read_bytes())
    return ["file", str(snap)]


def test_rpc_keeps_the_base_and_reports_bad_records(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.create("inst1", disks=[{"size": 1}])
    disk = env.inst().disks[0]
    snap = _fake_snapshot(Path(disk.logical_id[1]), "export-1")
    bad = env.rpc.call_blockdev_keep_export_base("node2", disk.dev_type, disk.logical_id,
                                                  snap, _record(MIB, size=5))
    assert bad.fail_msg and "'size'" in bad.fail_msg
    res = env.rpc.call_blockdev_keep_export_base("node2", disk.dev_type, disk.logical_id,
                                                  snap, _record(MIB))
    assert not res.fail_msg and res.payload is True
    driver = storage.get_driver(constants.DT_FILE, env.roots["node2"].paths)
    found = driver.export_base(disk.logical_id)
    assert found is not None and found[1] == _record(MIB)
    assert not Path(snap[1]).exists()


def test_leftover_cleanup_keeps_the_export_base(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.create("inst1", disks=[{"size": 1}])
    disk = env.inst().disks[0]
    path = Path(disk.logical_id[1])
    driver = storage.get_driver(constants.DT_FILE, env.roots["node2"].paths)
    assert driver.keep_export_base(disk.logical_id, _fake_snapshot(path, "export-1"),
                                   _record(MIB))
    leftover = _fake_snapshot(path, f"export-{STAMP}")
    report = env.run(opcodes.OpClusterCleanupLeftovers.create())
    assert report["snapshots"] == [leftover[1]]
    assert not Path(leftover[1]).exists()
    found = driver.export_base(disk.logical_id)
    assert found is not None and found[1] == _record(MIB)
    orphans = env.rpc.call_file_storage_orphans("node2", [str(path)])
    assert orphans.payload == [], "the base belongs to its disk, not an orphan"


def test_storage_without_export_bases_keeps_none(tmp_path: Path) -> None:
    """The defaults (LVM): nothing kept, nothing found, nothing to compare."""
    lvm = storage.get_driver(constants.DT_PLAIN, pathutils.Paths.for_root(tmp_path),
                             vg_name="xenvg")
    lid = ["xenvg", "d.disk0"]
    assert lvm.keep_export_base(lid, ["xenvg", "d.disk0.snap-export-1"], _record(MIB)) is False
    assert lvm.export_base(lid) is None
    lvm.drop_export_base(lid)
    assert lvm.changed_ranges(lid, ["xenvg", "d.disk0.snap-export-1"]) is None
