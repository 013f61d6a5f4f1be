"""RPC calls of the instance area: block devices and instance life cycle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ganeti.rpc.calltypes import TMO_NORMAL, Arg, RpcCall


def _shutdown_timeout(values: Mapping[str, Any]) -> float:
    # the node may wait the whole timeout and then kill; leave room for the kill
    return float(values["shutdown_timeout"]) + TMO_NORMAL


def _reboot_timeout(values: Mapping[str, Any]) -> float:
    return float(values["shutdown_timeout"]) + 2 * TMO_NORMAL


def _to_dict(value: Any) -> Any:
    """Config objects travel as their JSON form."""
    return value.to_dict() if hasattr(value, "to_dict") else value


def _dev(name: str, doc: str, *args: Arg, timeout: str = "normal") -> RpcCall:
    return RpcCall(name, name, timeout, (Arg("dev_type"), Arg("logical_id"), *args),
                   single_node=True, doc=doc)


CALLS: tuple[RpcCall, ...] = (
    RpcCall("blockdev_create", "blockdev_create", "slow",
            (Arg("instance_name"), Arg("disk", _to_dict)), single_node=True,
            doc="Create one disk (Disk.to_dict()); payload is its logical id"),
    _dev("blockdev_remove", "Remove a disk (missing is fine)"),
    _dev("blockdev_grow", "Grow a disk to new_size MiB", Arg("new_size", int), timeout="slow"),
    _dev("blockdev_exists", "Whether a disk exists", timeout="fast"),
    _dev("blockdev_can_snapshot", "Whether a live snapshot can be taken", timeout="fast"),
    _dev("blockdev_snapshot", "Snapshot a disk; payload is the snapshot logical id",
         Arg("snap_name")),
    RpcCall("blockdev_remove_snapshot", "blockdev_remove_snapshot", "normal",
            (Arg("dev_type"), Arg("snap_logical_id")), single_node=True,
            doc="Remove a snapshot"),
    _dev("blockdev_list_snapshots", "Logical ids of a disk's snapshots", timeout="fast"),
    RpcCall("file_storage_orphans", "file_storage_orphans", "normal",
            (Arg("owned_paths", list),), single_node=True,
            doc="Files under the file storage dir that are none of the given disk paths"),
    RpcCall("instance_start", "instance_start", "slow",
            (Arg("instance", _to_dict), Arg("startup_paused", bool)), single_node=True,
            doc="Start an instance (Instance.to_dict() with filled parameters)"),
    RpcCall("instance_shutdown", "instance_shutdown", _shutdown_timeout,
            (Arg("instance_name"), Arg("hypervisor"), Arg("shutdown_timeout")), single_node=True,
            doc="Stop an instance, killing it after the timeout"),
    RpcCall("instance_reboot", "instance_reboot", _reboot_timeout,
            (Arg("instance", _to_dict), Arg("reboot_type"), Arg("shutdown_timeout")),
            single_node=True, doc="Restart an instance"),
    RpcCall("instance_info", "instance_info", "fast",
            (Arg("instance_name"), Arg("hypervisor")), single_node=True,
            doc="Live state of one instance or None"),
    RpcCall("all_instances_info", "all_instances_info", "fast", (Arg("hypervisors", list),),
            doc="Per node: {instance name: live state}"),
    RpcCall("instance_verify", "instance_verify", "normal", (Arg("instance", _to_dict),),
            single_node=True, doc="Problems with an instance's disks on its node"),
    RpcCall("hypervisor_verify", "hypervisor_verify", "normal", (Arg("hypervisors", list),),
            doc="Per node: {hypervisor: [problems]}"),
)
