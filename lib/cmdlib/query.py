"""The query LUs (OpInstanceQuery, OpInstanceQueryData, OpNodeQuery).

Their rows come from the query resources (:mod:`ganeti.query_resources`), which
``Query("instance")`` and ``Query("node")`` share; this module only adds the
locking and the opcode result shapes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ganeti import constants, errors, locking, opcodes, query
from ganeti.backup.export_stats import ExportStats
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU
from ganeti.hooks.instance_env import nic_info
from ganeti.objects import NIC, Disk, Instance, Network
from ganeti.query_resources import instance as qinstance
from ganeti.query_resources import node as qnode


def _hv_actual(cluster: Any, inst: Instance) -> dict[str, Any]:
    """Parameters in effect, hypervisor defaults included where they can be computed."""
    filled = cluster.fill_hvparams(inst)
    try:
        return iu.check_hvparams(inst.hypervisor, cluster, inst.hvparams)
    except errors.OpPrereqError:
        return dict(filled)


def _check_output_fields(wanted: Iterable[str], known: Iterable[str]) -> None:
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise errors.OpPrereqError(f"Unknown output fields: {', '.join(unknown)}",
                                   errors.ECODE_INVAL)


class LUInstanceQuery(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpInstanceQuery

    def CheckArguments(self) -> None:
        _check_output_fields(self.op.output_fields, qinstance.FIELD_NAMES)

    def ExpandNames(self) -> None:
        self.op.names = [self.expand_instance_name(n) for n in self.op.names]
        self.needed_locks = {}
        if self.op.use_locking:
            self.needed_locks[locking.LEVEL_INSTANCE] = self.op.names or locking.ALL_SET
            self.share_locks[locking.LEVEL_INSTANCE] = True

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        live = bool(qinstance.LIVE_FIELDS & set(self.op.output_fields))
        stats = (ExportStats.for_paths(self.context.paths)
                 if qinstance.EXPORT_FIELD_NAMES & set(self.op.output_fields) else None)
        rows = qinstance.instance_rows(self.cfg, self.rpc, live, self.op.names or None,
                                       stats, fields=self.op.output_fields)
        return [[query.plain(qinstance.field_value(row, f)) for f in self.op.output_fields]
                for row in rows]


class LUInstanceQueryData(NoHooksLU):
    """Detailed information per instance (``gnt-instance info``)."""

    REQ_BGL = False
    op: opcodes.OpInstanceQueryData

    def ExpandNames(self) -> None:
        self.op.instances = [self.expand_instance_name(n) for n in self.op.instances]
        self.needed_locks = {}
        if self.op.use_locking:
            self.needed_locks[locking.LEVEL_INSTANCE] = self.op.instances or locking.ALL_SET
            self.share_locks[locking.LEVEL_INSTANCE] = True

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        names = self.op.instances or None
        rows = {r["name"]: r for r in qinstance.instance_rows(
            self.cfg, self.rpc, not self.op.static, names)}
        snap = self.cfg.snapshot()
        cluster = snap.get_cluster_info()
        networks = snap.get_networks()
        result: dict[str, Any] = {}
        for name, row in rows.items():
            inst = snap.get_instance_info_by_name(name)
            if inst is None:
                continue
            pnode = snap.get_node_info(inst.primary_node)
            snodes = [snap.get_node_info(u) for u in inst.secondary_nodes]
            pgroup = pnode.group if pnode else ""
            sgroups = [n.group if n else "" for n in snodes]
            result[name] = {
                "name": name, "uuid": inst.uuid, "os": inst.os, "pnode": row["pnode"],
                "pnode_group_uuid": pgroup, "pnode_group_name": self._group_name(pgroup),
                "snodes": row["snodes"], "snodes_group_uuids": sgroups,
                "snodes_group_names": [self._group_name(g) for g in sgroups],
                "hypervisor": inst.hypervisor, "network_port": None,
                "disk_template": inst.disk_template,
                # Ganeti 3.0's names (config_state, run_state up/down/...); admin_state
                # and the live figures are ours
                "config_state": inst.admin_state, "admin_state": inst.admin_state,
                "run_state": self._run_state(inst, row),
                "oper_ram": query.plain(row["oper_ram"]),
                "oper_vcpus": query.plain(row["oper_vcpus"]),
                "be_instance": dict(inst.beparams), "be_actual": cluster.fill_beparams(inst),
                "hv_instance": dict(inst.hvparams), "hv_actual": _hv_actual(cluster, inst),
                "os_instance": dict(inst.osparams), "os_actual": cluster.fill_osparams(inst),
                "disks": [_disk_status(d) for d in inst.disks],
                "nics": [_nic_tuple(n, networks) for n in inst.nics],
                "tags": sorted(inst.tags), "ctime": inst.ctime, "mtime": inst.mtime,
                "serial_no": inst.serial_no,
                "accel": self._accel(inst, row),
            }
        return result

    def _accel(self, inst: Instance, row: dict[str, Any]) -> str | None:
        """The accelerator a running kvm instance uses (kvm or tcg); None if not known."""
        if self.op.static or inst.hypervisor != constants.HT_KVM or row["oper_state"] is not True:
            return None
        info = self.rpc.call_instance_info(row["pnode"], inst.name, inst.hypervisor)
        if info.fail_msg or not isinstance(info.payload, dict):
            return None
        return info.payload.get("accel") or None

    def _group_name(self, uuid: str) -> str | None:
        group = self.cfg.get_nodegroup_info(uuid) if uuid else None
        return group.name if group else None

    def _run_state(self, inst: Instance, row: dict[str, Any]) -> str | None:
        """Ganeti's actual state: up, down, user down or offline (None: not asked)."""
        if self.op.static:
            return None
        running = row["oper_state"]
        if not isinstance(running, bool):
            # the primary node is offline or does not answer: nothing is known
            self.LogWarning(f"Primary node {row['pnode']} did not answer, returning"
                            f" static information only for instance {inst.name}")
            return None
        if running:
            return "up"
        if inst.admin_state == constants.ADMINST_OFFLINE:
            return "offline"
        if (inst.admin_state == constants.ADMINST_DOWN
                and inst.admin_state_source == constants.USER_SOURCE):
            return "user down"
        return "down"


def _disk_status(disk: Disk) -> dict[str, Any]:
    """A disk as Ganeti 3.0's OpInstanceQueryData shows it; no block device status
    (pstatus/sstatus None: file disks have no device to ask about)."""
    return {"iv_name": disk.iv_name, "name": disk.name, "uuid": disk.uuid,
            "size": disk.size, "spindles": None, "mode": disk.mode,
            "dev_type": disk.dev_type, "logical_id": list(disk.logical_id),
            "drbd_info": None, "pstatus": None, "sstatus": None, "children": []}


def _nic_tuple(nic: NIC, networks: Mapping[str, Network]) -> list[Any]:
    """Ganeti's NICToTuple: name, uuid, ip, mac, mode, link, vlan, network (uuid) and
    netinfo (the network's own fields, None without a network)."""
    info = nic_info(nic)
    net = networks.get(nic.network) if nic.network else None
    netinfo = {**net.model_dump(mode="json"), "uuid": net.uuid} if net else None
    return [info.name, info.uuid, info.ip, info.mac, info.mode, info.link, info.vlan,
            info.network, netinfo]


class LUNodeQuery(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpNodeQuery

    def CheckArguments(self) -> None:
        _check_output_fields(self.op.output_fields, qnode.FIELD_NAMES)

    def ExpandNames(self) -> None:
        self.op.names = [self.expand_node_name(n) for n in self.op.names]
        self.needed_locks = {}
        if self.op.use_locking:
            self.needed_locks[locking.LEVEL_NODE] = self.op.names or locking.ALL_SET
            self.share_locks[locking.LEVEL_NODE] = True

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        rows = qnode.node_rows(self.cfg, fields=["name", *self.op.output_fields])
        wanted = set(self.op.names)
        return [[row[f] for f in self.op.output_fields]
                for row in rows if not wanted or row["name"] in wanted]
