"""The disk driver contract shared by every storage backend, and the registry.

The node daemon never branches on the disk template itself: it asks
:func:`get_driver` for the driver of ``disk.dev_type`` and calls the same
operations for file and LVM disks.  A *logical id* is the JSON list stored in
the cluster configuration (``["file", "/path"]`` or ``[vg, lv]``); drivers
validate it on every call because it arrives over RPC.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ganeti import constants, errors, pathutils
from ganeti.objects import Disk
from ganeti.storage.extents import DiskReader, DiskWriter

MIB = 1024 * 1024

SNAP_MARKER = constants.SNAP_MARKER

# The snapshot kept as a disk's export base: "<disk><SNAP_MARKER>backup-base".
# Not matched by the maintenance LU's ".snap-export-" leftover cleanup.
EXPORT_BASE_SNAP = "backup-base"

LogicalId = list[Any]

_SNAP_NAME_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}$")

# the export base record: what the base snapshot's content was exported as
EXPORT_BASE_FIELDS = ("checksum", "target", "instance", "generation", "size", "created")
_CHECKSUM_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}:[0-9a-f]{16,128}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:+-]{0,254}$")


class SnapshotUnsupportedError(errors.StorageError):
    """The disk cannot be snapshotted while in use (e.g. no reflink support).

    Callers fall back to reading a stopped instance's disk directly, or
    keep a running instance down for the copy (``long_sleep``).
    """


def check_snap_name(snap_name: str) -> str:
    """Snapshot names end up in file and LV names, so keep them to a safe alphabet."""
    if not isinstance(snap_name, str) or not _SNAP_NAME_RE.match(snap_name):
        raise errors.StorageError(
            f"Invalid snapshot name {snap_name!r}: use up to 64 characters from"
            " [A-Za-z0-9._+-], not starting with a dot")
    return snap_name


def check_export_base_record(record: Any) -> dict[str, Any]:
    """The record, checked field by field; it comes over RPC and back from disk.

    Raises StorageError naming the first bad field; returns a plain copy.
    """
    if not isinstance(record, dict):
        raise errors.StorageError(f"Invalid export base record {record!r}: expected a mapping")
    unknown = sorted(set(record) - set(EXPORT_BASE_FIELDS))
    missing = [key for key in EXPORT_BASE_FIELDS if key not in record]
    if unknown or missing:
        raise errors.StorageError(
            "Invalid export base record: "
            + "; ".join(([f"unknown field(s) {', '.join(map(repr, unknown))}"] if unknown
                         else [])
                        + ([f"missing field(s) {', '.join(missing)}"] if missing else [])))

    def bad(field: str, want: str) -> errors.StorageError:
        return errors.StorageError(
            f"Invalid export base record field '{field}': {record[field]!r} ({want})")

    if not isinstance(record["checksum"], str) or not _CHECKSUM_RE.match(record["checksum"]):
        raise bad("checksum", "expected '<algorithm>:<hex digest>'")
    for field in ("target", "instance"):
        if not isinstance(record[field], str) or not _NAME_RE.match(record[field]):
            raise bad(field, "expected a node or instance name")
    generation = record["generation"]
    if generation is not None and (not isinstance(generation, str)
                                   or not _SNAP_NAME_RE.match(generation)):
        raise bad("generation", "expected a generation name or null")
    size = record["size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise bad("size", "expected a byte count")
    created = record["created"]
    if isinstance(created, bool) or not isinstance(created, (int, float)) \
            or not math.isfinite(created) or created < 0:
        raise bad("created", "expected seconds since the epoch")
    return {key: record[key] for key in EXPORT_BASE_FIELDS}


def snapshot_name_of(base_name: str, snap_name: str) -> str:
    return f"{base_name}{SNAP_MARKER}{check_snap_name(snap_name)}"


class DiskDriver(ABC):
    """Operations the node daemon performs on one kind of disk.

    All sizes given in MiB are those of ``objects.Disk.size``; byte sizes
    appear only on readers and writers.  Removal operations are idempotent
    so that cleanup after a failure can simply be repeated.
    """

    dev_type: str = ""

    @abstractmethod
    def create(self, instance_name: str, disk: Disk) -> LogicalId:
        """Create the disk (``disk.size`` MiB) and return the logical id to store."""

    @abstractmethod
    def remove(self, logical_id: Sequence[Any]) -> None:
        """Remove the disk; a missing disk is not an error."""

    @abstractmethod
    def grow(self, logical_id: Sequence[Any], new_size_mib: int) -> None:
        """Grow the disk to ``new_size_mib``; shrinking is refused."""

    @abstractmethod
    def device_path(self, logical_id: Sequence[Any]) -> Path:
        """What the hypervisor opens: an image file or a block device."""

    @abstractmethod
    def exists(self, logical_id: Sequence[Any]) -> bool: ...

    @abstractmethod
    def size_mib(self, logical_id: Sequence[Any]) -> int: ...

    @abstractmethod
    def can_snapshot_live(self, logical_id: Sequence[Any]) -> bool:
        """Whether :meth:`snapshot` can be expected to work while the disk is in use."""

    @abstractmethod
    def snapshot(self, logical_id: Sequence[Any], snap_name: str) -> LogicalId:
        """Take a point-in-time copy; raises :class:`SnapshotUnsupportedError`."""

    @abstractmethod
    def remove_snapshot(self, snap_logical_id: Sequence[Any]) -> None:
        """Remove a snapshot made by :meth:`snapshot`; missing is not an error."""

    @abstractmethod
    def list_snapshots(self, logical_id: Sequence[Any]) -> list[LogicalId]:
        """Logical ids of every existing snapshot of this disk (to clean leftovers)."""

    # -- export bases (incremental exports, doc/incremental-exports.md) -------
    # Defaults: this storage keeps no export bases and cannot tell changes.

    def keep_export_base(self, logical_id: Sequence[Any], snap_logical_id: Sequence[Any],
                         record: dict[str, Any]) -> bool:
        """Make the snapshot the disk's export base, atomically replacing an older base.

        False: this storage keeps no bases (the caller then removes the snapshot).
        """
        return False

    def export_base(self, logical_id: Sequence[Any]) -> tuple[LogicalId, dict[str, Any]] | None:
        """The disk's export base and its record, or None (none, or record unreadable)."""
        return None

    def drop_export_base(self, logical_id: Sequence[Any]) -> None:
        """Remove the disk's export base; none is fine."""
        return None

    def changed_ranges(self, base_logical_id: Sequence[Any],
                       snap_logical_id: Sequence[Any]) -> list[tuple[int, int]] | None:
        """Sorted, merged (offset, length) byte ranges of the snapshot that may differ
        from the base; None: cannot tell (the caller hashes everything instead)."""
        return None

    def open_reader(self, logical_id: Sequence[Any]) -> DiskReader:
        """Read a disk or a snapshot (sparse-aware where the device allows)."""
        return DiskReader(self.device_path(logical_id))

    def open_writer(self, logical_id: Sequence[Any]) -> DiskWriter:
        """Overwrite an existing disk's whole content (imports); size is kept."""
        return DiskWriter.for_existing(self.device_path(logical_id))


DriverFactory = Callable[..., DiskDriver]

_REGISTRY: dict[str, DriverFactory] = {}


def register_driver(dev_type: str, factory: DriverFactory) -> None:
    """Make ``factory(paths, **options)`` the driver for ``dev_type``."""
    _REGISTRY[dev_type] = factory


def supported_dev_types() -> list[str]:
    return sorted(_REGISTRY)


def get_driver(dev_type: str, paths: pathutils.Paths | None = None,
               **options: Any) -> DiskDriver:
    """The driver for a disk template; ``paths`` defaults to ``pathutils.current()``."""
    try:
        factory = _REGISTRY[dev_type]
    except KeyError:
        raise errors.StorageError(
            f"Unsupported disk template '{dev_type}' (known: "
            f"{', '.join(supported_dev_types()) or 'none'})") from None
    return factory(paths if paths is not None else pathutils.current(), **options)


def check_logical_id(logical_id: Sequence[Any], what: str) -> tuple[str, str]:
    """Both drivers use two-string logical ids; reject anything else early."""
    if (not isinstance(logical_id, (list, tuple)) or len(logical_id) != 2
            or not all(isinstance(part, str) and part for part in logical_id)):
        raise errors.StorageError(f"Invalid {what} logical id {logical_id!r}")
    return logical_id[0], logical_id[1]
