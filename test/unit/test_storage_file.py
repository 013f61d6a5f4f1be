"""File disk driver: lifecycle, sparseness, path safety and the driver registry."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ganeti import errors, pathutils
from ganeti.objects import Disk
from ganeti.storage import (
    MIB,
    FileDiskDriver,
    LvmDiskDriver,
    SnapshotUnsupportedError,
    allocated_bytes,
    get_driver,
    supported_dev_types,
)


@pytest.fixture
def paths(tmp_path: Path) -> pathutils.Paths:
    return pathutils.Paths.for_root(tmp_path / "root")


@pytest.fixture
def driver(paths: pathutils.Paths) -> FileDiskDriver:
    drv = get_driver("file", paths)
    assert isinstance(drv, FileDiskDriver)
    return drv


def _disk(size: int = 16, idx: int = 0) -> Disk:
    return Disk(size=size, dev_type="file", iv_name=f"disk/{idx}")


def test_registry_maps_templates_to_drivers(paths: pathutils.Paths) -> None:
    assert supported_dev_types() == ["file", "plain"]
    assert isinstance(get_driver("plain", paths), LvmDiskDriver)
    with pytest.raises(errors.StorageError, match="Unsupported disk template 'drbd'"):
        get_driver("drbd", paths)


def test_create_is_sparse_and_under_instance_dir(driver: FileDiskDriver,
                                                 paths: pathutils.Paths) -> None:
    disk = _disk(size=256, idx=1)
    lid = driver.create("inst1.example.com", disk)
    path = driver.device_path(lid)
    assert lid == ["file", str(path)]
    assert path.parent == paths.file_storage_dir / "inst1.example.com"
    assert path.name == f"{disk.uuid}.disk1"
    assert driver.exists(lid)
    assert path.stat().st_size == 256 * MIB
    assert driver.size_mib(lid) == 256
    assert allocated_bytes(path) < 64 * 1024


def test_create_refuses_existing_disk(driver: FileDiskDriver) -> None:
    disk = _disk()
    lid = driver.create("inst1", disk)
    disk.logical_id = lid
    with pytest.raises(errors.StorageError, match="already exists"):
        driver.create("inst1", disk)


def test_create_uses_given_logical_id(driver: FileDiskDriver, paths: pathutils.Paths) -> None:
    target = paths.file_storage_dir / "inst2" / "custom.img"
    lid = driver.create("inst2", Disk(size=1, dev_type="file",
                                      logical_id=["file", str(target)]))
    assert lid == ["file", str(target)]
    assert target.stat().st_size == MIB


def test_grow_keeps_data_and_refuses_shrink(driver: FileDiskDriver) -> None:
    lid = driver.create("inst1", _disk(size=4))
    path = driver.device_path(lid)
    payload = os.urandom(4096)
    with open(path, "r+b") as fh:
        fh.seek(3 * MIB)
        fh.write(payload)
    driver.grow(lid, 64)
    assert driver.size_mib(lid) == 64
    with open(path, "rb") as fh:
        fh.seek(3 * MIB)
        assert fh.read(4096) == payload
    assert allocated_bytes(path) < MIB
    with pytest.raises(errors.StorageError, match="Cannot shrink"):
        driver.grow(lid, 8)
    assert driver.size_mib(lid) == 64


def test_remove_is_idempotent_and_drops_empty_instance_dir(driver: FileDiskDriver) -> None:
    lid0 = driver.create("inst1", _disk(idx=0))
    lid1 = driver.create("inst1", _disk(idx=1))
    inst_dir = driver.device_path(lid0).parent
    driver.remove(lid0)
    assert not driver.exists(lid0)
    assert inst_dir.is_dir()  # still holds disk 1
    driver.remove(lid0)
    driver.remove(lid1)
    assert not inst_dir.exists()
    driver.remove(lid1)


def test_missing_disk_has_no_size(driver: FileDiskDriver, paths: pathutils.Paths) -> None:
    lid = ["file", str(paths.file_storage_dir / "ghost" / "x.disk0")]
    assert not driver.exists(lid)
    with pytest.raises(errors.StorageError, match="does not exist"):
        driver.size_mib(lid)
    with pytest.raises(errors.StorageError, match="does not exist"):
        driver.grow(lid, 10)


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "relative/path",
    "{root}/inst/../../../etc/shadow",
    "{root}",
])
def test_paths_outside_storage_dir_are_refused(driver: FileDiskDriver, path: str) -> None:
    lid = ["file", path.format(root=driver.storage_dir)]
    with pytest.raises(errors.FileStoragePathError, match="not inside"):
        driver.exists(lid)
    with pytest.raises(errors.FileStoragePathError):
        driver.remove(lid)


@pytest.mark.parametrize("lid", [["nbd", "/x/y"], ["file"], "file:/x", ["file", 7]])
def test_malformed_logical_ids_are_refused(driver: FileDiskDriver, lid: object) -> None:
    with pytest.raises(errors.StorageError):
        driver.exists(lid)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "..", "a/b", "."])
def test_bad_instance_names_are_refused(driver: FileDiskDriver, name: str) -> None:
    with pytest.raises(errors.FileStoragePathError):
        driver.create(name, _disk())


def test_open_writer_replaces_content_and_keeps_size(driver: FileDiskDriver) -> None:
    lid = driver.create("inst1", _disk(size=8))
    path = driver.device_path(lid)
    with open(path, "r+b") as fh:
        fh.write(b"\xff" * MIB)
    data = os.urandom(10000)
    with driver.open_writer(lid) as writer:
        writer.write_at(5 * MIB, data)
    assert path.stat().st_size == 8 * MIB
    with driver.open_reader(lid) as reader:
        assert reader.size == 8 * MIB
        assert reader.read(0, MIB) == bytes(MIB)  # old content is gone
        assert reader.read(5 * MIB, len(data)) == data
    assert allocated_bytes(path) < MIB


def test_snapshot_without_reflink_is_refused(noreflink_dir: Path) -> None:
    drv = FileDiskDriver(pathutils.Paths.for_root(None), storage_dir=noreflink_dir)
    lid = drv.create("inst1", _disk(size=4))
    assert not drv.can_snapshot_live(lid)
    with pytest.raises(SnapshotUnsupportedError, match="lacks reflink") as info:
        drv.snapshot(lid, "exp1")
    assert isinstance(info.value, errors.StorageError)
    assert drv.list_snapshots(lid) == []
    assert sorted(p.name for p in drv.device_path(lid).parent.iterdir()) == \
        [drv.device_path(lid).name]


def test_snapshot_leftovers_are_listed_and_removed(driver: FileDiskDriver) -> None:
    lid = driver.create("inst1", _disk(idx=0))
    other = driver.create("inst1", _disk(idx=1))
    path = driver.device_path(lid)
    # what a crashed export leaves behind, whichever filesystem it ran on
    for name in ("exp-a", "exp-b"):
        path.with_name(f"{path.name}.snap-{name}").write_bytes(b"x")
    snaps = driver.list_snapshots(lid)
    assert snaps == [["file", f"{path}.snap-exp-a"], ["file", f"{path}.snap-exp-b"]]
    assert driver.list_snapshots(other) == []
    for snap in snaps:
        driver.remove_snapshot(snap)
        driver.remove_snapshot(snap)
    assert driver.list_snapshots(lid) == []
    assert driver.exists(lid)


def test_remove_snapshot_refuses_a_real_disk(driver: FileDiskDriver) -> None:
    lid = driver.create("inst1", _disk())
    with pytest.raises(errors.StorageError, match="not a snapshot"):
        driver.remove_snapshot(lid)
    assert driver.exists(lid)


@pytest.mark.parametrize("snap_name", ["", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_invalid_snapshot_names(driver: FileDiskDriver, snap_name: str) -> None:
    lid = driver.create("inst1", _disk())
    with pytest.raises(errors.StorageError, match="Invalid snapshot name"):
        driver.snapshot(lid, snap_name)


def test_reader_sees_what_was_written(driver: FileDiskDriver) -> None:
    lid = driver.create("inst1", _disk(size=2))
    data = os.urandom(2 * MIB)
    with open(driver.device_path(lid), "r+b") as fh:
        fh.write(data)
    with driver.open_reader(lid) as reader:
        digest = hashlib.sha256()
        for offset, length in reader.extents(chunk=300_000):
            digest.update(reader.read(offset, length))
    assert digest.digest() == hashlib.sha256(data).digest()
