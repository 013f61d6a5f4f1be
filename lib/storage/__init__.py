"""Node-side disk storage: one driver per disk template behind a common interface.

Typical use in the node daemon::

    driver = storage.get_driver(disk.dev_type, pathutils.current())
    logical_id = driver.create(instance.name, disk)
    with driver.open_reader(logical_id) as reader:
        for offset, length in reader.extents(chunk=storage.CHUNK): ...
"""

from __future__ import annotations

from ganeti import constants
from ganeti.storage.base import (
    MIB,
    SNAP_MARKER,
    DiskDriver,
    LogicalId,
    SnapshotUnsupportedError,
    get_driver,
    register_driver,
    supported_dev_types,
)
from ganeti.storage.extents import (
    CHUNK,
    DiskReader,
    DiskWriter,
    allocated_bytes,
    copy_sparse,
    open_reader,
    open_writer,
)
from ganeti.storage.filedisk import FileDiskDriver
from ganeti.storage.lvm import LvmDiskDriver

register_driver(constants.DT_FILE, FileDiskDriver)
register_driver(constants.DT_PLAIN, LvmDiskDriver)

__all__ = [
    "CHUNK",
    "MIB",
    "SNAP_MARKER",
    "DiskDriver",
    "DiskReader",
    "DiskWriter",
    "FileDiskDriver",
    "LogicalId",
    "LvmDiskDriver",
    "SnapshotUnsupportedError",
    "allocated_bytes",
    "copy_sparse",
    "get_driver",
    "open_reader",
    "open_writer",
    "register_driver",
    "supported_dev_types",
]
