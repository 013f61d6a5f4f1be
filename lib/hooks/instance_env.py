"""The INSTANCE_* hook variables, named and formatted as Ganeti 3.0 passes them.

Hook scripts written for Ganeti read these, so every name, the presence rules
(``NIC<n>_NAME`` only when set, ``NIC<n>_BRIDGE`` only in bridged/openvswitch
mode, the logical-id variables only for disks that exist) and the raw values
(formatted later by ``str()``) follow Ganeti.  Two builders exist because
Ganeti has two: one from a configured instance, one from the specifications of
an instance being created (its disks have no uuid and no logical id yet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ganeti import constants, hypervisor

# Ganeti's NIC defaults, except the link: we have no default bridge, so it stays empty
NIC_DEFAULTS: Mapping[str, Any] = {"mode": "bridged", "link": "", "vlan": ""}
_BRIDGE_MODES = frozenset({"bridged", "openvswitch"})
DT_MIXED = "mixed"


class HookDisk(Protocol):
    @property
    def uuid(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def size(self) -> int: ...
    @property
    def mode(self) -> str: ...
    @property
    def dev_type(self) -> str: ...
    @property
    def logical_id(self) -> Sequence[Any]: ...


class HookNic(Protocol):
    @property
    def uuid(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def mac(self) -> str: ...
    @property
    def ip(self) -> str | None: ...
    @property
    def network(self) -> str | None: ...
    @property
    def nicparams(self) -> Mapping[str, Any]: ...


class HookInstance(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def primary_node(self) -> str: ...
    @property
    def os(self) -> str: ...
    @property
    def hypervisor(self) -> str: ...
    @property
    def admin_state(self) -> str: ...
    @property
    def secondary_nodes(self) -> Sequence[str]: ...
    @property
    def hvparams(self) -> Mapping[str, Any]: ...
    @property
    def beparams(self) -> Mapping[str, Any]: ...
    @property
    def disks(self) -> Sequence[HookDisk]: ...
    @property
    def nics(self) -> Sequence[HookNic]: ...
    @property
    def tags(self) -> Sequence[str]: ...


class HookCluster(Protocol):
    @property
    def beparams(self) -> Mapping[str, Any]: ...
    @property
    def hvparams(self) -> Mapping[str, Mapping[str, Any]]: ...


@dataclass(frozen=True)
class NicInfo:
    """One NIC as Ganeti's hooks see it (its NICToTuple), parameters filled."""

    name: str | None
    uuid: str
    ip: str | None
    mac: str
    mode: str
    link: str
    vlan: str
    network: str | None


def filled_beparams(cluster: HookCluster, own: Mapping[str, Any]) -> dict[str, Any]:
    """Every backend parameter: Ganeti's defaults, the cluster's, the instance's own."""
    return {**constants.BE_DEFAULTS, **cluster.beparams, **own}


def filled_hvparams(cluster: HookCluster, hv_name: str,
                    own: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of the hypervisor: its defaults, the cluster's, the instance's."""
    cls = hypervisor.HYPERVISORS.get(hv_name)
    defaults = {k: p.default for k, p in cls.PARAMETERS.items()} if cls else {}
    return {**defaults, **(cluster.hvparams or {}).get(hv_name, {}), **own}


def nic_info(nic: HookNic) -> NicInfo:
    params = {**NIC_DEFAULTS, **{k: v for k, v in (nic.nicparams or {}).items()
                                 if v is not None}}
    return NicInfo(name=nic.name, uuid=nic.uuid, ip=nic.ip, mac=nic.mac,
                   mode=params["mode"], link=params["link"], vlan=params["vlan"],
                   network=nic.network)


def disk_template_of(disks: Iterable[HookDisk]) -> str:
    """Ganeti's summary of the disks' types: diskless, the one type, or mixed."""
    types = {d.dev_type for d in disks}
    if not types:
        return constants.DT_DISKLESS
    return types.pop() if len(types) == 1 else DT_MIXED


def existing_disk_env(idx: int, disk: HookDisk) -> dict[str, Any]:
    """A configured disk: its logical id, type, uuid, size and mode."""
    env: dict[str, Any] = {}
    lid = list(disk.logical_id or [])
    if len(lid) == 2:
        first = "VG" if disk.dev_type == constants.DT_PLAIN else "DRIVER"
        env[f"INSTANCE_DISK{idx}_{first}"] = lid[0]
        env[f"INSTANCE_DISK{idx}_ID"] = lid[1]
    env[f"INSTANCE_DISK{idx}_DEV_TYPE"] = disk.dev_type
    return {**env, **_disk_common_env(idx, disk.name, disk.uuid, disk.size, disk.mode)}


def new_disk_env(idx: int, name: str | None, size: int, mode: str) -> dict[str, Any]:
    """A disk still to be created: no uuid (empty), no logical id, no type."""
    return _disk_common_env(idx, name, "", size, mode)


def _disk_common_env(idx: int, name: str | None, uuid: str, size: int,
                     mode: str) -> dict[str, Any]:
    env: dict[str, Any] = {}
    if name:
        env[f"INSTANCE_DISK{idx}_NAME"] = name
    env[f"INSTANCE_DISK{idx}_UUID"] = uuid
    env[f"INSTANCE_DISK{idx}_SIZE"] = size
    env[f"INSTANCE_DISK{idx}_MODE"] = mode
    return env


def instance_env(*, name: str, primary_node_name: str, secondary_node_names: Sequence[str],
                 os_type: str, status: Any, minmem: Any, maxmem: Any, vcpus: Any,
                 nics: Sequence[NicInfo], disk_template: str,
                 disk_envs: Sequence[Mapping[str, Any]], bep: Mapping[str, Any],
                 hvp: Mapping[str, Any], hypervisor_name: str,
                 tags: Iterable[str]) -> dict[str, Any]:
    """The variables of Ganeti's BuildInstanceHookEnv, from the same arguments."""
    env: dict[str, Any] = {
        "OP_TARGET": name,
        "INSTANCE_NAME": name,
        "INSTANCE_PRIMARY": primary_node_name,
        "INSTANCE_SECONDARIES": " ".join(secondary_node_names),
        "INSTANCE_OS_TYPE": os_type,
        "INSTANCE_STATUS": status,
        "INSTANCE_MINMEM": minmem,
        "INSTANCE_MAXMEM": maxmem,
        "INSTANCE_MEMORY": maxmem,
        "INSTANCE_VCPUS": vcpus,
        "INSTANCE_DISK_TEMPLATE": disk_template,
        "INSTANCE_HYPERVISOR": hypervisor_name,
    }
    for idx, nic in enumerate(nics):
        prefix = f"INSTANCE_NIC{idx}_"
        if nic.name:
            env[prefix + "NAME"] = nic.name
        env[prefix + "UUID"] = nic.uuid
        env[prefix + "IP"] = "" if nic.ip is None else nic.ip
        env[prefix + "MAC"] = nic.mac
        env[prefix + "MODE"] = nic.mode
        env[prefix + "LINK"] = nic.link
        env[prefix + "VLAN"] = nic.vlan
        if nic.network:
            # we keep no network objects: Ganeti's broken-reference form
            env[prefix + "NETWORK_NAME"] = nic.network
        if nic.mode in _BRIDGE_MODES:
            env[prefix + "BRIDGE"] = nic.link
    env["INSTANCE_NIC_COUNT"] = len(nics)
    for disk_env in disk_envs:
        env.update(disk_env)
    env["INSTANCE_DISK_COUNT"] = len(disk_envs)
    env["INSTANCE_TAGS"] = " ".join(tags)
    for kind, params in (("BE", bep), ("HV", hvp)):
        for key, value in params.items():
            env[f"INSTANCE_{kind}_{key}"] = value
    return env


def build_instance_hook_env(instance: HookInstance, cluster: HookCluster,
                            node_name_fn: Callable[[str], str],
                            override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Ganeti's BuildInstanceHookEnvByObject: the env of a configured instance.

    ``override`` replaces variables of the result (LU-specific ones are added
    by the LUs themselves).
    """
    bep = filled_beparams(cluster, instance.beparams)
    env = instance_env(
        name=instance.name, primary_node_name=node_name_fn(instance.primary_node),
        secondary_node_names=[node_name_fn(n) for n in instance.secondary_nodes],
        os_type=instance.os, status=instance.admin_state, minmem=bep["minmem"],
        maxmem=bep["maxmem"], vcpus=bep["vcpus"],
        nics=[nic_info(nic) for nic in instance.nics],
        disk_template=disk_template_of(instance.disks),
        disk_envs=[existing_disk_env(idx, d) for idx, d in enumerate(instance.disks)],
        bep=bep, hvp=filled_hvparams(cluster, instance.hypervisor, instance.hvparams),
        hypervisor_name=instance.hypervisor, tags=sorted(instance.tags))
    if override:
        env.update(override)
    return env


def build_new_instance_hook_env(instance: HookInstance, cluster: HookCluster,
                                node_name_fn: Callable[[str], str], start: bool,
                                disk_template: str) -> dict[str, Any]:
    """The env of LUInstanceCreate (both phases), as Ganeti builds it from the opcode:
    the status is whether the instance is to be started, disks are specifications."""
    bep = filled_beparams(cluster, instance.beparams)
    return instance_env(
        name=instance.name, primary_node_name=node_name_fn(instance.primary_node),
        secondary_node_names=[node_name_fn(n) for n in instance.secondary_nodes],
        os_type=instance.os, status=start, minmem=bep["minmem"], maxmem=bep["maxmem"],
        vcpus=bep["vcpus"], nics=[nic_info(nic) for nic in instance.nics],
        disk_template=disk_template,
        disk_envs=[new_disk_env(idx, d.name, d.size, d.mode)
                   for idx, d in enumerate(instance.disks)],
        bep=bep, hvp=filled_hvparams(cluster, instance.hypervisor, instance.hvparams),
        hypervisor_name=instance.hypervisor, tags=sorted(instance.tags))
