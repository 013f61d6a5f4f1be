"""The query LUs (OpInstanceQuery, OpInstanceQueryData, OpNodeQuery).

Their rows come from the query resources (:mod:`ganeti.query_resources`), which
``Query("instance")`` and ``Query("node")`` share; this module only adds the
locking and the opcode result shapes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ganeti import errors, locking, opcodes, query
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU
from ganeti.objects import Instance
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
        rows = qinstance.instance_rows(self.cfg, self.rpc, live, self.op.names or None)
        return [[query.plain(row[f]) for f in self.op.output_fields] for row in rows]


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
        cluster = self.cfg.get_cluster_info()
        result: dict[str, Any] = {}
        for name, row in rows.items():
            inst = self.cfg.get_instance_info_by_name(name)
            if inst is None:
                continue
            result[name] = {
                "name": name, "uuid": inst.uuid, "os": inst.os, "pnode": row["pnode"],
                "snodes": row["snodes"], "hypervisor": inst.hypervisor,
                "disk_template": inst.disk_template, "admin_state": inst.admin_state,
                "run_state": None if self.op.static else row["status"],
                "oper_ram": query.plain(row["oper_ram"]),
                "oper_vcpus": query.plain(row["oper_vcpus"]),
                "be_instance": dict(inst.beparams), "be_actual": cluster.fill_beparams(inst),
                "hv_instance": dict(inst.hvparams), "hv_actual": _hv_actual(cluster, inst),
                "os_instance": dict(inst.osparams),
                "disks": [{"iv_name": d.iv_name, "name": d.name, "size": d.size,
                           "mode": d.mode, "dev_type": d.dev_type,
                           "logical_id": list(d.logical_id)} for d in inst.disks],
                "nics": [{"mac": n.mac, "ip": n.ip, "name": n.name,
                          "mode": n.nicparams.get("mode"), "link": n.nicparams.get("link")}
                         for n in inst.nics],
                "tags": sorted(inst.tags), "ctime": inst.ctime, "mtime": inst.mtime,
                "serial_no": inst.serial_no,
            }
        return result


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
        rows = qnode.node_rows(self.cfg)
        wanted = set(self.op.names)
        return [[row[f] for f in self.op.output_fields]
                for row in rows if not wanted or row["name"] in wanted]
