"""The instance query resource: config rows plus, when asked, the live state.

Shared by ``Query("instance")`` and the OpInstanceQuery/OpInstanceQueryData LUs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ganeti import constants, limits, query
from ganeti.backup.export_stats import ExportRecord, ExportStats
from ganeti.hooks.instance_env import NicInfo, nic_info
from ganeti.objects import Instance

if TYPE_CHECKING:
    from ganeti.config import ConfigSnapshot, ConfigStore
    from ganeti.rpc.client import RpcRunner

# (name, title, kind, doc): the fields of ``Query("instance")`` and OpInstanceQuery
FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Instance", query.QFT_TEXT, "Instance name"),
    ("uuid", "UUID", query.QFT_TEXT, "Instance UUID"),
    ("os", "OS", query.QFT_TEXT, "Operating system"),
    ("pnode", "Primary_node", query.QFT_TEXT, "Primary node"),
    ("snodes", "Secondary_Nodes", query.QFT_OTHER, "Secondary nodes"),
    ("hypervisor", "Hypervisor", query.QFT_TEXT, "Hypervisor name"),
    ("disk_template", "Disk_template", query.QFT_TEXT, "Disk template"),
    ("admin_state", "InstanceState", query.QFT_TEXT, "Desired state (up, down, offline)"),
    ("status", "Status", query.QFT_TEXT,
     "running, ADMIN_down, ERROR_down, ERROR_up, ERROR_nodeoffline, ERROR_nodedown"),
    ("oper_state", "Running", query.QFT_BOOL, "Whether the instance really runs"),
    ("oper_ram", "Memory", query.QFT_UNIT, "Memory the running instance uses (MiB)"),
    ("oper_vcpus", "VCPUs", query.QFT_NUMBER, "VCPUs of the running instance"),
    ("be/maxmem", "ConfigMaxMem", query.QFT_UNIT, "Configured maximum memory (MiB)"),
    ("be/minmem", "ConfigMinMem", query.QFT_UNIT, "Configured minimum memory (MiB)"),
    ("be/vcpus", "ConfigVCPUs", query.QFT_NUMBER, "Configured VCPUs"),
    ("disk.count", "Disks", query.QFT_NUMBER, "Number of disks"),
    ("disk.sizes", "Disk_sizes", query.QFT_OTHER, "Disk sizes (MiB)"),
    ("disk_usage", "DiskUsage", query.QFT_UNIT, "Total disk space used (MiB)"),
    ("nic.count", "NICs", query.QFT_NUMBER, "Number of network interfaces"),
    ("nic.macs", "NIC_MACs", query.QFT_OTHER, "MAC addresses"),
    # Ganeti's per-NIC, per-disk and parameter fields (RAPI's instance shape needs them)
    ("nic.ips", "NIC_IPs", query.QFT_OTHER, "IP address of each NIC"),
    ("nic.modes", "NIC_modes", query.QFT_OTHER, "Mode of each NIC"),
    ("nic.links", "NIC_links", query.QFT_OTHER, "Link of each NIC"),
    ("nic.bridges", "NIC_bridges", query.QFT_OTHER,
     "Bridge of each NIC (its link in bridged mode, else None)"),
    ("nic.names", "NIC_Names", query.QFT_OTHER, "Name of each NIC"),
    ("nic.uuids", "NIC_UUIDs", query.QFT_OTHER, "UUID of each NIC"),
    ("nic.networks", "NIC_networks", query.QFT_OTHER, "Network (uuid) of each NIC"),
    ("nic.networks.names", "NIC_networks_names", query.QFT_OTHER,
     "Network (name) of each NIC"),
    ("disk.names", "Disk_names", query.QFT_OTHER, "Name of each disk"),
    ("disk.uuids", "Disk_UUIDs", query.QFT_OTHER, "UUID of each disk"),
    ("beparams", "BackendParameters", query.QFT_OTHER, "Backend parameters in effect"),
    ("hvparams", "HypervisorParameters", query.QFT_OTHER,
     "Hypervisor parameters in effect"),
    ("custom_beparams", "CustomBackendParameters", query.QFT_OTHER,
     "The instance's own backend parameters"),
    ("custom_hvparams", "CustomHypervisorParameters", query.QFT_OTHER,
     "The instance's own hypervisor parameters"),
    ("custom_nicparams", "CustomNicParameters", query.QFT_OTHER,
     "Each NIC's own parameters"),
    ("tags", "Tags", query.QFT_OTHER, "Tags"),
    ("ctime", "CTime", query.QFT_TIMESTAMP, "Creation time"),
    ("mtime", "MTime", query.QFT_TIMESTAMP, "Modification time"),
    ("serial_no", "SerialNo", query.QFT_NUMBER, "Modification serial number"),
)
# export statistics, recorded by the master when an export ends
# (ganeti.backup.export_stats; doc/metrics.md): (name, ExportRecord attribute, title,
# kind, doc); never exported: unavailable, failures 0
_EXPORT: tuple[tuple[str, str, str, str, str], ...] = (
    ("export.last_success", "last_success", "LastExport", query.QFT_TIMESTAMP,
     "When the last successful export was committed (unavailable: never exported)"),
    ("export.duration", "duration", "ExportSecs", query.QFT_NUMBER,
     "Seconds the last successful export took, from the start of its Exec (before any"
     " shutdown or snapshot) to its commit"),
    ("export.bytes", "wire_bytes", "ExportBytes", query.QFT_NUMBER,
     "Bytes the last successful export sent over the network (compressed, with framing;"
     " an incremental export sends only the changed blocks)"),
    ("export.data_bytes", "data_bytes", "ExportDataBytes", query.QFT_NUMBER,
     "Data bytes the last successful export copied, before compression"),
    ("export.disk_bytes", "disk_bytes", "ExportDiskBytes", query.QFT_NUMBER,
     "Total size of the disks the last successful export holds (bytes)"),
    ("export.target", "target", "ExportTarget", query.QFT_TEXT,
     "Target node of the last successful export (\"remote\" for another cluster)"),
    ("export.failures", "failures", "ExportFailures", query.QFT_NUMBER,
     "Failed exports since the last successful one (a success resets it to 0)"),
    ("export.last_failure", "last_failure", "LastExportFailure", query.QFT_TIMESTAMP,
     "When the last export failed (unavailable: none failed yet)"),
    ("export.last_error", "last_error", "LastExportError", query.QFT_TEXT,
     "Why the last export failed"),
)
EXPORT_FIELDS = tuple((name, title, kind, doc) for name, _, title, kind, doc in _EXPORT)
_EXPORT_ATTRS = {name: attr for name, attr, *_ in _EXPORT}
EXPORT_FIELD_NAMES = frozenset(_EXPORT_ATTRS)
# one table for Query("instance") and OpInstanceQuery
FIELDS += EXPORT_FIELDS
# Ganeti's per-item fields (disk.size/0 ... disk.size/15): (prefix, the list field they
# index, how many, title, kind, doc); an index past the instance's last item is
# unavailable
_INDEXED: tuple[tuple[str, str, int, str, str, str], ...] = (
    ("disk.size", "disk.sizes", limits.DISKS.maximum, "Disk", query.QFT_UNIT,
     "Size of disk {n} (MiB)"),
    ("disk.name", "disk.names", limits.DISKS.maximum, "DiskName", query.QFT_TEXT,
     "Name of disk {n}"),
    ("disk.uuid", "disk.uuids", limits.DISKS.maximum, "DiskUUID", query.QFT_TEXT,
     "UUID of disk {n}"),
    ("nic.mac", "nic.macs", limits.NICS.maximum, "NicMAC", query.QFT_TEXT,
     "MAC address of NIC {n}"),
    ("nic.ip", "nic.ips", limits.NICS.maximum, "NicIP", query.QFT_TEXT,
     "IP address of NIC {n}"),
    ("nic.mode", "nic.modes", limits.NICS.maximum, "NicMode", query.QFT_TEXT,
     "Mode of NIC {n}"),
    ("nic.link", "nic.links", limits.NICS.maximum, "NicLink", query.QFT_TEXT,
     "Link of NIC {n}"),
    ("nic.name", "nic.names", limits.NICS.maximum, "NicName", query.QFT_TEXT,
     "Name of NIC {n}"),
)
# indexed field name -> (list field, index)
INDEXED_FIELDS: dict[str, tuple[str, int]] = {
    f"{prefix}/{n}": (source, n) for prefix, source, count, *_ in _INDEXED
    for n in range(count)}
FIELDS += tuple((f"{prefix}/{n}", f"{title}/{n}", kind, doc.format(n=n))
                for prefix, _source, count, title, kind, doc in _INDEXED for n in range(count))
FIELD_NAMES = tuple(f[0] for f in FIELDS)


class _IndexGetter:
    """Getter of one item of a list field (unavailable past its end)."""

    __slots__ = ("index", "source")

    def __init__(self, source: str, index: int) -> None:
        self.source = source
        self.index = index

    def __call__(self, _source: Any, row: dict[str, Any]) -> Any:
        items = row[self.source]
        return items[self.index] if self.index < len(items) else query.UNAVAIL


def field_value(row: dict[str, Any], name: str) -> Any:
    """``row[name]``, the indexed fields (``disk.size/0``) included."""
    if name in INDEXED_FIELDS:
        return _IndexGetter(*INDEXED_FIELDS[name])(None, row)
    return row[name]
# fields needing the live state from the primary nodes
LIVE_FIELDS = frozenset({"status", "oper_state", "oper_ram", "oper_vcpus"})

ST_RUNNING = "running"
ST_ADMIN_DOWN = "ADMIN_down"
ST_ADMIN_OFFLINE = "ADMIN_offline"
ST_ERROR_DOWN = "ERROR_down"
ST_ERROR_UP = "ERROR_up"
ST_NODE_OFFLINE = "ERROR_nodeoffline"
ST_NODE_DOWN = "ERROR_nodedown"


def collect_live_info(cfg: ConfigStore | ConfigSnapshot, rpc: RpcRunner,
                      instances: Iterable[Instance]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per primary node uuid: ("ok"|"offline"|"down", {instance name: info})."""
    by_node: dict[str, set[str]] = {}
    for inst in instances:
        by_node.setdefault(inst.primary_node, set()).add(inst.hypervisor)
    result: dict[str, tuple[str, dict[str, Any]]] = {}
    to_call: dict[str, str] = {}
    for uuid in by_node:
        node = cfg.get_node_info(uuid)
        if node is None or node.offline:
            result[uuid] = ("offline", {})
        else:
            to_call[node.name] = uuid
    if rpc is None:
        return {**result, **{uuid: ("down", {}) for uuid in to_call.values()}}
    hvs = sorted({hv for hvset in by_node.values() for hv in hvset})
    if to_call:
        answers = rpc.call_all_instances_info(sorted(to_call), hvs)
        for name, uuid in to_call.items():
            res = answers.get(name)
            if res is None or res.fail_msg or not isinstance(res.payload, dict):
                result[uuid] = ("offline" if res is not None and res.offline else "down", {})
            else:
                result[uuid] = ("ok", res.payload)
    return result


def _status(inst: Instance, node_state: str, info: dict[str, Any] | None) -> str:
    if node_state == "offline":
        return ST_NODE_OFFLINE
    if node_state == "down":
        return ST_NODE_DOWN
    up = inst.admin_state == constants.ADMINST_UP
    if info is not None:
        return ST_RUNNING if up else ST_ERROR_UP
    if up:
        return ST_ERROR_DOWN
    return ST_ADMIN_OFFLINE if inst.admin_state == constants.ADMINST_OFFLINE else ST_ADMIN_DOWN


class _Query:
    """What every row of one query shares (read once per query)."""

    __slots__ = ("cluster", "live", "live_info", "networks", "node_names", "records")

    def __init__(self, snap: ConfigSnapshot, live: bool,
                 live_info: dict[str, tuple[str, dict[str, Any]]],
                 records: Mapping[str, ExportRecord] | None) -> None:
        self.cluster = snap.get_cluster_info()
        self.networks = snap.get_networks()
        self.node_names = {uuid: node.name
                           for uuid, node in snap.get_all_nodes_info().items()}
        self.live = live
        self.live_info = live_info
        self.records = records


class _Row:
    """One instance's row work: what several fields share is computed once, on demand."""

    __slots__ = ("_be", "_export", "_live", "_nics", "inst", "q")

    def __init__(self, q: _Query, inst: Instance) -> None:
        self.q = q
        self.inst = inst
        self._be: dict[str, Any] | None = None
        self._nics: list[NicInfo] | None = None
        self._live: Mapping[str, Any] | None = None
        self._export: Mapping[str, Any] | None = None

    def be(self) -> dict[str, Any]:
        if self._be is None:
            self._be = self.q.cluster.fill_beparams(self.inst)
        return self._be

    def nics(self) -> list[NicInfo]:
        if self._nics is None:
            self._nics = [nic_info(n) for n in self.inst.nics]
        return self._nics

    def live(self) -> Mapping[str, Any]:
        if self._live is None:
            self._live = _live_values(self.q, self.inst)
        return self._live

    def export(self) -> Mapping[str, Any]:
        if self._export is None:
            records = self.q.records
            self._export = (_NO_STATS if records is None
                            else _export_values(records.get(self.inst.uuid)))
        return self._export


# what rows share when nothing live was asked for, or no export was recorded
# (read only: getters index them, never change them)
_NO_LIVE: Mapping[str, Any] = dict.fromkeys(LIVE_FIELDS, query.UNAVAIL)
_NO_STATS: Mapping[str, Any] = dict.fromkeys(EXPORT_FIELD_NAMES, query.NODATA)


def _live_values(q: _Query, inst: Instance) -> Mapping[str, Any]:
    if not q.live:
        return _NO_LIVE
    node_state, infos = q.live_info.get(inst.primary_node, ("down", {}))
    info = infos.get(inst.name)
    values: dict[str, Any] = {"status": _status(inst, node_state, info)}
    # as Ganeti: a stopped instance has no figures (unavail, "-"); a silent or
    # offline node leaves them unknown (nodata, "?"; offline would describe
    # the instance, not its node)
    if node_state == "ok":
        values["oper_state"] = info is not None
        values["oper_ram"] = info["memory"] if info else query.UNAVAIL
        values["oper_vcpus"] = info["vcpus"] if info else query.UNAVAIL
    else:
        values.update(dict.fromkeys(("oper_state", "oper_ram", "oper_vcpus"), query.NODATA))
    return values


def _network_name(q: _Query, network: str | None) -> str | None:
    return q.networks[network].name if network is not None and network in q.networks \
        else None


def _live_getter(name: str) -> Callable[[_Row], Any]:
    return lambda r: r.live()[name]


def _export_getter(name: str) -> Callable[[_Row], Any]:
    return lambda r: r.export()[name]


# field name -> its value for one row; a row computes only the fields a query needs
# (selected or filtered on), and the shared work (filled parameters, NIC info, live
# state) only when one of those fields needs it
_GETTERS: dict[str, Callable[[_Row], Any]] = {
    "name": lambda r: r.inst.name,
    "uuid": lambda r: r.inst.uuid,
    "os": lambda r: r.inst.os,
    "pnode": lambda r: r.q.node_names.get(r.inst.primary_node, r.inst.primary_node),
    "snodes": lambda r: [r.q.node_names.get(n, n) for n in r.inst.secondary_nodes],
    "hypervisor": lambda r: r.inst.hypervisor,
    "disk_template": lambda r: r.inst.disk_template,
    "admin_state": lambda r: r.inst.admin_state,
    "be/maxmem": lambda r: r.be().get("maxmem"),
    "be/minmem": lambda r: r.be().get("minmem"),
    "be/vcpus": lambda r: r.be().get("vcpus"),
    "disk.count": lambda r: len(r.inst.disks),
    "disk.sizes": lambda r: [d.size for d in r.inst.disks],
    "disk_usage": lambda r: sum(d.size for d in r.inst.disks),
    "nic.count": lambda r: len(r.inst.nics),
    "nic.macs": lambda r: [n.mac for n in r.inst.nics],
    "nic.ips": lambda r: [n.ip for n in r.nics()],
    "nic.modes": lambda r: [n.mode for n in r.nics()],
    "nic.links": lambda r: [n.link for n in r.nics()],
    "nic.bridges": lambda r: [n.link if n.mode == "bridged" else None for n in r.nics()],
    "nic.names": lambda r: [n.name for n in r.nics()],
    "nic.uuids": lambda r: [n.uuid for n in r.nics()],
    "nic.networks": lambda r: [n.network for n in r.nics()],
    "nic.networks.names": lambda r: [_network_name(r.q, n.network) for n in r.nics()],
    "disk.names": lambda r: [d.name for d in r.inst.disks],
    "disk.uuids": lambda r: [d.uuid for d in r.inst.disks],
    "beparams": lambda r: r.be(),
    "hvparams": lambda r: r.q.cluster.fill_hvparams(r.inst),
    "custom_beparams": lambda r: dict(r.inst.beparams),
    "custom_hvparams": lambda r: dict(r.inst.hvparams),
    "custom_nicparams": lambda r: [dict(n.nicparams) for n in r.inst.nics],
    "tags": lambda r: sorted(r.inst.tags),
    "ctime": lambda r: r.inst.ctime,
    "mtime": lambda r: r.inst.mtime,
    "serial_no": lambda r: r.inst.serial_no,
    **{name: _live_getter(name) for name in sorted(LIVE_FIELDS)},
    **{name: _export_getter(name) for name in _EXPORT_ATTRS},
}


def row_fields(fields: Iterable[str]) -> tuple[str, ...]:
    """The row keys ``fields`` need: indexed fields read their list, unknown ones none."""
    keys = {INDEXED_FIELDS[f][0] if f in INDEXED_FIELDS else f for f in fields}
    return tuple(name for name in _GETTERS if name in keys)


_NEVER_EXPORTED: Mapping[str, Any] = {
    name: 0 if name == "export.failures" else query.UNAVAIL for name in _EXPORT_ATTRS}


def _export_values(record: ExportRecord | None) -> Mapping[str, Any]:
    if record is None:
        return _NEVER_EXPORTED
    values = {name: getattr(record, attr) for name, attr in _EXPORT_ATTRS.items()}
    return {name: query.UNAVAIL if value is None else value
            for name, value in values.items()}


def _select(cfg: ConfigStore, rpc: RpcRunner | None, live: bool,
            names: Iterable[str] | None, stats: ExportStats | None,
            matching: frozenset[str] | None) -> tuple[_Query, list[Instance]]:
    """The instances of a query, sorted by name, and what their rows share."""
    snap = cfg.snapshot()  # one consistent view, shared objects (read only)
    instances: list[Instance]
    if names:  # exact names: index lookups, cost proportional to the rows asked for
        found = (snap.get_instance_info_by_name(name) for name in set(names))
        instances = sorted((i for i in found if i is not None), key=lambda i: i.name)
    else:
        # the snapshot keeps its name order (sorted once per configuration serial)
        table = snap.get_all_instances_info()
        instances = [table[uuid] for uuid in snap.get_instance_list()]
    if matching is not None:
        instances = [i for i in instances if query.name_matches(i.name, matching)]
    live_info = (collect_live_info(snap, rpc, instances)
                 if live and instances and rpc is not None else {})
    return _Query(snap, live, live_info, stats.all() if stats is not None else None), \
        instances


def instance_rows(cfg: ConfigStore, rpc: RpcRunner | None = None, live: bool = False,
                  names: Iterable[str] | None = None, stats: ExportStats | None = None,
                  matching: frozenset[str] | None = None,
                  fields: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One dict per instance, sorted by name, with the values of ``fields`` (the
    indexed ones through their list field; None: every FIELDS value).

    Live fields hold query status markers unless ``live`` (then the primary
    nodes are asked); markers are ``query.UNAVAIL``/``OFFLINE``/``NODATA``.
    Export fields come from ``stats`` (read once; without it: ``query.NODATA``).
    ``names`` are exact; ``matching`` are names as a query filter compares them
    (``query.name_matches``).
    """
    q, instances = _select(cfg, rpc, live, names, stats, matching)
    getters = [(name, _GETTERS[name])
               for name in (tuple(_GETTERS) if fields is None else row_fields(fields))]
    rows = []
    for inst in instances:
        row = _Row(q, inst)
        rows.append({name: getter(row) for name, getter in getters})
    return rows


def _rows(source: Any, needed: frozenset[str], names: frozenset[str] | None
          ) -> Iterator[_Row]:
    """The Query resource's items: one lazy row per instance, no dict per row (the
    fields' getters compute only what the query selects or filters on)."""
    # nodes are only contacted when a live field is selected or filtered on, and
    # only the primaries of the instances the filter can match
    context = source.context
    stats = ExportStats.for_paths(context.paths) if needed & EXPORT_FIELD_NAMES else None
    q, instances = _select(context.cfg, context.rpc, bool(needed & LIVE_FIELDS), None,
                           stats, names)
    return (_Row(q, inst) for inst in instances)


def _indexed(source: str, index: int) -> Callable[[_Row], Any]:
    """Item ``index`` of the list field ``source`` of a row (unavailable past its end)."""
    getter = _GETTERS[source]

    def get(row: _Row) -> Any:
        items = getter(row)
        return items[index] if index < len(items) else query.UNAVAIL
    return get


def register() -> None:
    query.register(query.RESOURCE_INSTANCE,
                   [query.FieldDef(name, title, kind, doc, query.item_function(
                       _indexed(*INDEXED_FIELDS[name]) if name in INDEXED_FIELDS
                       else _GETTERS[name]))
                    for name, title, kind, doc in FIELDS],
                   _rows, wants_names=True)
