"""The disk driver contract shared by every storage backend, and the registry.

The node daemon never branches on the disk template itself: it asks
:func:`get_driver` for the driver of ``disk.dev_type`` and calls the same
operations for file and LVM disks.  A *logical id* is the JSON list stored in
the cluster configuration (``["file", "/path"]`` or ``[vg, lv]``); drivers
validate it on every call because it arrives over RPC.
"""

from __future__ import annotations

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

LogicalId = list[Any]

_SNAP_NAME_RE = re.compile(r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}$")


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
