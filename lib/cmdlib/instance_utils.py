"""Helpers shared by the instance logical units (and the backup area).

Disk creation/removal, starting and stopping through the node RPC, parameter
validation and the hook environment live here so that other areas (import,
export) use exactly the same steps as ``gnt-instance``.
"""

from __future__ import annotations

import random
from collections.abc import Container, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from ganeti import constants, errors, hypervisor, limits
from ganeti.hooks.instance_env import build_instance_hook_env, build_new_instance_hook_env
from ganeti.objects import Cluster, Disk, Instance
from ganeti.opcodes import DiskSpec, NicSpec, validation_message

if TYPE_CHECKING:
    from ganeti.cmdlib.base import LogicalUnit

# backend parameters and whether they are positive integers
BE_INT_PARAMS = frozenset({"maxmem", "minmem", "vcpus", "spindle_use"})
BE_BOOL_PARAMS = frozenset({"auto_balance", "always_failover"})
BE_PARAMS = BE_INT_PARAMS | BE_BOOL_PARAMS | {"memory"}
_BE_LIMITS = {"maxmem": limits.MEMORY, "minmem": limits.MEMORY, "vcpus": limits.VCPUS}

_DISK_LIST = TypeAdapter(list[DiskSpec])
_NIC_LIST = TypeAdapter(list[NicSpec])


def _specs(adapter: TypeAdapter[list[Any]], limit: limits.Limit, what: str,
           specs: Sequence[Any]) -> list[Any]:
    limit.check(specs, what)
    try:
        return list(adapter.validate_python(list(specs)))
    except ValidationError as err:
        raise errors.OpPrereqError(validation_message(what, err), errors.ECODE_INVAL
                                   ) from None


def check_disk_specs(disks: Sequence[DiskSpec | dict[str, Any]]) -> list[DiskSpec]:
    """Disk specifications from elsewhere than the opcode (an export), checked by the
    opcode's own DiskSpec model and the DISKS limit."""
    return _specs(_DISK_LIST, limits.DISKS, "disks", disks)


def check_nic_specs(nics: Sequence[NicSpec | dict[str, Any]]) -> list[NicSpec]:
    """NIC specifications, checked as check_disk_specs checks disks."""
    return _specs(_NIC_LIST, limits.NICS, "nics", nics)


def check_beparams(params: dict[str, Any], allow_default: bool = False) -> dict[str, Any]:
    """Validate backend parameters; ``memory`` sets both maxmem and minmem.

    With ``allow_default`` the value "default" (reset to the cluster value) passes.
    """
    unknown = sorted(set(params) - BE_PARAMS)
    if unknown:
        raise errors.OpPrereqError(f"Unknown backend parameter(s): {', '.join(unknown)}",
                                   errors.ECODE_INVAL)
    checked = dict(params)
    if "memory" in checked:
        memory = checked.pop("memory")
        checked.setdefault("maxmem", memory)
        checked.setdefault("minmem", memory)
    for key, value in checked.items():
        if allow_default and value == "default":
            continue
        if key in BE_INT_PARAMS and (isinstance(value, bool) or not isinstance(value, int)
                                     or value <= 0):
            raise errors.OpPrereqError(
                f"Invalid backend parameter {key}={value!r}: must be a positive integer",
                errors.ECODE_INVAL)
        if key in _BE_LIMITS:
            _BE_LIMITS[key].check(value, f"beparams.{key}")
        if key in BE_BOOL_PARAMS and not isinstance(value, bool):
            raise errors.OpPrereqError(
                f"Invalid backend parameter {key}={value!r}: must be a boolean",
                errors.ECODE_INVAL)
    return checked


def check_filled_beparams(cluster: Cluster, instance: Instance) -> None:
    """minmem may not exceed maxmem; a lowered maxmem alone pulls minmem down with it."""
    filled = cluster.fill_beparams(instance)
    if filled.get("minmem", 0) <= filled.get("maxmem", 0):
        return
    if "maxmem" in instance.beparams and "minmem" not in instance.beparams:
        instance.beparams = {**instance.beparams, "minmem": instance.beparams["maxmem"]}
        return
    raise errors.OpPrereqError(
        f"minmem ({filled.get('minmem')}) is larger than maxmem ({filled.get('maxmem')})",
        errors.ECODE_INVAL)


def check_hvparams(hv_name: str, cluster: Cluster, params: dict[str, Any]) -> dict[str, Any]:
    """Cluster defaults plus ``params`` filled and validated by the hypervisor class."""
    cls = hypervisor.HYPERVISORS.get(hv_name)
    if cls is None:
        raise errors.OpPrereqError(f"Unknown hypervisor '{hv_name}'", errors.ECODE_INVAL)
    try:
        return cls.fill_parameters({**cluster.hvparams.get(hv_name, {}), **params})
    except errors.HypervisorError as err:
        raise errors.OpPrereqError(str(err.args[0]), errors.ECODE_INVAL) from None


def hypervisor_parameter_names(hv_name: str) -> frozenset[str]:
    """The parameters the hypervisor ``hv_name`` has (none for an unknown one)."""
    cls = hypervisor.HYPERVISORS.get(hv_name)
    return frozenset(cls.PARAMETERS) if cls is not None else frozenset()


def generate_mac(used: Container[str], rng: random.Random | None = None) -> str:
    """A MAC ``aa:00:00:xx:xx:xx`` not in ``used`` (e.g. :func:`used_macs`)."""
    pick = rng or random.SystemRandom()
    for _ in range(1000):
        tail = ":".join(f"{pick.randrange(256):02x}" for _ in range(3))
        mac = f"{constants.MAC_PREFIX}:{tail}"
        if mac not in used:
            return mac
    raise errors.OpExecError("Cannot generate a unique MAC address")


class MacsInUse(Container[str]):
    """The store's MACs (a view, not copied) plus those picked for the new instance."""

    def __init__(self, taken: Container[str]) -> None:
        self.taken = taken
        self.mine: set[str] = set()

    def __contains__(self, mac: object) -> bool:
        return mac in self.mine or mac in self.taken


def used_macs(cfg: Any) -> AbstractSet[str]:
    """MACs of every instance's NICs: the store's index, a read-only view (O(1)) for
    ``in`` tests."""
    macs: AbstractSet[str] = cfg.used_macs()
    return macs


def filled_instance(cfg: Any, instance: Instance,
                    beparams: dict[str, Any] | None = None,
                    hvparams: dict[str, Any] | None = None) -> Instance:
    """The copy nodes get: cluster defaults and temporary overrides filled in."""
    cluster = cfg.get_cluster_info()
    copy = instance.model_copy(deep=True)
    copy.beparams = {**cluster.fill_beparams(instance), **(beparams or {})}
    copy.hvparams = {**cluster.fill_hvparams(instance), **(hvparams or {})}
    return copy


def node_name(cfg: Any, node_uuid: str) -> str:
    node = cfg.get_node_info(node_uuid)
    return str(node.name) if node is not None else node_uuid


def instance_hook_env(cfg: Any, instance: Instance,
                      override: dict[str, Any] | None = None) -> dict[str, Any]:
    """INSTANCE_* (and OP_TARGET) of a configured instance; ``override`` wins."""
    # the post phase rebuilds the environment: show the state after Exec
    current = cfg.get_instance_info(instance.uuid)
    return build_instance_hook_env(current or instance, cfg.get_cluster_info(),
                                   lambda uuid: node_name(cfg, uuid), override)


def new_instance_hook_env(cfg: Any, instance: Instance, start: bool) -> dict[str, Any]:
    """INSTANCE_* of an instance being created (Ganeti builds them from the opcode)."""
    return build_new_instance_hook_env(instance, cfg.get_cluster_info(),
                                       lambda uuid: node_name(cfg, uuid), start,
                                       instance.disk_template)


def instance_hook_nodes(cfg: Any, instance: Instance) -> list[str]:
    """Master first, then the instance's nodes."""
    names = [cfg.get_master_node_name()]
    for uuid in instance.all_nodes:
        name = node_name(cfg, uuid)
        if name not in names:
            names.append(name)
    return names


# --- node operations --------------------------------------------------------------


def create_disks(lu: LogicalUnit, instance: Instance) -> None:
    """Create every disk on the primary, storing the logical ids in ``instance``.

    On failure the disks created so far are removed again before raising.
    """
    pnode = node_name(lu.cfg, instance.primary_node)
    created: list[Disk] = []
    try:
        for disk in instance.disks:
            result = lu.rpc.call_blockdev_create(pnode, instance.name, disk)
            if result.fail_msg:
                raise errors.OpExecError(
                    f"Cannot create disk {disk.iv_name} on node {pnode}: {result.fail_msg}")
            disk.logical_id = list(result.payload)
            created.append(disk)
    except BaseException:
        remove_disks(lu, instance, disks=created, warn=lu.LogWarning)
        for disk in instance.disks:  # nothing of this attempt stays referenced
            disk.logical_id = []
        raise


def remove_disks(lu: LogicalUnit, instance: Instance, disks: Iterable[Disk] | None = None,
                 warn: Any = None) -> list[str]:
    """Remove disks on the primary; returns failure messages (each also warned)."""
    pnode = node_name(lu.cfg, instance.primary_node)
    failures = []
    for disk in instance.disks if disks is None else disks:
        if not disk.logical_id:
            continue
        result = lu.rpc.call_blockdev_remove(pnode, disk.dev_type, disk.logical_id)
        if result.fail_msg:
            msg = f"Could not remove disk {disk.iv_name} on node {pnode}: {result.fail_msg}"
            failures.append(msg)
            if warn is not None:
                warn(msg)
    return failures


def start_instance(lu: LogicalUnit, instance: Instance, beparams: dict[str, Any] | None = None,
                   hvparams: dict[str, Any] | None = None, paused: bool = False) -> None:
    pnode = node_name(lu.cfg, instance.primary_node)
    result = lu.rpc.call_instance_start(
        pnode, filled_instance(lu.cfg, instance, beparams, hvparams), paused)
    result.raise_on_failure(f"Could not start instance {instance.name}")
    if instance.hypervisor == constants.HT_KVM:
        _log_accelerator(lu, pnode, instance)


def _log_accelerator(lu: LogicalUnit, pnode: str, instance: Instance) -> None:
    """The job log says whether a kvm instance got hardware acceleration or TCG."""
    info = lu.rpc.call_instance_info(pnode, instance.name, instance.hypervisor)
    accel = info.payload.get("accel") if not info.fail_msg and isinstance(
        info.payload, dict) else None
    if accel:
        lu.LogInfo(f"Instance {instance.name} runs with accelerator {accel}"
                   f" ({'hardware virtualization' if accel == 'kvm' else 'software emulation'})")


def shutdown_instance(lu: LogicalUnit, instance: Instance, timeout: int) -> str | None:
    """Stop the instance on its primary; the failure message or None."""
    pnode = node_name(lu.cfg, instance.primary_node)
    result = lu.rpc.call_instance_shutdown(pnode, instance.name, instance.hypervisor, timeout)
    return None if not result.fail_msg else \
        f"Could not shut down instance {instance.name} on node {pnode}: {result.fail_msg}"


def disks_without_snapshots(lu: LogicalUnit, instance: Instance, context: str = "") -> list[int]:
    """Indices of the instance's disks its primary's storage cannot snapshot live.

    A node that cannot answer is an OpPrereqError (``context`` prefixes the text).
    """
    primary = node_name(lu.cfg, instance.primary_node)
    cannot = []
    for idx, disk in enumerate(instance.disks):
        res = lu.rpc.call_blockdev_can_snapshot(primary, disk.dev_type, disk.logical_id)
        res.raise_on_failure(f"{context}Cannot check whether disk {idx} of {instance.name}"
                             " can be snapshotted", prereq=True)
        if not res.payload:
            cannot.append(idx)
    return cannot


def instance_running(lu: LogicalUnit, instance: Instance) -> bool:
    pnode = node_name(lu.cfg, instance.primary_node)
    result = lu.rpc.call_instance_info(pnode, instance.name, instance.hypervisor)
    result.raise_on_failure(f"Cannot get the state of instance {instance.name}")
    return result.payload is not None
