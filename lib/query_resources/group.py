"""The node group query resource: one row per group, from the configuration."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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
FIELD_NAMES = tuple(f[0] for f in FIELDS)


class _Query:
    """What every row of one query shares (read once per query)."""

    __slots__ = ("_primaries", "cluster", "members", "snap")

    def __init__(self, snap: Any) -> None:
        self.snap = snap
        self.cluster = snap.get_cluster_info()
        # group uuid -> {node uuid: node name}
        self.members: dict[str, dict[str, str]] = {}
        for node in snap.get_all_nodes_info().values():
            self.members.setdefault(node.group, {})[node.uuid] = node.name
        self._primaries: dict[str, list[str]] | None = None

    def primaries(self, group_uuid: str) -> list[str]:
        """Names of the instances whose primary node is in the group, sorted.

        One pass over the instances in the snapshot's name order, the first time
        a row needs them (no sort, no per-node look-ups)."""
        if self._primaries is None:
            group_of = {node: group for group, nodes in self.members.items()
                        for node in nodes}
            table = self.snap.get_all_instances_info()
            primaries: dict[str, list[str]] = {}
            for uuid in self.snap.get_instance_list():
                inst = table[uuid]
                group = group_of.get(inst.primary_node)
                if group is not None:
                    primaries.setdefault(group, []).append(inst.name)
            self._primaries = primaries
        return self._primaries.get(group_uuid, [])


class _Row:
    """One group's row work (shared work is the query's, done once)."""

    __slots__ = ("group", "q")

    def __init__(self, q: _Query, group: Any) -> None:
        self.q = q
        self.group = group

    def members(self) -> dict[str, str]:
        return self.q.members.get(self.group.uuid, {})

    def primaries(self) -> list[str]:
        return self.q.primaries(self.group.uuid)


# field name -> its value for one row (only the fields a query needs are computed)
_GETTERS: dict[str, Callable[[_Row], Any]] = {
    "name": lambda r: r.group.name,
    "uuid": lambda r: r.group.uuid,
    "node_cnt": lambda r: len(r.members()),
    "node_list": lambda r: sorted(r.members().values()),
    "pinst_cnt": lambda r: len(r.primaries()),
    "pinst_list": lambda r: list(r.primaries()),
    "alloc_policy": lambda _r: "preferred",
    "ndparams": lambda r: {**r.q.cluster.ndparams, **r.group.ndparams},
    "custom_ndparams": lambda r: dict(r.group.ndparams),
    "diskparams": lambda _r: {},
    "custom_diskparams": lambda _r: {},
    "ipolicy": lambda r: cluster_policy(r.q.cluster),
    "custom_ipolicy": lambda _r: {},
    "tags": lambda r: sorted(r.group.tags),
    "serial_no": lambda r: r.group.serial_no,
    "ctime": lambda r: r.group.ctime,
    "mtime": lambda r: r.group.mtime,
}


def _select(cfg: Any) -> tuple[_Query, list[Any]]:
    snap = cfg.snapshot()  # shared objects, read only
    return _Query(snap), sorted(snap.get_all_nodegroups_info().values(),
                                key=lambda g: g.name)


def group_rows(cfg: Any, fields: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One dict per node group, sorted by name, with the values of ``fields`` (None:
    every field of FIELDS)."""
    q, groups = _select(cfg)
    names = [n for n in (FIELD_NAMES if fields is None else fields) if n in _GETTERS]
    getters = [(name, _GETTERS[name]) for name in names]
    rows = []
    for group in groups:
        row = _Row(q, group)
        rows.append({name: getter(row) for name, getter in getters})
    return rows


def _rows(source: Any) -> Iterator[_Row]:
    q, groups = _select(source.context.cfg)
    return (_Row(q, group) for group in groups)


def register() -> None:
    query.register(RESOURCE_GROUP,
                   [query.FieldDef(name, title, kind, doc, query.item_function(_GETTERS[name]))
                    for name, title, kind, doc in FIELDS],
                   _rows)
