"""The node group query resource: one row per group, from the configuration."""

from __future__ import annotations

from typing import Any, Final

from ganeti import query
from ganeti.query_resources.cluster import cluster_policy

RESOURCE_GROUP: Final = "group"

# (name, title, kind, doc): the fields of ``Query("group")`` and QueryGroups
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Group", query.QFT_TEXT, "Group name"),
    ("uuid", "UUID", query.QFT_TEXT, "Group UUID"),
    ("node_cnt", "Nodes", query.QFT_NUMBER, "Number of nodes"),
    ("node_list", "NodeList", query.QFT_OTHER, "List of nodes"),
    ("pinst_cnt", "Instances", query.QFT_NUMBER,
     "Number of primary instances of the group's nodes"),
    ("pinst_list", "InstanceList", query.QFT_OTHER,
     "Primary instances of the group's nodes"),
    ("alloc_policy", "AllocPolicy", query.QFT_TEXT,
     "Allocation policy (always preferred: there are no instance allocators)"),
    ("ndparams", "NDParams", query.QFT_OTHER,
     "Node parameters in effect for the group (cluster's and group's own)"),
    ("custom_ndparams", "CustomNDParams", query.QFT_OTHER, "The group's own node parameters"),
    ("diskparams", "DiskParameters", query.QFT_OTHER,
     "Disk parameters (always empty: there are none)"),
    ("custom_diskparams", "CustomDiskParameters", query.QFT_OTHER,
     "The group's own disk parameters (always empty)"),
    ("ipolicy", "InstancePolicy", query.QFT_OTHER,
     "Instance policy in effect (QueryClusterInfo's: it limits nothing)"),
    ("custom_ipolicy", "CustomInstancePolicy", query.QFT_OTHER,
     "The group's own instance policy (always empty)"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
)


def group_rows(cfg: Any) -> list[dict[str, Any]]:
    """One dict per node group with every field of FIELDS, sorted by name."""
    snap = cfg.snapshot()  # shared objects, read only
    nodes = snap.get_all_nodes_info().values()
    cluster = snap.get_cluster_info()
    rows = []
    for group in sorted(snap.get_all_nodegroups_info().values(), key=lambda g: g.name):
        members = {n.uuid: n.name for n in nodes if n.group == group.uuid}
        users = {u for m in members for u in snap.get_node_instances(m)}
        primaries = sorted(i.name for i in map(snap.get_instance_info, users)
                           if i is not None and i.primary_node in members)
        rows.append({
            "name": group.name, "uuid": group.uuid,
            "node_cnt": len(members), "node_list": sorted(members.values()),
            "pinst_cnt": len(primaries), "pinst_list": primaries,
            "alloc_policy": "preferred",
            "ndparams": {**cluster.ndparams, **group.ndparams},
            "custom_ndparams": dict(group.ndparams), "diskparams": {},
            "custom_diskparams": {}, "ipolicy": cluster_policy(cluster),
            "custom_ipolicy": {},
            "tags": sorted(group.tags),
            "serial_no": group.serial_no, "ctime": group.ctime, "mtime": group.mtime,
        })
    return rows


def _rows(source: Any) -> list[dict[str, Any]]:
    return group_rows(source.context.cfg)


def register() -> None:
    query.register(RESOURCE_GROUP,
                   [query.FieldDef(name, title, kind, doc, query.item_getter(name))
                    for name, title, kind, doc in FIELDS],
                   _rows)
