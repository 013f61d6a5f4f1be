"""Block device procedures: create, remove, grow and snapshot instance disks.

Every procedure goes through the storage driver of the disk's template, which
checks the logical id it gets from the wire (paths must stay inside the
storage directory); failures come back to the master as one clear line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ganeti import constants, errors, storage
from ganeti.backend import NodeContext, RpcFail
from ganeti.objects import Disk
from ganeti.rpc import encoders
from ganeti.rpc.contract import procedure
from ganeti.storage.filedisk import FileDiskDriver

_T = TypeVar("_T")


def _driver(ctx: NodeContext, dev_type: str) -> storage.DiskDriver:
    try:
        return storage.get_driver(dev_type, ctx.paths)
    except errors.GenericError as err:
        raise RpcFail(str(err.args[0] if err.args else err)) from None


def _guard(what: str, func: Callable[[], _T]) -> _T:
    """Run a driver call, turning its errors into RpcFail naming the operation."""
    try:
        return func()
    except errors.GenericError as err:
        detail = "; ".join(str(a) for a in err.args) or type(err).__name__
        raise RpcFail(f"{what}: {detail}") from None
    except OSError as err:
        raise RpcFail(f"{what}: {err}") from None


@procedure("slow", single_node=True, encoders={"disk": encoders.disk})
def blockdev_create(ctx: NodeContext, instance_name: str, disk: dict[str, Any]) -> list[Any]:
    """Create one disk of an instance (Disk.to_dict()); payload is the logical id to store."""
    if not instance_name:
        raise RpcFail(f"Invalid instance name {instance_name!r}")
    try:
        disk_obj = Disk.from_dict(disk)
    except errors.ConfigurationError as err:
        raise RpcFail(str(err)) from None
    driver = _driver(ctx, disk_obj.dev_type)
    return _guard(f"Cannot create disk {disk_obj.iv_name or disk_obj.uuid} of {instance_name}",
                  lambda: driver.create(instance_name, disk_obj))


@procedure("normal", single_node=True)
def blockdev_remove(ctx: NodeContext, dev_type: str, logical_id: list[Any]) -> None:
    """Remove a disk (one that is already gone is fine)."""
    driver = _driver(ctx, dev_type)
    _guard(f"Cannot remove disk {logical_id!r}", lambda: driver.remove(logical_id))


@procedure("slow", single_node=True)
def blockdev_grow(ctx: NodeContext, dev_type: str, logical_id: list[Any],
                  new_size: int) -> None:
    """Grow a disk to new_size MiB."""
    if new_size <= 0:
        raise RpcFail(f"Invalid disk size {new_size!r}: expected a positive number of MiB")
    driver = _driver(ctx, dev_type)
    _guard(f"Cannot grow disk {logical_id!r}",
           lambda: driver.grow(logical_id, new_size))


@procedure("fast", single_node=True)
def blockdev_exists(ctx: NodeContext, dev_type: str, logical_id: list[Any]) -> bool:
    """Whether a disk exists."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot check disk {logical_id!r}", lambda: driver.exists(logical_id))


@procedure("fast", single_node=True)
def blockdev_can_snapshot(ctx: NodeContext, dev_type: str, logical_id: list[Any]) -> bool:
    """Whether a live snapshot of a disk is expected to work (reflink, LVM)."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot check snapshot support of {logical_id!r}",
                  lambda: driver.can_snapshot_live(logical_id))


@procedure("normal", single_node=True)
def blockdev_snapshot(ctx: NodeContext, dev_type: str, logical_id: list[Any],
                      snap_name: str) -> list[Any]:
    """Snapshot a disk (point-in-time copy); payload is the snapshot's logical id."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot snapshot disk {logical_id!r}",
                  lambda: driver.snapshot(logical_id, snap_name))


@procedure("normal", single_node=True)
def blockdev_remove_snapshot(ctx: NodeContext, dev_type: str,
                             snap_logical_id: list[Any]) -> None:
    """Remove a snapshot."""
    driver = _driver(ctx, dev_type)
    _guard(f"Cannot remove snapshot {snap_logical_id!r}",
           lambda: driver.remove_snapshot(snap_logical_id))


@procedure("fast", single_node=True)
def blockdev_list_snapshots(ctx: NodeContext, dev_type: str,
                            logical_id: list[Any]) -> list[list[Any]]:
    """Logical ids of a disk's snapshots."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot list snapshots of {logical_id!r}",
                  lambda: driver.list_snapshots(logical_id))


@procedure("normal", single_node=True)
def blockdev_keep_export_base(ctx: NodeContext, dev_type: str, logical_id: list[Any],
                              snap_logical_id: list[Any], record: dict[str, Any]) -> bool:
    """Keep an export's snapshot as the disk's export base (False: this storage keeps none)."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot keep {snap_logical_id!r} as the export base of {logical_id!r}",
                  lambda: driver.keep_export_base(logical_id, snap_logical_id, record))


@procedure("normal", single_node=True)
def file_storage_orphans(ctx: NodeContext, owned_paths: list[str]) -> list[str]:
    """Files under the file storage dir that are none of the given disk paths.

    Disk files no instance owns: a create that died half-way, a manual copy.
    """
    driver = storage.get_driver(constants.DT_FILE, ctx.paths)
    assert isinstance(driver, FileDiskDriver)
    return _guard("Cannot list the file storage directory",
                  lambda: driver.orphan_files(set(owned_paths)))
