"""The node query resource: one row per node, from the configuration.

The live fields (memory, disk, CPUs) are asked from the nodes only when a
query selects or filters on one; OpNodeQuery knows only the config fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


class _Query:
    """What every row of one query shares (read once per query)."""

    __slots__ = ("_users", "cluster", "groups", "live", "master", "snap")

    def __init__(self, snap: Any, live: dict[str, Any] | None) -> None:
        self.snap = snap
        self.master = snap.get_master_node()
        self.groups = snap.get_all_nodegroups_info()
        self.cluster = snap.get_cluster_info()
        # node name -> its node_info payload, or the marker of all its live fields
        self.live = live
        self._users: dict[str, tuple[list[str], list[str]]] | None = None

    def users(self, node_uuid: str) -> tuple[list[str], list[str]]:
        """(primary, secondary) instance names of a node, each sorted by name.

        One pass over the instances in the snapshot's name order, the first time
        a row needs them (no sort, no per-node look-ups)."""
        if self._users is None:
            table = self.snap.get_all_instances_info()
            users: dict[str, tuple[list[str], list[str]]] = {}
            for uuid in self.snap.get_instance_list():
                inst = table[uuid]
                users.setdefault(inst.primary_node, ([], []))[0].append(inst.name)
                for node in dict.fromkeys(inst.secondary_nodes):
                    users.setdefault(node, ([], []))[1].append(inst.name)
            self._users = users
        return self._users.get(node_uuid, ([], []))


class _Row:
    """One node's row work: what several fields share is computed once, on demand."""

    __slots__ = ("node", "q")

    def __init__(self, q: _Query, node: Any) -> None:
        self.q = q
        self.node = node

    def users(self) -> tuple[list[str], list[str]]:
        """(primary, secondary) instance names, each sorted."""
        return self.q.users(self.node.uuid)

    def group_name(self) -> str:
        group = self.q.groups.get(self.node.group)
        return str(group.name) if group else str(self.node.group)

    def live(self, name: str) -> Any:
        live = self.q.live
        info = live.get(self.node.name, query.UNAVAIL) if live is not None else query.UNAVAIL
        if isinstance(info, dict):
            key = LIVE_FIELDS[name][3]
            return info[key] if key else info["memory_total"] - info["memory_free"]
        return info


def _live_getter(name: str) -> Callable[[_Row], Any]:
    return lambda r: r.live(name)


# field name -> its value for one row (only the fields a query needs are computed)
_GETTERS: dict[str, Callable[[_Row], Any]] = {
    "name": lambda r: r.node.name,
    "uuid": lambda r: r.node.uuid,
    "pip": lambda r: r.node.primary_ip,
    "sip": lambda r: r.node.secondary_ip or r.node.primary_ip,
    "port": lambda r: r.node.port or r.q.cluster.noded_port,
    "offline": lambda r: r.node.offline,
    "drained": lambda r: r.node.drained,
    "master_candidate": lambda r: r.node.master_candidate,
    "master_capable": lambda r: r.node.master_capable,
    "vm_capable": lambda r: r.node.vm_capable,
    "master": lambda r: r.node.uuid == r.q.master,
    "role": lambda r: _role(r.node, r.q.master),
    "group": lambda r: r.group_name(),
    "group.uuid": lambda r: r.node.group,
    "pinst_cnt": lambda r: len(r.users()[0]),
    "pinst_list": lambda r: list(r.users()[0]),
    "sinst_cnt": lambda r: len(r.users()[1]),
    "sinst_list": lambda r: list(r.users()[1]),
    "powered": lambda _r: True,
    "ndparams": lambda r: r.q.cluster.fill_ndparams(r.node, r.q.groups.get(r.node.group)),
    "custom_ndparams": lambda r: dict(r.node.ndparams),
    "tags": lambda r: sorted(r.node.tags),
    "backup_bwlimit": lambda r: r.node.backup_bwlimit or 0,
    "serial_no": lambda r: r.node.serial_no,
    "ctime": lambda r: r.node.ctime,
    "mtime": lambda r: r.node.mtime,
    **{name: _live_getter(name) for name in LIVE_FIELDS},
}


def _live_info(nodes: list[Any], rpc: RpcRunner | None) -> dict[str, Any]:
    """Per node name: its node_info payload, or the marker for its live fields."""
    online = sorted(n.name for n in nodes if not n.offline)
    answers = rpc.call_node_info(online) if rpc is not None and online else {}
    live: dict[str, Any] = {}
    for node in nodes:
        res = answers.get(node.name)
        if node.offline:
            live[node.name] = query.OFFLINE
        elif res is None or res.fail_msg or not isinstance(res.payload, dict):
            live[node.name] = query.UNAVAIL
        else:
            live[node.name] = dict(res.payload)
    return live


def _select(cfg: Any, rpc: RpcRunner | None, live: bool,
            matching: frozenset[str] | None = None) -> tuple[_Query, list[Any]]:
    """The nodes of a query, sorted by name (``matching``: only those a filter on
    these names can match), and what their rows share; only they are asked."""
    snap = cfg.snapshot()  # shared objects, read only
    nodes = sorted((n for n in snap.get_all_nodes_info().values()
                    if matching is None or query.name_matches(n.name, matching)),
                   key=lambda n: n.name)
    return _Query(snap, _live_info(nodes, rpc) if live else None), nodes


def node_rows(cfg: Any, rpc: RpcRunner | None = None, live: bool = False,
              fields: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One dict per node, sorted by name, with the values of ``fields`` (None: every
    field of FIELDS, plus the live ones when ``live``: then the nodes are asked)."""
    q, nodes = _select(cfg, rpc, live)
    names = [n for n in (FIELD_NAMES + (tuple(LIVE_FIELDS) if live else ())
                         if fields is None else fields) if n in _GETTERS]
    getters = [(name, _GETTERS[name]) for name in names]
    rows = []
    for node in nodes:
        row = _Row(q, node)
        rows.append({name: getter(row) for name, getter in getters})
    return rows


def _rows(source: Any, needed: frozenset[str], names: frozenset[str] | None
          ) -> Iterator[_Row]:
    # the nodes are asked only when a live field is selected or filtered on, and
    # only those the filter can match
    context = source.context
    q, nodes = _select(context.cfg, context.rpc, bool(needed & LIVE_FIELDS.keys()), names)
    return (_Row(q, node) for node in nodes)


def register() -> None:
    fields = [query.FieldDef(name, title, kind, doc, query.item_function(_GETTERS[name]))
              for name, title, kind, doc in FIELDS]
    fields += [query.FieldDef(name, title, kind, doc, query.item_function(_GETTERS[name]))
               for name, (title, kind, doc, _) in LIVE_FIELDS.items()]
    query.register(query.RESOURCE_NODE, fields, _rows, wants_names=True)
