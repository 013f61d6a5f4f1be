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
from ganeti.storage.filedisk import FileDiskDriver

_T = TypeVar("_T")


def _driver(ctx: NodeContext, dev_type: Any) -> storage.DiskDriver:
    if not isinstance(dev_type, str):
        raise RpcFail(f"Invalid disk template {dev_type!r}")
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


def _logical_id(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RpcFail(f"Invalid logical id {value!r}: expected a list")
    return value


def blockdev_create(ctx: NodeContext, instance_name: str, disk_dict: dict[str, Any]) -> list[Any]:
    """Create one disk of ``instance_name``; returns the logical id to store."""
    if not isinstance(instance_name, str) or not instance_name:
        raise RpcFail(f"Invalid instance name {instance_name!r}")
    try:
        disk = Disk.from_dict(disk_dict)
    except errors.ConfigurationError as err:
        raise RpcFail(str(err)) from None
    driver = _driver(ctx, disk.dev_type)
    return _guard(f"Cannot create disk {disk.iv_name or disk.uuid} of {instance_name}",
                  lambda: driver.create(instance_name, disk))


def blockdev_remove(ctx: NodeContext, dev_type: str, logical_id: list[Any]) -> None:
    """Remove a disk; a disk that is already gone is not an error."""
    driver = _driver(ctx, dev_type)
    _guard(f"Cannot remove disk {logical_id!r}",
           lambda: driver.remove(_logical_id(logical_id)))


def blockdev_grow(ctx: NodeContext, dev_type: str, logical_id: list[Any],
                  new_size: int) -> None:
    if isinstance(new_size, bool) or not isinstance(new_size, int) or new_size <= 0:
        raise RpcFail(f"Invalid disk size {new_size!r}: expected a positive number of MiB")
    driver = _driver(ctx, dev_type)
    _guard(f"Cannot grow disk {logical_id!r}",
           lambda: driver.grow(_logical_id(logical_id), new_size))


def blockdev_exists(ctx: NodeContext, dev_type: str, logical_id: list[Any]) -> bool:
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot check disk {logical_id!r}",
                  lambda: driver.exists(_logical_id(logical_id)))


def blockdev_can_snapshot(ctx: NodeContext, dev_type: str, logical_id: list[Any]) -> bool:
    """Whether a live snapshot of this disk is expected to work (reflink, LVM)."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot check snapshot support of {logical_id!r}",
                  lambda: driver.can_snapshot_live(_logical_id(logical_id)))


def blockdev_snapshot(ctx: NodeContext, dev_type: str, logical_id: list[Any],
                      snap_name: str) -> list[Any]:
    """Point-in-time copy of a disk; returns the snapshot's logical id."""
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot snapshot disk {logical_id!r}",
                  lambda: driver.snapshot(_logical_id(logical_id), snap_name))


def blockdev_remove_snapshot(ctx: NodeContext, dev_type: str,
                             snap_logical_id: list[Any]) -> None:
    driver = _driver(ctx, dev_type)
    _guard(f"Cannot remove snapshot {snap_logical_id!r}",
           lambda: driver.remove_snapshot(_logical_id(snap_logical_id)))


def blockdev_list_snapshots(ctx: NodeContext, dev_type: str,
                            logical_id: list[Any]) -> list[list[Any]]:
    driver = _driver(ctx, dev_type)
    return _guard(f"Cannot list snapshots of {logical_id!r}",
                  lambda: driver.list_snapshots(_logical_id(logical_id)))


def file_storage_orphans(ctx: NodeContext, owned_paths: list[Any]) -> list[str]:
    """Disk files no instance owns (a create that died half-way, a manual copy)."""
    if not isinstance(owned_paths, list) or not all(isinstance(p, str) for p in owned_paths):
        raise RpcFail("Invalid owned_paths: expected a list of paths")
    driver = storage.get_driver(constants.DT_FILE, ctx.paths)
    assert isinstance(driver, FileDiskDriver)
    return _guard("Cannot list the file storage directory",
                  lambda: driver.orphan_files(set(owned_paths)))
