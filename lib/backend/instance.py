"""Instance procedures: start, stop, reboot and report instances on this node.

Instances arrive as ``Instance.to_dict()`` with the cluster defaults already
filled into ``beparams``/``hvparams`` by the master, so the node needs no
copy of the cluster configuration to start one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ganeti import errors, hypervisor, storage
from ganeti.backend import NodeContext, RpcFail
from ganeti.objects import Instance
from ganeti.rpc import encoders
from ganeti.rpc.contract import procedure
from ganeti.rpc.payloads import LiveSnapshot

_T = TypeVar("_T")

# upper bound for shutdown timeouts sent over the wire
MAX_SHUTDOWN_TIMEOUT = 24 * 3600
REBOOT_TYPES = ("soft", "hard", "full")

logger = logging.getLogger(__name__)


def _detail(err: BaseException) -> str:
    if isinstance(err, errors.GenericError) and err.args:
        return "; ".join(str(a) for a in err.args)
    return str(err) or type(err).__name__


def _guard(what: str, func: Callable[[], _T]) -> _T:
    try:
        return func()
    except (errors.GenericError, OSError) as err:
        raise RpcFail(f"{what}: {_detail(err)}") from None


def _instance(instance_dict: Any) -> Instance:
    try:
        return Instance.from_dict(instance_dict)
    except errors.ConfigurationError as err:
        raise RpcFail(str(err)) from None


def _hypervisor(ctx: NodeContext, name: str) -> hypervisor.Hypervisor:
    try:
        return hypervisor.get_hypervisor(name, ctx.paths)
    except errors.HypervisorError as err:
        raise RpcFail(_detail(err)) from None


def _timeout(value: float) -> float:
    if not 0 <= value <= MAX_SHUTDOWN_TIMEOUT:
        raise RpcFail(f"Invalid shutdown timeout {value!r}: must be 0..{MAX_SHUTDOWN_TIMEOUT}")
    return float(value)


def disk_paths(ctx: NodeContext, instance: Instance) -> list[Path]:
    """What the hypervisor opens for each disk; the drivers check every logical id."""
    paths = []
    for disk in instance.disks:
        what = f"Invalid disk {disk.iv_name or disk.uuid} of {instance.name}"
        try:
            driver = storage.get_driver(disk.dev_type, ctx.paths)
            paths.append(driver.device_path(disk.logical_id))
        except (errors.GenericError, OSError) as err:
            raise RpcFail(f"{what}: {_detail(err)}") from None
    return paths


@procedure("slow", single_node=True, encoders={"instance": encoders.instance})
def instance_start(ctx: NodeContext, instance: dict[str, Any],
                   startup_paused: bool = False) -> None:
    """Start an instance (Instance.to_dict() with filled parameters); returns once it runs."""
    inst = _instance(instance)
    hv = _hypervisor(ctx, inst.hypervisor)
    disks = disk_paths(ctx, inst)
    _guard(f"Cannot start instance {inst.name}",
           lambda: hv.start_instance(inst, disks, startup_paused))


@procedure(encoders.shutdown_timeout, single_node=True)
def instance_shutdown(ctx: NodeContext, instance_name: str, hypervisor: str,
                      shutdown_timeout: float) -> None:
    """Stop an instance, killing it after the timeout (not running is fine)."""
    hv = _hypervisor(ctx, hypervisor)
    seconds = _timeout(shutdown_timeout)
    _guard(f"Cannot shut down instance {instance_name}",
           lambda: hv.stop_instance(instance_name, seconds))


@procedure(encoders.reboot_timeout, single_node=True, encoders={"instance": encoders.instance})
def instance_reboot(ctx: NodeContext, instance: dict[str, Any], reboot_type: str,
                    shutdown_timeout: float) -> None:
    """Restart an instance: stop (if running) and start again, whatever the reboot type."""
    if reboot_type not in REBOOT_TYPES:
        raise RpcFail(f"Invalid reboot type {reboot_type!r}")
    inst = _instance(instance)
    hv = _hypervisor(ctx, inst.hypervisor)
    seconds = _timeout(shutdown_timeout)
    disks = disk_paths(ctx, inst)
    _guard(f"Cannot shut down instance {inst.name} for the reboot",
           lambda: hv.stop_instance(inst.name, seconds))
    _guard(f"Cannot start instance {inst.name} after the shutdown",
           lambda: hv.start_instance(inst, disks))


@procedure("fast", single_node=True)
def instance_info(ctx: NodeContext, instance_name: str,
                  hypervisor: str) -> dict[str, Any] | None:
    """Live state of one instance or None (not running here)."""
    hv = _hypervisor(ctx, hypervisor)
    info = _guard(f"Cannot get information on instance {instance_name}",
                  lambda: hv.instance_info(instance_name))
    return info.to_dict() if info is not None else None


@procedure("fast")
def all_instances_info(ctx: NodeContext, hypervisors: list[str]) -> dict[str, dict[str, Any]]:
    """Per node: {instance name: live state} of the instances of these hypervisors."""
    result: dict[str, dict[str, Any]] = {}
    for name in hypervisors:
        hv = _hypervisor(ctx, name)
        for inst_name in _guard(f"Cannot list {name} instances", hv.list_instances):
            info = hv.instance_info(inst_name)
            if info is not None:
                result[inst_name] = info.to_dict()
    return result


@procedure("normal", single_node=True, encoders={"instance": encoders.instance})
def instance_verify(ctx: NodeContext, instance: dict[str, Any]) -> list[str]:
    """Problems with an instance's disks on its node (missing disks); [] if none."""
    inst = _instance(instance)
    problems = []
    for idx, disk in enumerate(inst.disks):
        try:
            driver = storage.get_driver(disk.dev_type, ctx.paths)
            if not driver.exists(disk.logical_id):
                problems.append(f"disk/{idx} ({disk.logical_id!r}) is missing")
        except errors.GenericError as err:
            problems.append(f"disk/{idx}: {_detail(err)}")
    return problems


@procedure("normal")
def hypervisor_verify(ctx: NodeContext, hypervisors: list[str]) -> dict[str, list[str]]:
    """Per node: {hypervisor: [what keeps it from working on the node]}."""
    return {name: _guard(f"Cannot verify hypervisor {name}", _hypervisor(ctx, name).verify)
            for name in hypervisors}


# "slow": a guest agent may take up to FREEZE_TIMEOUT to freeze and again to thaw
@procedure("slow", single_node=True, encoders={"instance": encoders.instance})
def instance_snapshot_disks(ctx: NodeContext, instance: dict[str, Any],
                            snap_name: str) -> LiveSnapshot:
    """Snapshot every disk of a running instance inside one pause of its guest.

    One point in time across all disks (doc/kvm.md, "Live export"). On any failure
    the guest runs again and the snapshots made so far are gone.
    """
    inst = _instance(instance)
    hv = _hypervisor(ctx, inst.hypervisor)
    drivers = []
    for idx, disk in enumerate(inst.disks):
        try:
            drivers.append(storage.get_driver(disk.dev_type, ctx.paths))
        except errors.GenericError as err:
            raise RpcFail(f"Invalid disk/{idx} of {inst.name}: {_detail(err)}") from None
    made: list[tuple[storage.DiskDriver, list[Any]]] = []
    try:
        with hv.quiesce(inst.name) as held:
            for idx, (disk, driver) in enumerate(zip(inst.disks, drivers, strict=True)):
                try:
                    made.append((driver, list(driver.snapshot(disk.logical_id, snap_name))))
                except (errors.GenericError, OSError) as err:
                    raise RpcFail(f"Cannot snapshot disk/{idx} of {inst.name}:"
                                  f" {_detail(err)}") from None
    except BaseException as err:
        for driver, snap in reversed(made):
            try:
                driver.remove_snapshot(snap)
            except (errors.GenericError, OSError) as rm_err:
                logger.error("Cannot remove snapshot %r after a failed live snapshot: %s",
                             snap, _detail(rm_err))
        if isinstance(err, RpcFail):
            raise
        if isinstance(err, (errors.GenericError, OSError)):
            raise RpcFail(f"Cannot snapshot the disks of {inst.name} live:"
                          f" {_detail(err)}") from None
        raise
    return {"snapshots": [snap for _driver, snap in made], "level": held.level,
            "pause_ms": round(held.pause_ms, 3), "frozen_ms": held.frozen_ms,
            "stopped_ms": held.stopped_ms, "notes": held.notes}
