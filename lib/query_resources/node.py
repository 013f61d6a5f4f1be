"""The node query resource: one row per node, from the configuration.

The live fields (memory, disk, CPUs) are asked from the nodes only when a
query selects or filters on one; OpNodeQuery knows only the config fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ganeti import query

if TYPE_CHECKING:
    from ganeti.rpc.client import RpcRunner

# (name, title, kind, doc): the fields of ``Query("node")`` and OpNodeQuery
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Node", query.QFT_TEXT, "Node name"),
    ("uuid", "UUID", query.QFT_TEXT, "Node UUID"),
    ("pip", "PrimaryIP", query.QFT_TEXT, "Primary IP address"),
    ("sip", "SecondaryIP", query.QFT_TEXT, "Secondary IP address"),
    ("port", "Port", query.QFT_NUMBER, "Node daemon port"),
    ("offline", "Offline", query.QFT_BOOL, "Whether the node is marked offline"),
    ("drained", "Drained", query.QFT_BOOL, "Whether the node is drained"),
    ("master_candidate", "MasterC", query.QFT_BOOL, "Whether the node holds the config"),
    ("master_capable", "MasterCapable", query.QFT_BOOL, "Whether it can become master"),
    ("vm_capable", "VMCapable", query.QFT_BOOL, "Whether it can host instances"),
    ("master", "IsMaster", query.QFT_BOOL, "Whether the node is the master"),
    ("role", "Role", query.QFT_TEXT,
     "M=master, C=candidate, R=regular, D=drained, O=offline"),
    ("group", "Group", query.QFT_TEXT, "Node group"),
    ("group.uuid", "GroupUUID", query.QFT_TEXT, "UUID of the node group"),
    ("pinst_cnt", "Pinst", query.QFT_NUMBER, "Number of primary instances"),
    ("pinst_list", "PriInstances", query.QFT_OTHER, "Primary instances"),
    ("sinst_cnt", "Sinst", query.QFT_NUMBER, "Number of secondary instances"),
    ("sinst_list", "SecInstances", query.QFT_OTHER, "Secondary instances"),
    ("powered", "Powered", query.QFT_BOOL,
     "Whether the node is thought to be powered on (always: no out-of-band management)"),
    ("ndparams", "NodeParameters", query.QFT_OTHER,
     "Node parameters in effect (cluster, group and node's own)"),
    ("custom_ndparams", "CustomNodeParameters", query.QFT_OTHER, "The node's own parameters"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("backup_bwlimit", "BackupBwLimit", query.QFT_NUMBER,
     "KiB/s shared by the node's export streams (0: no limit)"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
)
FIELD_NAMES = tuple(f[0] for f in FIELDS)

# live fields of Query("node") (Ganeti's names): field -> (title, kind, doc, node_info key)
LIVE_FIELDS: dict[str, tuple[str, str, str, str | None]] = {
    "mtotal": ("MTotal", query.QFT_UNIT, "Total memory of the node (MiB)", "memory_total"),
    "mfree": ("MFree", query.QFT_UNIT, "Memory available on the node (MiB)", "memory_free"),
    "mnode": ("MNode", query.QFT_UNIT,
              "Memory in use on the node, its instances' included (MiB)", None),
    "dtotal": ("DTotal", query.QFT_UNIT,
               "Size of the filesystem holding the node's root (MiB)", "disk_total"),
    "dfree": ("DFree", query.QFT_UNIT,
              "Free space on the filesystem holding the node's root (MiB)", "disk_free"),
    "ctotal": ("CTotal", query.QFT_NUMBER, "Number of CPUs of the node", "cpu_count"),
}


def _role(node: Any, master: str) -> str:
    if node.uuid == master:
        return "M"
    if node.offline:
        return "O"
    if node.drained:
        return "D"
    return "C" if node.master_candidate else "R"


def node_rows(cfg: Any) -> list[dict[str, Any]]:
    """One dict per node with every field of FIELDS, sorted by name."""
    snap = cfg.snapshot()  # shared objects, read only
    master = snap.get_master_node()
    groups = snap.get_all_nodegroups_info()
    cluster = snap.get_cluster_info()
    rows = []
    for node in sorted(snap.get_all_nodes_info().values(), key=lambda n: n.name):
        users = [snap.get_instance_info(u) for u in snap.get_node_instances(node.uuid)]
        primaries = [i.name for i in users if i is not None and i.primary_node == node.uuid]
        secondaries = [i.name for i in users
                       if i is not None and node.uuid in i.secondary_nodes]
        group = groups.get(node.group)
        rows.append({
            "name": node.name, "uuid": node.uuid, "pip": node.primary_ip,
            "sip": node.secondary_ip or node.primary_ip,
            "port": node.port or cluster.noded_port,
            "offline": node.offline, "drained": node.drained,
            "master_candidate": node.master_candidate,
            "master_capable": node.master_capable, "vm_capable": node.vm_capable,
            "master": node.uuid == master, "role": _role(node, master),
            "group": group.name if group else node.group, "group.uuid": node.group,
            "pinst_cnt": len(primaries), "pinst_list": primaries,
            "sinst_cnt": len(secondaries), "sinst_list": secondaries,
            "powered": True, "custom_ndparams": dict(node.ndparams),
            "ndparams": cluster.fill_ndparams(node, group),
            "tags": sorted(node.tags), "backup_bwlimit": node.backup_bwlimit or 0,
            "serial_no": node.serial_no,
            "ctime": node.ctime, "mtime": node.mtime,
        })
    return rows


def add_live_info(rows: list[dict[str, Any]], rpc: RpcRunner | None) -> None:
    """Fill the live fields from the nodes; markers for offline or silent ones."""
    online = [r["name"] for r in rows if not r["offline"]]
    answers = rpc.call_node_info(online) if rpc is not None and online else {}
    for row in rows:
        res = answers.get(row["name"])
        if row["offline"]:
            marker: Any = query.OFFLINE
        elif res is None or res.fail_msg or not isinstance(res.payload, dict):
            marker = query.UNAVAIL
        else:
            info: dict[str, Any] = dict(res.payload)
            for name, (_, _, _, key) in LIVE_FIELDS.items():
                row[name] = info[key] if key else \
                    info["memory_total"] - info["memory_free"]
            continue
        row.update(dict.fromkeys(LIVE_FIELDS, marker))


def _rows(source: Any, needed: frozenset[str]) -> list[dict[str, Any]]:
    rows = node_rows(source.context.cfg)
    if needed & LIVE_FIELDS.keys():
        add_live_info(rows, source.context.rpc)
    return rows


def register() -> None:
    fields = [query.FieldDef(name, title, kind, doc, query.item_getter(name))
              for name, title, kind, doc in FIELDS]
    fields += [query.FieldDef(name, title, kind, doc, query.item_getter(name))
               for name, (title, kind, doc, _) in LIVE_FIELDS.items()]
    query.register(query.RESOURCE_NODE, fields, _rows, wants_fields=True)
