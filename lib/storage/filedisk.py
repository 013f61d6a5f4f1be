"""File-backed disks: sparse image files under ``<file storage dir>/<instance>/``.

Live snapshots are reflink clones placed next to the image, which makes them
instant and consistent but requires a filesystem with ``FICLONE`` (btrfs,
XFS with reflink, ...).  Every logical id is checked to point inside the
storage directory, since it reaches us over RPC and we run as root.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ganeti import constants, errors, pathutils
from ganeti.objects import Disk
from ganeti.storage import fiemap, reflink
from ganeti.storage.base import (
    EXPORT_BASE_SNAP,
    MIB,
    SNAP_MARKER,
    DiskDriver,
    LogicalId,
    check_export_base_record,
    check_logical_id,
    snapshot_name_of,
)

# Ganeti names the first element of a file logical id after the access driver.
FILE_DRIVERS = frozenset({"file", "loop"})

_IV_INDEX_RE = re.compile(r"^disk/(\d+)$")

# The export base's record lives on the base file itself, so the two can
# never disagree about which snapshot they describe (a rename keeps it).
EXPORT_BASE_XATTR = "user.ganeti.export_base"
_MAX_RECORD_BYTES = 4096
# errno values meaning "this filesystem cannot store user extended attributes"
_NO_XATTR = frozenset({errno.EOPNOTSUPP, errno.ENOSYS})


def _check_component(name: str, what: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise errors.FileStoragePathError(f"Invalid {what} '{name}' for a file disk path")
    return name


class FileDiskDriver(DiskDriver):
    """Driver for the ``file`` disk template."""

    dev_type = constants.DT_FILE

    def __init__(self, paths: pathutils.Paths,
                 storage_dir: str | os.PathLike[str] | None = None) -> None:
        self.storage_dir = Path(os.path.normpath(storage_dir or paths.file_storage_dir))

    def _path(self, logical_id: Sequence[Any]) -> Path:
        driver, raw = check_logical_id(logical_id, "file disk")
        if driver not in FILE_DRIVERS:
            raise errors.StorageError(f"Unknown file driver '{driver}' in {logical_id!r}")
        norm = os.path.normpath(raw)
        path = Path(norm)
        if norm != raw.rstrip("/") or not path.is_absolute() \
                or self.storage_dir not in path.parents:
            raise errors.FileStoragePathError(
                f"File disk path {raw} is not inside the file storage directory"
                f" {self.storage_dir}")
        return path

    def _new_path(self, instance_name: str, disk: Disk) -> Path:
        match = _IV_INDEX_RE.match(disk.iv_name)
        suffix = f".disk{match.group(1)}" if match else ".disk"
        return self.storage_dir / _check_component(instance_name, "instance name") \
            / _check_component(f"{disk.uuid}{suffix}", "disk name")

    def create(self, instance_name: str, disk: Disk) -> LogicalId:
        path = self._path(disk.logical_id) if disk.logical_id \
            else self._new_path(instance_name, disk)
        if SNAP_MARKER in path.name:
            raise errors.StorageError(f"Disk file name {path.name} looks like a snapshot")
        new_dir = not path.parent.exists()
        try:
            path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise errors.StorageError(f"Disk file {path} already exists") from None
        except OSError as err:
            self._remove_empty_dir(path.parent, new_dir)
            raise errors.StorageError(f"Cannot create disk file {path}: {err}") from None
        try:
            os.ftruncate(fd, disk.size * MIB)
        except (OSError, OverflowError) as err:
            # OverflowError: a size beyond a 64-bit offset; whatever failed, the
            # half-made file (and a directory made for it) must not stay behind
            os.close(fd)
            path.unlink(missing_ok=True)
            self._remove_empty_dir(path.parent, new_dir)
            raise errors.StorageError(
                f"Cannot size disk file {path} to {disk.size} MiB: {err}") from None
        os.close(fd)
        return ["file", str(path)]

    def _remove_empty_dir(self, directory: Path, made_now: bool) -> None:
        if made_now and directory.parent == self.storage_dir:
            try:
                directory.rmdir()
            except OSError:
                pass

    def orphan_files(self, owned: set[str]) -> list[str]:
        """Files under the storage dir that no disk in ``owned`` (paths) accounts for.

        Snapshots of an owned disk count as owned (the cleanup handles them).
        """
        found: list[str] = []
        if not self.storage_dir.is_dir():
            return found
        for entry in sorted(self.storage_dir.rglob("*")):
            if entry.is_dir():
                continue
            path = str(entry)
            base = path.split(SNAP_MARKER, 1)[0] if SNAP_MARKER in entry.name else path
            if base not in owned:
                found.append(path)
        return found

    def remove(self, logical_id: Sequence[Any]) -> None:
        """The disk and its snapshots (as lvremove removes an origin's), so none is left."""
        path = self._path(logical_id)
        for snap in self.list_snapshots(logical_id):
            self.remove_snapshot(snap)
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise errors.StorageError(f"Cannot remove disk file {path}: {err}") from None
        if path.parent.parent == self.storage_dir:
            try:  # the instance directory goes with its last file
                path.parent.rmdir()
            except OSError:
                pass

    def grow(self, logical_id: Sequence[Any], new_size_mib: int) -> None:
        path = self._path(logical_id)
        current = self._stat_size(path)
        new_size = new_size_mib * MIB
        if new_size < current:
            raise errors.StorageError(
                f"Cannot shrink disk file {path} from {current // MIB} to {new_size_mib} MiB")
        try:
            os.truncate(path, new_size)
        except (OSError, OverflowError) as err:  # OverflowError: beyond a 64-bit offset
            raise errors.StorageError(
                f"Cannot grow disk file {path} to {new_size_mib} MiB: {err}") from None

    def device_path(self, logical_id: Sequence[Any]) -> Path:
        return self._path(logical_id)

    def exists(self, logical_id: Sequence[Any]) -> bool:
        return self._path(logical_id).is_file()

    def size_mib(self, logical_id: Sequence[Any]) -> int:
        return self._stat_size(self._path(logical_id)) // MIB

    @staticmethod
    def _stat_size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            raise errors.StorageError(f"Disk file {path} does not exist") from None
        except OSError as err:
            raise errors.StorageError(f"Cannot stat disk file {path}: {err}") from None

    def can_snapshot_live(self, logical_id: Sequence[Any]) -> bool:
        path = self._path(logical_id)
        return path.is_file() and reflink.supports_reflink(path.parent)

    def snapshot(self, logical_id: Sequence[Any], snap_name: str) -> LogicalId:
        path = self._path(logical_id)
        if not path.is_file():
            raise errors.StorageError(f"Cannot snapshot {path}: disk file does not exist")
        snap = path.with_name(snapshot_name_of(path.name, snap_name))
        reflink.clone_file(path, snap)
        return ["file", str(snap)]

    def remove_snapshot(self, snap_logical_id: Sequence[Any]) -> None:
        path = self._path(snap_logical_id)
        if SNAP_MARKER not in path.name:
            raise errors.StorageError(f"{path} is not a snapshot; refusing to remove it")
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            raise errors.StorageError(f"Cannot remove snapshot {path}: {err}") from None

    def list_snapshots(self, logical_id: Sequence[Any]) -> list[LogicalId]:
        path = self._path(logical_id)
        prefix = path.name + SNAP_MARKER
        try:
            names = sorted(entry.name for entry in os.scandir(path.parent)
                           if entry.name.startswith(prefix) and entry.is_file())
        except FileNotFoundError:
            return []
        return [["file", str(path.parent / name)] for name in names]

    # -- export bases ---------------------------------------------------------

    def _disk_path(self, logical_id: Sequence[Any]) -> Path:
        path = self._path(logical_id)
        if SNAP_MARKER in path.name:
            raise errors.StorageError(f"{path} is a snapshot, not a disk")
        return path

    @staticmethod
    def _base_path(disk_path: Path) -> Path:
        return disk_path.with_name(snapshot_name_of(disk_path.name, EXPORT_BASE_SNAP))

    def keep_export_base(self, logical_id: Sequence[Any], snap_logical_id: Sequence[Any],
                         record: dict[str, Any]) -> bool:
        """Record the snapshot's export on it, then rename it over the old base.

        The record is written (and synced) before the rename, so at every
        instant the disk has either the old base with its record or the new
        one with its own.  False where the filesystem has no user xattrs.
        """
        path = self._disk_path(logical_id)
        snap = self._path(snap_logical_id)
        base = self._base_path(path)
        if snap.parent != path.parent or not snap.name.startswith(path.name + SNAP_MARKER):
            raise errors.StorageError(f"{snap} is not a snapshot of {path}")
        if snap == base:
            raise errors.StorageError(f"{snap} is already the export base of {path}")
        rec = check_export_base_record(record)
        try:
            st = os.lstat(snap)
        except FileNotFoundError:
            raise errors.StorageError(f"Snapshot {snap} does not exist") from None
        except OSError as err:
            raise errors.StorageError(f"Cannot stat snapshot {snap}: {err}") from None
        if not stat.S_ISREG(st.st_mode):
            raise errors.StorageError(f"Snapshot {snap} is not a regular file")
        if rec["size"] != st.st_size:
            raise errors.StorageError(
                f"Invalid export base record field 'size': {rec['size']} bytes, but"
                f" snapshot {snap} has {st.st_size}")
        data = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
        try:
            os.setxattr(snap, EXPORT_BASE_XATTR, data, follow_symlinks=False)
        except OSError as err:
            if err.errno in _NO_XATTR:
                return False
            raise errors.StorageError(
                f"Cannot record the export base on {snap}: {err}") from None
        try:
            _fsync_path(snap)
            os.replace(snap, base)
            _fsync_path(path.parent)
        except OSError as err:
            raise errors.StorageError(
                f"Cannot make {snap} the export base of {path}: {err}") from None
        return True

    def export_base(self, logical_id: Sequence[Any]) -> tuple[LogicalId, dict[str, Any]] | None:
        """None also for a base whose record is missing, unreadable or of another size."""
        base = self._base_path(self._disk_path(logical_id))
        try:
            st = os.lstat(base)
            if not stat.S_ISREG(st.st_mode):
                return None
            raw = os.getxattr(base, EXPORT_BASE_XATTR, follow_symlinks=False)
        except OSError:  # no base, no record, no xattrs here
            return None
        if len(raw) > _MAX_RECORD_BYTES:
            return None
        try:
            rec = check_export_base_record(json.loads(raw.decode("utf-8")))
        except (ValueError, errors.StorageError):  # UnicodeDecodeError is a ValueError
            return None
        if rec["size"] != st.st_size:
            return None
        return ["file", str(base)], rec

    def drop_export_base(self, logical_id: Sequence[Any]) -> None:
        base = self._base_path(self._disk_path(logical_id))
        try:
            base.unlink(missing_ok=True)
        except OSError as err:
            raise errors.StorageError(f"Cannot remove export base {base}: {err}") from None

    def changed_ranges(self, base_logical_id: Sequence[Any],
                       snap_logical_id: Sequence[Any]) -> list[tuple[int, int]] | None:
        """From the files' physical extents (FIEMAP); None where they cannot be compared."""
        base = self._path(base_logical_id)
        snap = self._path(snap_logical_id)
        try:
            return fiemap.changed_ranges(base, snap)
        except OSError as err:
            raise errors.StorageError(
                f"Cannot compare the extents of {base} and {snap}: {err}") from None


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
