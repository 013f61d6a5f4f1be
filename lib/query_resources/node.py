"""The node query resource: one row per node, from the configuration."""

from __future__ import annotations

from typing import Any

from ganeti import query

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
    ("role", "Role", query.QFT_TEXT,
     "M=master, C=candidate, R=regular, D=drained, O=offline"),
    ("group", "Group", query.QFT_TEXT, "Node group"),
    ("pinst_cnt", "Pinst", query.QFT_NUMBER, "Number of primary instances"),
    ("pinst_list", "PriInstances", query.QFT_OTHER, "Primary instances"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("backup_bwlimit", "BackupBwLimit", query.QFT_NUMBER,
     "KiB/s shared by the node's export streams (0: no limit)"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
)
FIELD_NAMES = tuple(f[0] for f in FIELDS)


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
    master = cfg.get_master_node()
    groups = cfg.get_all_nodegroups_info()
    instances = cfg.get_all_instances_info().values()
    rows = []
    for node in sorted(cfg.get_all_nodes_info().values(), key=lambda n: n.name):
        primaries = sorted(i.name for i in instances if i.primary_node == node.uuid)
        group = groups.get(node.group)
        rows.append({
            "name": node.name, "uuid": node.uuid, "pip": node.primary_ip,
            "sip": node.secondary_ip or node.primary_ip,
            "port": node.port or cfg.get_cluster_info().noded_port,
            "offline": node.offline, "drained": node.drained,
            "master_candidate": node.master_candidate,
            "master_capable": node.master_capable, "vm_capable": node.vm_capable,
            "role": _role(node, master), "group": group.name if group else node.group,
            "pinst_cnt": len(primaries), "pinst_list": primaries,
            "tags": sorted(node.tags), "backup_bwlimit": node.backup_bwlimit or 0,
            "serial_no": node.serial_no,
            "ctime": node.ctime, "mtime": node.mtime,
        })
    return rows


def _rows(source: Any) -> list[dict[str, Any]]:
    return node_rows(source.context.cfg)


def register() -> None:
    query.register(query.RESOURCE_NODE,
                   [query.FieldDef(name, title, kind, doc, query.item_getter(name))
                    for name, title, kind, doc in FIELDS],
                   _rows)
