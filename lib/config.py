"""The cluster configuration store: ``config.data`` plus a journal of changes.

The master owns the only writable ``ConfigStore``; every change goes through a
write method that validates it, bumps serial numbers and appends one journal
record (``ganeti.config_journal``) before it returns, so a crash loses nothing
acknowledged and readers in other processes (``config_journal.load``) never
see a partial change.  Now and then, and at a clean shutdown (:meth:`close`),
the journal is folded into ``config.data`` (:meth:`ConfigStore.compact`).

Scale (doc/design.md, "The configuration store"):

- Indexes (:class:`_Index`: names, MACs, node -> instances) are updated with
  every change, so lookups never scan the instances.
- :meth:`ConfigStore.snapshot` hands out an immutable :class:`ConfigSnapshot`
  sharing the store's objects (no copies).  The store never edits an object
  in place once it is stored: a change replaces it, working on shallow copies
  of the tables, so snapshots never change and a failed change is undone.
  Stored objects are frozen (:meth:`ganeti.objects.ConfigObject.freeze`), so
  setting a field of one raises ProgrammerError.
- The ``get_*_info`` methods still hand out deep copies, for callers that edit
  and give them back with :meth:`ConfigStore.update`, which refuses stale ones.
- A write method changes the tables only through :class:`_Change`, which
  records each replaced or deleted object: that is the commit's journal record
  (objects, not a diff of the whole configuration) and what undoing it needs.
- Group commit: a change is applied in memory, then its caller waits until a
  journal append containing it is durable.  One waiting caller appends the
  records of every change made so far, so concurrent changes share one write
  and fsync.  A write costs the changed objects, not the configuration's size.
- Compaction rewrites ``config.data`` from an unchanging view of the data in a
  background thread once the journal reaches a share of the file's size, so
  its cost per commit stays constant as the cluster grows.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ganeti import config_journal, constants, errors
from ganeti.fileutils import atomic_write
from ganeti.objects import (
    BackupSchedule,
    Cluster,
    ConfigData,
    Instance,
    Network,
    Node,
    NodeGroup,
)

logger = logging.getLogger(__name__)

DEFAULT_NODEGROUP_NAME = "default"
CONFIG_FILE_MODE = 0o600

WriteListener = Callable[[dict[str, Any], int], None]
RecordListener = Callable[[list[config_journal.Record], int], None]
# compact when the journal holds this share of the file's size (at least the minimum)
COMPACT_RATIO = 0.5
COMPACT_MIN_BYTES = 512 * 1024
_T = TypeVar("_T")
_Obj = TypeVar("_Obj", Cluster, Node, Instance, NodeGroup, BackupSchedule, Network)
# identifies one version of the file on disk: (inode, mtime_ns, size)
_FileKey = tuple[int, int, int]


def _file_key(st: os.stat_result) -> _FileKey:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _serialize(data: ConfigData) -> bytes:
    return data.to_json().encode("utf-8")


_TABLES = ("nodes", "nodegroups", "instances", "networks", "backup_schedules")


class _Fragments:
    """Serialises the configuration reusing each unchanged object's JSON.

    Stored objects are frozen and replaced on every change, so an object that
    is still the same Python object has the same JSON; only new objects are
    serialised (pydantic's serialiser was 90% of a write at 10,000 instances).
    The bytes equal :func:`_serialize`'s (checked by the unit tests).
    """

    def __init__(self) -> None:
        # per table: key -> the object serialised, and key -> b'"key":{...}', both in
        # the table's order; holding the objects keeps their ids from being reused
        self._objs: dict[str, dict[str, Any]] = {t: {} for t in _TABLES}
        self._bytes: dict[str, dict[str, bytes]] = {t: {} for t in _TABLES}

    def serialize(self, data: ConfigData) -> bytes:
        head = data.model_dump_json(exclude={"cluster", *_TABLES}).encode()
        parts = [head[:-1], b',"cluster":', data.cluster.to_json().encode()]
        for name in _TABLES:
            table: dict[str, Any] = getattr(data, name)
            objs, raws = self._objs[name], self._bytes[name]
            for key in objs.keys() - table.keys():
                del objs[key], raws[key]
            for key in [k for k, o in table.items() if objs.get(k) is not o]:
                obj = table[key]
                # an object someone may still edit (not frozen) is serialised every time
                objs[key] = obj if obj.frozen else None
                raws[key] = (json.dumps(key, ensure_ascii=False).encode() + b":"
                             + obj.to_json().encode())
            if list(raws) != list(table):  # a key removed and added again moved to the end
                self._objs[name] = objs = {k: objs[k] for k in table}
                self._bytes[name] = raws = {k: raws[k] for k in table}
            parts.append(b',"' + name.encode() + b'":{')
            parts.append(b",".join(raws.values()))
            parts.append(b"}")
        parts.append(b"}")
        return b"".join(parts)


def _parse(obj: Any, path: Path) -> ConfigData:
    """The configuration's JSON (file + journal) -> validated, frozen data; every
    problem is a ConfigurationError."""
    if not isinstance(obj, dict):
        raise errors.ConfigurationError(
            f"Configuration file {path} must hold a JSON object, not {type(obj).__name__}")
    if "version" not in obj:
        raise errors.ConfigurationError(f"Configuration file {path} has no 'version' key")
    version = obj["version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise errors.ConfigurationError(
            f"Configuration file {path}: 'version' must be an integer, got {version!r}")
    if version != constants.CONFIG_VERSION:
        raise errors.ConfigVersionMismatch(
            f"Configuration file {path} has version {version}, but this program"
            f" understands version {constants.CONFIG_VERSION}")
    try:
        data = ConfigData.from_dict(obj)
    except errors.ConfigurationError as err:
        raise errors.ConfigurationError(f"Configuration file {path}: {err}") from None
    problems = data.verify()
    if problems:
        raise errors.ConfigurationError(
            f"Configuration file {path} is inconsistent: {'; '.join(problems)}")
    _freeze_all(data)
    return data


def _stat_key(path: Path) -> _FileKey | None:
    try:
        return _file_key(os.stat(path))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise errors.ConfigurationError(f"Cannot stat {path}: {err}") from None


@dataclass
class _Loaded:
    """What the store reads at start-up: the data and where the files stood."""

    data: ConfigData
    file_serial: int
    file_size: int
    records: list[config_journal.Record]  # those applied on top of the file
    file_key: _FileKey | None
    journal_key: _FileKey | None


def _load(path: Path) -> _Loaded:
    """File + journal (journal first, see config_journal.load)."""
    jpath = config_journal.journal_path(path)
    journal_key = _stat_key(jpath)
    records = config_journal.read_journal(path)
    try:
        with open(path, "rb") as fh:
            file_key = _file_key(os.fstat(fh.fileno()))
            raw = fh.read()
    except FileNotFoundError:
        raise errors.ConfigurationError(f"Configuration file {path} does not exist") from None
    except OSError as err:
        raise errors.ConfigurationError(
            f"Cannot read configuration file {path}: {err}") from None
    obj = config_journal.parse_file(raw, path)
    file_serial = obj.get("serial_no")
    if records:
        config_journal.replay(obj, records, path)
    applied = [r for r in records
               if isinstance(file_serial, int) and r.serial > file_serial]
    return _Loaded(_parse(obj, path), file_serial if isinstance(file_serial, int) else 0,
                   len(raw), applied, file_key, journal_key)


def _write_file(path: Path, raw: bytes, *, exclusive: bool) -> _FileKey:
    """Write ``raw`` to ``path`` atomically; ``exclusive`` refuses to overwrite a file."""
    return _file_key(atomic_write(path, raw, CONFIG_FILE_MODE, exclusive=exclusive))


def _append_journal(journal: config_journal.JournalWriter,
                    records: list[config_journal.Record]) -> None:
    """One group's records, then fdatasync (a seam for the tests)."""
    journal.append(records, fsync=True)


def _freeze_all(data: ConfigData) -> None:
    data.cluster.freeze()
    for table in (data.nodes, data.nodegroups, data.instances, data.networks,
                  data.backup_schedules):
        for obj in table.values():
            obj.freeze()


def _name_keys(name: str) -> list[str]:
    """Index keys of a name for short-name expansion: its lowered part up to the first dot.

    Every name expand_*_name may match case-insensitively ("inst1", "INST1.example")
    has the same first part, so one key per name finds all candidates.
    """
    return [name.lower().split(".", 1)[0]]


def _key_add(table: dict[str, frozenset[str]], key: str, uuid: str) -> None:
    table[key] = table.get(key, frozenset()) | {uuid}


def _key_remove(table: dict[str, frozenset[str]], key: str, uuid: str) -> None:
    rest = table.get(key, frozenset()) - {uuid}
    if rest:
        table[key] = rest
    else:
        table.pop(key, None)


# node -> the uuids of its instances, split by hash into buckets: a change copies one
# bucket (about 1/64 of the node's instances), not a frozenset of all of them
_BUCKETS = 64
_NodeUsers = tuple[frozenset[str], ...]


def _bucket(uuid: str) -> int:
    return hash(uuid) % _BUCKETS


def _users_add(table: dict[str, _NodeUsers], node: str, uuid: str) -> None:
    buckets = table.get(node) or (frozenset(),) * _BUCKETS
    idx = _bucket(uuid)
    table[node] = (*buckets[:idx], buckets[idx] | {uuid}, *buckets[idx + 1:])


def _users_remove(table: dict[str, _NodeUsers], node: str, uuid: str) -> None:
    buckets = table.get(node)
    if buckets is None:
        return
    idx = _bucket(uuid)
    rest = (*buckets[:idx], buckets[idx] - {uuid}, *buckets[idx + 1:])
    if any(rest):
        table[node] = rest
    else:
        del table[node]


def _users(table: Mapping[str, _NodeUsers], node: str) -> frozenset[str]:
    buckets = table.get(node)
    return frozenset().union(*buckets) if buckets else frozenset()


_INDEX_DICTS = ("instance_by_name", "node_by_name", "instance_keys", "node_keys", "macs",
                "node_instances")


@dataclass
class _Index:
    """Lookups kept in step with the data by every change (never rebuilt per read).

    Values are immutable (frozensets), so :meth:`copy` is shallow, and lazy: the
    copy shares the dicts until a change needs one (:meth:`_own`), so a change
    that touches no index (an instance's state, parameters) copies none.  A
    snapshot keeps the old dicts while the store goes on with its copies.
    """

    instance_by_name: dict[str, str] = field(default_factory=dict)
    node_by_name: dict[str, str] = field(default_factory=dict)
    # lowered part up to the first dot -> uuids (candidates of short-name expansion)
    instance_keys: dict[str, frozenset[str]] = field(default_factory=dict)
    node_keys: dict[str, frozenset[str]] = field(default_factory=dict)
    # MAC -> number of NICs using it (the data does not forbid duplicates)
    macs: dict[str, int] = field(default_factory=dict)
    # node uuid -> uuids of the instances using it as primary or secondary (_users)
    node_instances: dict[str, _NodeUsers] = field(default_factory=dict)
    # the dicts this index may change in place (the others it shares with an older one)
    _owned: set[str] = field(default_factory=lambda: set(_INDEX_DICTS), compare=False,
                             repr=False)

    def _own(self, name: str) -> dict[str, Any]:
        table: dict[str, Any] = getattr(self, name)
        if name not in self._owned:
            table = dict(table)
            setattr(self, name, table)
            self._owned.add(name)
        return table

    @classmethod
    def build(cls, data: ConfigData) -> _Index:
        """From scratch, in one pass (adding one by one would copy growing frozensets)."""
        index = cls()
        keys: dict[str, set[str]] = {}
        node_keys: dict[str, set[str]] = {}
        users: dict[str, set[str]] = {}
        for node in data.nodes.values():
            index.node_by_name[node.name] = node.uuid
            for key in _name_keys(node.name):
                node_keys.setdefault(key, set()).add(node.uuid)
        for inst in data.instances.values():
            index.instance_by_name[inst.name] = inst.uuid
            for key in _name_keys(inst.name):
                keys.setdefault(key, set()).add(inst.uuid)
            for nic in inst.nics:
                if nic.mac:
                    index.macs[nic.mac] = index.macs.get(nic.mac, 0) + 1
            for node_uuid in inst.all_nodes:
                users.setdefault(node_uuid, set()).add(inst.uuid)
        index.instance_keys = {k: frozenset(v) for k, v in keys.items()}
        index.node_keys = {k: frozenset(v) for k, v in node_keys.items()}
        for node_uuid, uuids in users.items():
            buckets: list[set[str]] = [set() for _ in range(_BUCKETS)]
            for uuid in uuids:
                buckets[_bucket(uuid)].add(uuid)
            index.node_instances[node_uuid] = tuple(frozenset(b) for b in buckets)
        return index

    def copy(self) -> _Index:
        return _Index(self.instance_by_name, self.node_by_name, self.instance_keys,
                      self.node_keys, self.macs, self.node_instances, set())

    def add_node(self, node: Node) -> None:
        self._own("node_by_name")[node.name] = node.uuid
        node_keys = self._own("node_keys")
        for key in _name_keys(node.name):
            _key_add(node_keys, key, node.uuid)

    def remove_node(self, node: Node) -> None:
        by_name = self._own("node_by_name")
        if by_name.get(node.name) == node.uuid:
            del by_name[node.name]
        node_keys = self._own("node_keys")
        for key in _name_keys(node.name):
            _key_remove(node_keys, key, node.uuid)

    def add_instance(self, inst: Instance) -> None:
        self._own("instance_by_name")[inst.name] = inst.uuid
        keys = self._own("instance_keys")
        for key in _name_keys(inst.name):
            _key_add(keys, key, inst.uuid)
        macs = [nic.mac for nic in inst.nics if nic.mac]
        if macs:
            counts = self._own("macs")
            for mac in macs:
                counts[mac] = counts.get(mac, 0) + 1
        users = self._own("node_instances")
        for node_uuid in inst.all_nodes:
            _users_add(users, node_uuid, inst.uuid)

    def remove_instance(self, inst: Instance) -> None:
        by_name = self._own("instance_by_name")
        if by_name.get(inst.name) == inst.uuid:
            del by_name[inst.name]
        keys = self._own("instance_keys")
        for key in _name_keys(inst.name):
            _key_remove(keys, key, inst.uuid)
        macs = [nic.mac for nic in inst.nics if nic.mac]
        if macs:
            counts = self._own("macs")
            for mac in macs:
                left = counts.get(mac, 0) - 1
                if left > 0:
                    counts[mac] = left
                else:
                    counts.pop(mac, None)
        users = self._own("node_instances")
        for node_uuid in inst.all_nodes:
            _users_remove(users, node_uuid, inst.uuid)


def _indexed(inst: Instance) -> tuple[str, list[str], list[str]]:
    """What of an instance the index holds: an update changing none of it skips it."""
    return inst.name, [nic.mac for nic in inst.nics], list(inst.all_nodes)


_Stored = Cluster | Node | Instance | NodeGroup | BackupSchedule | Network
# one edit of a commit: (op, section, key, new object or None, object before or None)
_Edit = tuple[str, str, "str | None", "_Stored | None", "_Stored | None"]


class _Change:
    """What one write method changes: the live data and index, and the journal ops.

    Write methods change tables only through :meth:`put` / :meth:`drop` /
    :meth:`set_cluster`, so every change is both applied and recorded (the
    journal record of the commit, and what undoing it needs).
    """

    __slots__ = ("data", "edits", "index", "now")

    def __init__(self, data: ConfigData, index: _Index, now: float) -> None:
        self.data, self.index, self.now = data, index, now
        self.edits: list[_Edit] = []

    def put(self, section: str, obj: _Stored) -> None:
        table: dict[str, Any] = getattr(self.data, section)
        self.edits.append((config_journal.SET, section, obj.uuid, obj, table.get(obj.uuid)))
        table[obj.uuid] = obj

    def drop(self, section: str, key: str) -> None:
        table: dict[str, Any] = getattr(self.data, section)
        self.edits.append((config_journal.DEL, section, key, None, table.pop(key)))

    def set_cluster(self, cluster: Cluster) -> None:
        self.edits.append((config_journal.SET, config_journal.CLUSTER, None, cluster,
                           self.data.cluster))
        # not through validate_assignment: it re-runs ConfigData's key check (O(size))
        self.data.__dict__["cluster"] = cluster


@dataclass
class _Pending:
    """A commit applied in memory, not yet durable."""

    serial: int
    now: float
    mtime_before: float
    edits: list[_Edit]

    def record(self) -> config_journal.Record:
        ops: list[config_journal.Op] = []
        for kind, section, key, obj, _before in self.edits:
            if kind == config_journal.SET:
                assert obj is not None
                ops.append([kind, section, key, json.loads(obj.to_json())])
            else:
                ops.append([kind, section, key])
        return config_journal.Record.make(self.serial, ops, self.now)


def _expand(name: str, by_name: Mapping[str, str], objs: Mapping[str, Any],
            keys: Mapping[str, frozenset[str]]) -> str | None:
    """Exact name, then uuid, then a unique case-insensitive match up to a dot."""
    uuid = by_name.get(name)
    if uuid is not None:
        return uuid
    if name in objs:
        return name
    lowered = name.lower()
    prefix = lowered + "."
    matches = [u for u in keys.get(_name_keys(lowered)[0], frozenset())
               if (full := objs[u].name.lower()) == lowered or full.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


class ConfigSnapshot:
    """An immutable, consistent view of the configuration at one serial.

    Cheap to take: it shares the store's objects and tables; the store changes
    shallow copies of the tables and replaces objects instead of editing them.
    The objects it returns are the store's own and must not be changed:
    attribute assignment raises ProgrammerError (they are frozen), mappings are
    read-only proxies; lists and dicts inside objects are not guarded at run
    time, which the unit tests check (test_config_store.py: older snapshots
    never change, query rows never alias stored lists or dicts, the file equals
    a fresh serialisation).  Callers that edit use the store's ``get_*_info``
    copies and ``update``.
    """

    __slots__ = (
        "_cluster",
        "_index",
        "_instance_list",
        "_instances",
        "_networks",
        "_nodegroups",
        "_nodes",
        "_schedules",
        "_serial",
    )

    def __init__(self, data: ConfigData, index: _Index) -> None:
        self._serial = data.serial_no
        self._cluster = data.cluster
        self._nodes: Mapping[str, Node] = MappingProxyType(data.nodes)
        self._nodegroups: Mapping[str, NodeGroup] = MappingProxyType(data.nodegroups)
        self._instances: Mapping[str, Instance] = MappingProxyType(data.instances)
        self._networks: Mapping[str, Network] = MappingProxyType(data.networks)
        self._schedules: Mapping[str, BackupSchedule] = MappingProxyType(
            data.backup_schedules)
        self._index = index
        self._instance_list: list[str] | None = None

    @property
    def serial(self) -> int:
        return self._serial

    def get_serial(self) -> int:
        return self._serial

    # --- cluster ----------------------------------------------------------------------

    def get_cluster_info(self) -> Cluster:
        return self._cluster

    def get_cluster_name(self) -> str:
        return self._cluster.cluster_name

    def get_master_node(self) -> str:
        return self._cluster.master_node

    def get_master_node_name(self) -> str:
        return self._nodes[self._cluster.master_node].name

    # --- nodes ------------------------------------------------------------------------

    def get_node_info(self, uuid: str) -> Node | None:
        return self._nodes.get(uuid)

    def get_node_info_by_name(self, name: str) -> Node | None:
        uuid = self._index.node_by_name.get(name)
        return self._nodes[uuid] if uuid is not None else None

    def get_all_nodes_info(self) -> Mapping[str, Node]:
        return self._nodes

    def get_node_list(self) -> list[str]:
        """Node uuids, ordered by node name."""
        return _uuids_by_name(self._nodes.values())

    def get_node_names(self, uuids: Iterable[str]) -> list[str]:
        names = []
        for uuid in uuids:
            node = self._nodes.get(uuid)
            if node is None:
                raise errors.ConfigurationError(f"Unknown node uuid {uuid}")
            names.append(node.name)
        return names

    def expand_node_name(self, name: str) -> str | None:
        """Node uuid for a full name, a unique short name ("node1") or a uuid."""
        return _expand(name, self._index.node_by_name, self._nodes, self._index.node_keys)

    def get_online_nodes(self) -> list[str]:
        """Uuids of nodes not marked offline, ordered by name."""
        return _uuids_by_name(n for n in self._nodes.values() if not n.offline)

    def get_master_candidates(self) -> list[str]:
        return _uuids_by_name(n for n in self._nodes.values() if n.master_candidate)

    def get_node_instances(self, node_uuid: str) -> list[str]:
        """Uuids of instances using the node as primary or secondary, ordered by name."""
        uuids = _users(self._index.node_instances, node_uuid)
        return _uuids_by_name(self._instances[u] for u in uuids)

    # --- node groups and networks -----------------------------------------------------

    def get_nodegroup_info(self, uuid: str) -> NodeGroup | None:
        return self._nodegroups.get(uuid)

    def get_all_nodegroups_info(self) -> Mapping[str, NodeGroup]:
        return self._nodegroups

    def get_networks(self) -> Mapping[str, Network]:
        return self._networks

    # --- instances --------------------------------------------------------------------

    def get_instance_info(self, uuid: str) -> Instance | None:
        return self._instances.get(uuid)

    def get_instance_info_by_name(self, name: str) -> Instance | None:
        uuid = self._index.instance_by_name.get(name)
        return self._instances[uuid] if uuid is not None else None

    def get_all_instances_info(self) -> Mapping[str, Instance]:
        return self._instances

    def get_instance_list(self) -> list[str]:
        """Instance uuids, ordered by instance name (a fresh list each call)."""
        if self._instance_list is None:
            self._instance_list = _uuids_by_name(self._instances.values())
        return list(self._instance_list)

    def expand_instance_name(self, name: str) -> str | None:
        """Instance uuid for a full name, a unique short name or a uuid."""
        return _expand(name, self._index.instance_by_name, self._instances,
                       self._index.instance_keys)

    def used_macs(self) -> Set[str]:
        """Every MAC address some instance's NIC has (a read-only set view)."""
        return self._index.macs.keys()

    # --- backup schedules -------------------------------------------------------------

    def get_backup_schedules(self) -> dict[str, BackupSchedule]:
        """Schedules by name (the shared objects)."""
        return {s.name: s for s in self._schedules.values()}


class ConfigStore:
    """Thread-safe access to the configuration (file + journal); see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        # reentrant so that a listener which itself writes cannot deadlock
        self._notify_lock = threading.RLock()
        self._listeners: list[tuple[Callable[[Any, int], None], str]] = []
        loaded = _load(self._path)
        self._data = loaded.data
        self._file_key, self._journal_key = loaded.file_key, loaded.journal_key
        self._index = _Index.build(self._data)
        # the last snapshot handed out; while set, the live tables are shared with it
        self._snapshot: ConfigSnapshot | None = None
        # group commit (see _wait_durable); lock order: _lock, then _io
        self._io = threading.Condition(threading.Lock())
        self._writing = False
        self._durable_serial = self._data.serial_no
        self._epoch = 0  # bumped when a failed write rolls the in-memory data back
        self._epoch_end: dict[int, int] = {}  # epoch -> last serial made durable in it
        self._write_error = ""
        self._pending: list[_Pending] = []  # under _lock
        self._journal = config_journal.JournalWriter(self._path)
        self._journal_size = sum(len(r.line) for r in loaded.records)
        # durable records not yet announced to the listeners, in order (under _io)
        self._unnotified: list[config_journal.Record] = []
        # records_since: the journal lines of serials (_window_base, durable], in order;
        # at least everything the file on disk lacks (under _io)
        self._window_base = loaded.file_serial
        self._window: list[bytes] = [r.line for r in loaded.records]
        # compaction (see compact): one at a time, in the background when due
        self._compact_lock = threading.Lock()
        self._fragments = _Fragments()  # used under _compact_lock only
        self._file_serial = loaded.file_serial
        self._compact_at = _compact_threshold(loaded.file_size)
        self._file_size = loaded.file_size
        self._compactor: threading.Thread | None = None  # under _io, as the two below
        self._compact_wanted = False
        self._closing = False

    @classmethod
    def initialize(cls, path: str | os.PathLike[str], data: ConfigData) -> ConfigStore:
        """Create a new configuration file (never overwrites one) and open it."""
        target = Path(path)
        problems = data.verify()
        if problems:
            raise errors.ConfigurationError(
                f"Refusing to write an inconsistent configuration: {'; '.join(problems)}")
        if data.version != constants.CONFIG_VERSION:
            raise errors.ConfigVersionMismatch(
                f"Cannot write configuration version {data.version}, expected"
                f" {constants.CONFIG_VERSION}")
        raw = _serialize(data.validated_copy())
        if target.exists():
            raise errors.ConfigurationError(f"Configuration file {target} already exists")
        try:
            config_journal.remove(target)  # a journal left by an earlier cluster
            _write_file(target, raw, exclusive=True)
        except FileExistsError:
            raise errors.ConfigurationError(
                f"Configuration file {target} already exists") from None
        except OSError as err:
            raise errors.ConfigurationError(
                f"Cannot write configuration file {target}: {err}") from None
        return cls(target)

    @property
    def path(self) -> Path:
        return self._path

    # --- snapshots --------------------------------------------------------------------

    def snapshot(self) -> ConfigSnapshot:
        """The configuration as it is now, for reading; see :class:`ConfigSnapshot`.

        Taking one costs nothing when nothing changed since the last one (every
        change works on shallow copies of the tables, never on a snapshot's).
        Like the store's own reads it includes changes whose writer is still
        waiting for them to be durable.
        """
        with self._lock:
            if self._snapshot is None:
                self._snapshot = ConfigSnapshot(self._data, self._index)
            return self._snapshot

    def _view(self) -> ConfigSnapshot:
        """A view of the live tables, valid only while ``_lock`` is held."""
        if self._snapshot is not None:
            return self._snapshot
        return ConfigSnapshot(self._data, self._index)

    def _unshare(self) -> None:
        """Before a change: stop sharing the tables with the last snapshot."""
        if self._snapshot is None:
            return
        old = self._data
        self._data = ConfigData.model_construct(
            uuid=old.uuid, serial_no=old.serial_no, ctime=old.ctime, mtime=old.mtime,
            version=old.version, cluster=old.cluster, nodes=dict(old.nodes),
            nodegroups=dict(old.nodegroups), instances=dict(old.instances),
            networks=dict(old.networks), backup_schedules=dict(old.backup_schedules))
        self._index = self._index.copy()
        self._snapshot = None

    # --- whole-config access --------------------------------------------------------

    def get_serial(self) -> int:
        with self._lock:
            return self._data.serial_no

    def to_dict(self) -> dict[str, Any]:
        """The configuration as the JSON dict of ``config.data`` (O(size), a fresh dict)."""
        with self._lock:
            data = self._pinned()
        result: dict[str, Any] = json.loads(_serialize(data))
        return result

    def get_config_data(self) -> ConfigData:
        """A deep copy of everything (O(size)); readers want :meth:`snapshot`."""
        with self._lock:
            return self._data.model_copy(deep=True)

    def _pinned(self) -> ConfigData:
        """The live data as an unchanging object (under ``_lock``): the tables are
        shared with a snapshot, so the next change works on copies."""
        self.snapshot()
        old = self._data
        return ConfigData.model_construct(
            uuid=old.uuid, serial_no=old.serial_no, ctime=old.ctime, mtime=old.mtime,
            version=old.version, cluster=old.cluster, nodes=old.nodes,
            nodegroups=old.nodegroups, instances=old.instances, networks=old.networks,
            backup_schedules=old.backup_schedules)

    def reload_if_changed(self) -> bool:
        """Re-read file + journal if another process changed either; True when the data
        changed.

        For read-only consumers (the journal grows with every commit of the
        master, the file is replaced by compactions); a corrupt file raises and
        the old data is kept.
        """
        jpath = config_journal.journal_path(self._path)
        keys = (_stat_key(self._path), _stat_key(jpath))
        if keys[0] is None:
            raise errors.ConfigurationError(
                f"Cannot stat configuration file {self._path}: it does not exist")
        with self._lock:
            if keys == (self._file_key, self._journal_key):
                return False
        loaded = _load(self._path)
        with self._lock:
            self._file_key, self._journal_key = loaded.file_key, loaded.journal_key
            if loaded.data.serial_no == self._data.serial_no:
                return False
            self._data = loaded.data
            self._index = _Index.build(loaded.data)
            self._snapshot = None
            with self._io:
                self._durable_serial = loaded.data.serial_no
            return True

    def add_write_listener(self, callback: Callable[[Any, int], None], *,
                           with_data: bool = True, with_records: bool = False) -> None:
        """Call ``callback(..., serial_no)`` after every successful write.

        Callbacks run outside the store lock, in order, with strictly increasing
        serials (several changes sharing one journal append are one call) and
        must not raise: exceptions are logged and otherwise ignored.
        ``with_records`` listeners get the list of journal records made durable
        since their last call (consecutive serials, ending with ``serial_no``:
        what a master candidate appends to its journal).  Otherwise
        ``with_data`` listeners get their own dict of the whole configuration
        (O(size): about 0.1 s of CPU at 10,000 instances); ``with_data=False``
        ones, which only need to know that a write happened, an empty dict.
        """
        kind = "records" if with_records else "data" if with_data else "bare"
        with self._notify_lock:
            self._listeners.append((callback, kind))

    def records_since(self, serial: int) -> list[config_journal.Record] | None:
        """The durable journal records after ``serial``, oldest first; None when the
        store no longer keeps them (older than the compaction before the last).

        Every serial from the one ``config.data`` holds on disk on is covered,
        so "the file, then records_since(its serial)" always works.
        """
        with self._io:
            if serial < self._window_base:
                return None
            lines = self._window[serial - self._window_base:]
        return config_journal.decode_records(b"".join(lines), self._path)

    # --- cluster --------------------------------------------------------------------

    def get_cluster_info(self) -> Cluster:
        with self._lock:
            return self._data.cluster.model_copy(deep=True)

    def get_cluster_name(self) -> str:
        with self._lock:
            return self._data.cluster.cluster_name

    def get_master_node(self) -> str:
        with self._lock:
            return self._data.cluster.master_node

    def get_master_node_name(self) -> str:
        with self._lock:
            return self._view().get_master_node_name()

    # --- nodes ----------------------------------------------------------------------

    def get_node_info(self, uuid: str) -> Node | None:
        with self._lock:
            return _copy(self._data.nodes.get(uuid))

    def get_node_info_by_name(self, name: str) -> Node | None:
        with self._lock:
            return _copy(self._view().get_node_info_by_name(name))

    def get_all_nodes_info(self) -> dict[str, Node]:
        with self._lock:
            return {u: n.model_copy(deep=True) for u, n in self._data.nodes.items()}

    def get_node_list(self) -> list[str]:
        """Node uuids, ordered by node name."""
        with self._lock:
            return self._view().get_node_list()

    def get_node_names(self, uuids: Iterable[str]) -> list[str]:
        with self._lock:
            return self._view().get_node_names(uuids)

    def expand_node_name(self, name: str) -> str | None:
        """Node uuid for a full name, a unique short name ("node1") or a uuid."""
        with self._lock:
            return self._view().expand_node_name(name)

    def get_online_nodes(self) -> list[str]:
        """Uuids of nodes not marked offline, ordered by name."""
        with self._lock:
            return self._view().get_online_nodes()

    def get_master_candidates(self) -> list[str]:
        with self._lock:
            return self._view().get_master_candidates()

    def get_node_instances(self, node_uuid: str) -> list[str]:
        """Uuids of instances using the node as primary or secondary, ordered by name."""
        with self._lock:
            return self._view().get_node_instances(node_uuid)

    def add_node(self, node: Node) -> None:
        """Add a node; an empty ``group`` means the default node group.

        On success the caller's object gets the stored serial_no/ctime/mtime.
        """
        new = node.validated_copy()

        def mutate(tx: _Change) -> Node:
            data, index = tx.data, tx.index
            if new.uuid in data.nodes:
                raise errors.OpPrereqError(f"Node uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique("Node", new, index.node_by_name)
            if not new.group:
                new.group = _default_group(data)
            elif new.group not in data.nodegroups:
                raise errors.OpPrereqError(f"Node group {new.group} does not exist",
                                           errors.ECODE_NOENT)
            _stamp_new(new, tx.now)
            tx.put("nodes", new.freeze())
            index.add_node(new)
            return new

        stored = self._commit(mutate)
        _copy_stamps(stored, node)
        node.group = stored.group

    def remove_node(self, uuid: str) -> None:
        def mutate(tx: _Change) -> None:
            data, index = tx.data, tx.index
            node = data.nodes.get(uuid)
            if node is None:
                raise errors.ConfigurationError(f"Unknown node uuid {uuid}")
            if uuid == data.cluster.master_node:
                raise errors.OpPrereqError(f"Node {node.name} is the master node",
                                           errors.ECODE_STATE)
            users = sorted(data.instances[i].name
                           for i in _users(index.node_instances, uuid))
            if users:
                raise errors.OpPrereqError(
                    f"Node {node.name} still hosts instance(s): {', '.join(users)}",
                    errors.ECODE_STATE)
            tx.drop("nodes", uuid)
            index.remove_node(node)

        self._commit(mutate)

    # --- node groups ----------------------------------------------------------------

    def get_nodegroup_info(self, uuid: str) -> NodeGroup | None:
        with self._lock:
            return _copy(self._data.nodegroups.get(uuid))

    def get_all_nodegroups_info(self) -> dict[str, NodeGroup]:
        with self._lock:
            return {u: g.model_copy(deep=True) for u, g in self._data.nodegroups.items()}

    def add_nodegroup(self, group: NodeGroup) -> None:
        new = group.validated_copy()

        def mutate(tx: _Change) -> NodeGroup:
            data = tx.data
            if new.uuid in data.nodegroups:
                raise errors.OpPrereqError(f"Node group uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique_name("Node group", new, data.nodegroups.values())
            _stamp_new(new, tx.now)
            tx.put("nodegroups", new.freeze())
            return new

        _copy_stamps(self._commit(mutate), group)

    # --- instances ------------------------------------------------------------------

    def get_instance_info(self, uuid: str) -> Instance | None:
        with self._lock:
            return _copy(self._data.instances.get(uuid))

    def get_instance_info_by_name(self, name: str) -> Instance | None:
        with self._lock:
            return _copy(self._view().get_instance_info_by_name(name))

    def get_all_instances_info(self) -> dict[str, Instance]:
        """Deep copies of every instance (O(instances)); readers want :meth:`snapshot`."""
        with self._lock:
            return {u: i.model_copy(deep=True) for u, i in self._data.instances.items()}

    def get_instance_list(self) -> list[str]:
        """Instance uuids, ordered by instance name."""
        return self.snapshot().get_instance_list()

    def expand_instance_name(self, name: str) -> str | None:
        """Instance uuid for a full name, a unique short name or a uuid."""
        with self._lock:
            return self._view().expand_instance_name(name)

    def used_macs(self) -> Set[str]:
        """MAC addresses in use: a live read-only view, for ``in`` tests only.

        Unlike ``snapshot().used_macs()`` it does not pin a snapshot (whose tables
        the next write would copy); iterating over it while others write may fail.
        """
        with self._lock:
            return self._index.macs.keys()

    def add_instance(self, instance: Instance) -> None:
        """Add an instance; its nodes must exist. The caller's object gets the stamps."""
        new = instance.validated_copy()

        def mutate(tx: _Change) -> Instance:
            data, index = tx.data, tx.index
            if new.uuid in data.instances:
                raise errors.OpPrereqError(f"Instance uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique("Instance", new, index.instance_by_name)
            _check_instance_nodes(new, data)
            _stamp_new(new, tx.now)
            tx.put("instances", new.freeze())
            index.add_instance(new)
            return new

        _copy_stamps(self._commit(mutate), instance)

    def remove_instance(self, uuid: str) -> None:
        def mutate(tx: _Change) -> None:
            inst = tx.data.instances.get(uuid)
            if inst is None:
                raise errors.ConfigurationError(f"Unknown instance uuid {uuid}")
            tx.drop("instances", uuid)
            tx.index.remove_instance(inst)

        self._commit(mutate)

    def set_instance_admin_state(self, uuid: str, state: str,
                                 source: str = constants.ADMIN_SOURCE) -> None:
        if state not in constants.ADMINST_ALL:
            raise errors.ProgrammerError(f"Invalid admin state {state!r}")
        if source not in (constants.ADMIN_SOURCE, constants.USER_SOURCE):
            raise errors.ProgrammerError(f"Invalid admin state source {source!r}")

        def mutate(tx: _Change) -> None:
            current = tx.data.instances.get(uuid)
            if current is None:
                raise errors.ConfigurationError(f"Unknown instance uuid {uuid}")
            inst = current.model_copy(deep=True)
            inst.admin_state = state  # type: ignore[assignment]
            inst.admin_state_source = source  # type: ignore[assignment]
            inst.serial_no += 1
            inst.mtime = tx.now
            tx.put("instances", inst.freeze())  # same name, MACs, nodes: index unchanged

        self._commit(mutate)

    # --- backup schedules -----------------------------------------------------------

    def get_backup_schedules(self) -> dict[str, BackupSchedule]:
        """Schedules by name (copies)."""
        with self._lock:
            return {s.name: s.model_copy(deep=True)
                    for s in self._data.backup_schedules.values()}

    def put_backup_schedule(self, schedule: BackupSchedule, *, create: bool) -> None:
        """Add (``create``) or replace the schedule of that name."""
        new = schedule.validated_copy()

        def mutate(tx: _Change) -> None:
            data, now = tx.data, tx.now
            current = next((s for s in data.backup_schedules.values()
                            if s.name == new.name), None)
            if create and current is not None:
                raise errors.OpPrereqError(f"Backup schedule '{new.name}' already exists",
                                           errors.ECODE_EXISTS)
            if not create and current is None:
                raise errors.OpPrereqError(f"Backup schedule '{new.name}' does not exist",
                                           errors.ECODE_NOENT)
            if current is not None:
                tx.drop("backup_schedules", current.uuid)
                new.uuid, new.ctime = current.uuid, current.ctime
                new.serial_no = current.serial_no + 1
            else:
                new.ctime = now
            new.mtime = now
            tx.put("backup_schedules", new.freeze())

        self._commit(mutate)

    def remove_backup_schedule(self, name: str) -> None:
        def mutate(tx: _Change) -> None:
            for uuid, sched in tx.data.backup_schedules.items():
                if sched.name == name:
                    tx.drop("backup_schedules", uuid)
                    return
            raise errors.OpPrereqError(f"Backup schedule '{name}' does not exist",
                                       errors.ECODE_NOENT)

        self._commit(mutate)

    # --- generic update -------------------------------------------------------------

    def update(self, obj: Cluster | Node | Instance | NodeGroup) -> None:
        """Store an edited copy; refused if the object is unknown or the copy is stale.

        On success ``obj.serial_no`` and ``obj.mtime`` are bumped like the stored
        object, so the caller may edit and update the same copy again.
        """
        if not isinstance(obj, (Cluster, Node, Instance, NodeGroup)):
            raise errors.ProgrammerError(f"Cannot update objects of type {type(obj).__name__}")
        new = obj.validated_copy()

        def mutate(tx: _Change) -> Cluster | Node | Instance | NodeGroup:
            data, index, now = tx.data, tx.index, tx.now
            current = _find_current(data, new)
            if current is None:
                raise errors.ConfigurationError(
                    f"{type(new).__name__} {new.uuid} is not in the configuration")
            if current.serial_no != new.serial_no:
                raise errors.ConfigurationError(
                    f"{type(new).__name__} {new.uuid} was modified concurrently (stale copy:"
                    f" serial {new.serial_no}, configuration has {current.serial_no})")
            if isinstance(new, Node):
                _check_unique("Node", new, index.node_by_name)
                if new.group not in data.nodegroups:
                    raise errors.OpPrereqError(f"Node group {new.group} does not exist",
                                               errors.ECODE_NOENT)
            elif isinstance(new, Instance):
                _check_unique("Instance", new, index.instance_by_name)
                _check_instance_nodes(new, data)
            elif isinstance(new, NodeGroup):
                _check_unique_name("Node group", new, data.nodegroups.values())
            elif new.master_node not in data.nodes:
                raise errors.OpPrereqError(f"Master node {new.master_node} is unknown",
                                           errors.ECODE_NOENT)
            new.ctime = current.ctime
            new.serial_no = current.serial_no + 1
            new.mtime = now
            new.freeze()
            if isinstance(new, Node):
                assert isinstance(current, Node)
                index.remove_node(current)
                tx.put("nodes", new)
                index.add_node(new)
            elif isinstance(new, Instance):
                assert isinstance(current, Instance)
                reindex = _indexed(current) != _indexed(new)
                if reindex:
                    index.remove_instance(current)
                tx.put("instances", new)
                if reindex:
                    index.add_instance(new)
            elif isinstance(new, NodeGroup):
                tx.put("nodegroups", new)
            else:
                tx.set_cluster(new)
            return new

        stored = self._commit(mutate)
        obj.serial_no = stored.serial_no
        obj.mtime = stored.mtime

    # --- writing --------------------------------------------------------------------

    def _commit(self, mutate: Callable[[_Change], _T]) -> _T:
        """Apply ``mutate`` to the live data, then return once that change is durable.

        The change is made on the live tables, or on shallow copies of them when a
        snapshot shares them (a few milliseconds at 10,000 instances, index
        included); a mutator that raises has its edits undone, so the state
        before it stays exactly as it was, including other threads' changes
        still waiting for their write.
        """
        with self._lock:
            self._unshare()
            mtime_before = self._data.mtime
            change = _Change(self._data, self._index, time.time())
            try:
                result = mutate(change)
            except BaseException as err:
                # a refusal (checked before any change) leaves nothing to undo; a bug
                # half-way gets its edits undone and the index rebuilt (O(size), rare)
                if change.edits or not isinstance(err, errors.GenericError):
                    self._undo_edits(change.edits)
                    self._index = _Index.build(self._data)
                raise
            # not through validate_assignment: it would re-run ConfigData's key check
            # over every table (O(size)) for two numbers we set ourselves
            self._data.__dict__["serial_no"] = self._data.serial_no + 1
            self._data.__dict__["mtime"] = change.now
            serial, epoch = self._data.serial_no, self._epoch
            self._pending.append(_Pending(serial, change.now, mtime_before, change.edits))
        self._wait_durable(serial, epoch)
        return result

    def _undo(self, pending: list[_Pending]) -> None:
        """Back to the last durable state (under ``_lock``): undo ``pending``, newest first."""
        self._unshare()
        for entry in reversed(pending):
            self._undo_edits(entry.edits)
            self._data.__dict__["serial_no"] = entry.serial - 1
            self._data.__dict__["mtime"] = entry.mtime_before
        self._index = _Index.build(self._data)
        self._snapshot = None

    def _undo_edits(self, edits: list[_Edit]) -> None:
        """Put back what ``edits`` replaced or deleted, newest first (live tables only)."""
        data = self._data
        for _kind, section, key, _obj, before in reversed(edits):
            if key is None:
                assert isinstance(before, Cluster)
                data.__dict__["cluster"] = before
                continue
            table: dict[str, Any] = getattr(data, section)
            if before is None:
                del table[key]
            else:
                table[key] = before

    def _wait_durable(self, serial: int, epoch: int) -> None:
        """Group commit: wait for a journal append containing ``serial``, or be the one
        appending.

        Whoever finds no append in flight writes the records of every change made
        so far (its own and those of the threads waiting behind it) outside the
        store lock; the others wait on ``_io``.  A failed append undoes every
        change it dropped in memory and fails them all.
        """
        with self._io:
            while True:
                if epoch != self._epoch:
                    if serial <= self._epoch_end[epoch]:
                        return
                    raise errors.ConfigurationError(
                        f"Cannot write configuration journal {self._journal.path}:"
                        f" {self._write_error}")
                if self._durable_serial >= serial:
                    return
                if not self._writing:
                    self._writing = True
                    break
                self._io.wait()
        self._write_group()

    def _write_group(self) -> None:
        try:
            with self._lock:
                pending, self._pending = self._pending, []
                serial = self._data.serial_no
                data = self._pinned() if self._wants("data") and pending else None
            # frozen objects: encoding needs no lock
            records = [entry.record() for entry in pending]
            _append_journal(self._journal, records)
        except BaseException as err:
            with self._lock:
                self._undo(pending + self._pending)
                self._pending = []
                with self._io:
                    self._epoch_end[self._epoch] = self._durable_serial
                    self._epoch += 1
                    self._write_error = str(err)
                    self._writing = False
                    self._io.notify_all()
            if isinstance(err, OSError):
                raise errors.ConfigurationError(
                    f"Cannot write configuration journal {self._journal.path}: {err}"
                ) from err
            raise
        size = sum(len(r.line) for r in records)
        with self._io:
            self._durable_serial = serial
            self._journal_size += size
            self._window.extend(r.line for r in records)
            self._unnotified.extend(records)
            due = self._journal_size >= self._compact_at and not self._closing
            self._writing = False
            self._io.notify_all()
        if due:
            self._start_compactor()
        self._notify(data)

    def _wants(self, kind: str) -> bool:
        return any(k == kind for _cb, k in self._listeners)

    def _notify(self, data: ConfigData | None = None) -> None:
        """Announce the records made durable so far, in order (outside the store lock)."""
        with self._notify_lock:
            with self._io:
                records, self._unnotified = self._unnotified, []
            if not records:
                return
            serial = records[-1].serial
            as_dict: dict[str, Any] | None = None
            for callback, kind in list(self._listeners):
                try:
                    if kind == "records":
                        callback(list(records), serial)
                    elif kind == "data":
                        if as_dict is None:
                            # the data of a later group when two groups' calls merged
                            source = data if data is not None and data.serial_no == serial \
                                else None
                            if source is None:
                                with self._lock:
                                    source = self._pinned()
                            as_dict = json.loads(_serialize(source))
                        callback(copy.deepcopy(as_dict), serial)
                    else:
                        callback({}, serial)
                except Exception:
                    logger.exception("Configuration write listener %r failed", callback)

    # --- compaction -----------------------------------------------------------------

    def compact(self) -> int:
        """Fold the journal into ``config.data`` now; the serial the file then holds.

        Writes the file from an unchanging view of the data (commits go on
        meanwhile), then rewrites the journal to the records the file lacks;
        only that rewrite (a small file) holds up commits.  A crash at any point
        loses nothing (see ganeti.config_journal.compact).
        """
        with self._compact_lock:
            with self._lock:
                data, epoch = self._pinned(), self._epoch
            serial = data.serial_no
            if serial <= self._file_serial:
                return self._file_serial
            self._wait_durable(serial, epoch)  # usually durable already
            raw = self._fragments.serialize(data)
            try:
                file_key = _write_file(self._path, raw, exclusive=False)
                with self._io:
                    while self._writing:
                        self._io.wait()
                    self._writing = True
                try:
                    with self._io:
                        keep = self._window[serial - self._window_base:]
                        dropped = self._journal_size - sum(len(line) for line in keep)
                    self._journal.rewrite(keep)
                finally:
                    with self._io:
                        self._writing = False
                        self._io.notify_all()
            except OSError as err:
                raise errors.ConfigurationError(
                    f"Cannot compact the configuration into {self._path}: {err}") from err
            with self._io:
                # keep one compaction's worth of older records for lagging candidates
                self._window = self._window[self._file_serial - self._window_base:]
                self._window_base = self._file_serial
                self._file_serial = serial
                self._journal_size -= dropped
                self._file_size = len(raw)
                self._compact_at = _compact_threshold(len(raw))
            with self._lock:
                self._file_key = file_key
            logger.debug("Configuration compacted at serial %d (%d bytes)", serial,
                         len(raw))
            return serial

    def _start_compactor(self) -> None:
        with self._io:
            self._compact_wanted = True
            if self._compactor is not None or self._closing:
                return
            thread = self._compactor = threading.Thread(
                target=self._compact_loop, name="config-compact", daemon=True)
        thread.start()

    def _compact_loop(self) -> None:
        """Compact while asked to, then end (no idle thread per store)."""
        while True:
            with self._io:
                if not self._compact_wanted or self._closing:
                    self._compactor = None
                    self._io.notify_all()
                    return
                self._compact_wanted = False
            try:
                self.compact()
            except Exception:
                # the journal keeps everything; try again once it has grown as much again
                logger.exception("Compacting the configuration %s failed", self._path)
                with self._io:
                    self._compact_at = self._journal_size + _compact_threshold(
                        self._file_size)

    def close(self) -> None:
        """Stop compacting in the background and fold the journal into the file, so that
        ``config.data`` alone is complete (a clean master shutdown)."""
        with self._io:
            self._closing = True
            while self._compactor is not None:
                self._io.wait()
        try:
            self.compact()
        finally:
            self._journal.close()


def _compact_threshold(file_size: int) -> int:
    """Journal size that triggers a compaction: a share of the file, so the
    compactions' cost per commit does not grow with the cluster."""
    return max(COMPACT_MIN_BYTES, int(file_size * COMPACT_RATIO))


# --- helpers ------------------------------------------------------------------------


def _uuids_by_name(objs: Iterable[Node | Instance]) -> list[str]:
    return [o.uuid for o in sorted(objs, key=lambda o: o.name)]


def _copy(obj: _Obj | None) -> _Obj | None:
    return obj.model_copy(deep=True) if obj is not None else None


def _check_unique(kind: str, obj: Node | Instance, by_name: Mapping[str, str]) -> None:
    other = by_name.get(obj.name)
    if other is not None and other != obj.uuid:
        raise errors.OpPrereqError(f"{kind} name '{obj.name}' is already in use",
                                   errors.ECODE_EXISTS)


def _check_unique_name(kind: str, obj: Node | Instance | NodeGroup,
                       existing: Iterable[Node | Instance | NodeGroup]) -> None:
    for other in existing:
        if other.name == obj.name and other.uuid != obj.uuid:
            raise errors.OpPrereqError(f"{kind} name '{obj.name}' is already in use",
                                       errors.ECODE_EXISTS)


def _check_instance_nodes(inst: Instance, data: ConfigData) -> None:
    for node_uuid in inst.all_nodes:
        if node_uuid not in data.nodes:
            raise errors.OpPrereqError(
                f"Instance {inst.name} refers to unknown node {node_uuid}", errors.ECODE_NOENT)
    if inst.primary_node in inst.secondary_nodes:
        raise errors.OpPrereqError(
            f"Instance {inst.name}: the primary node cannot also be a secondary",
            errors.ECODE_INVAL)


def _default_group(data: ConfigData) -> str:
    for group in data.nodegroups.values():
        if group.name == DEFAULT_NODEGROUP_NAME:
            return group.uuid
    if len(data.nodegroups) == 1:
        return next(iter(data.nodegroups))
    raise errors.OpPrereqError("No default node group; specify one", errors.ECODE_NOENT)


def _find_current(data: ConfigData, obj: Cluster | Node | Instance | NodeGroup
                  ) -> Cluster | Node | Instance | NodeGroup | None:
    if isinstance(obj, Cluster):
        return data.cluster if data.cluster.uuid == obj.uuid else None
    if isinstance(obj, Node):
        return data.nodes.get(obj.uuid)
    if isinstance(obj, Instance):
        return data.instances.get(obj.uuid)
    return data.nodegroups.get(obj.uuid)


def _stamp_new(obj: Node | Instance | NodeGroup, now: float) -> None:
    obj.serial_no = 1
    obj.ctime = now
    obj.mtime = now


def _copy_stamps(src: Node | Instance | NodeGroup, dst: Node | Instance | NodeGroup) -> None:
    dst.serial_no = src.serial_no
    dst.ctime = src.ctime
    dst.mtime = src.mtime


def make_initial_config(cluster_name: str, master_node_name: str, master_ip: str | None,
                        primary_ip: str, port: int | None = None, *,
                        secondary_ip: str | None = None,
                        noded_port: int = constants.DEFAULT_NODED_PORT,
                        enabled_hypervisors: list[str] | None = None,
                        enabled_disk_templates: list[str] | None = None,
                        compression_tools: list[str] | None = None,
                        shared_export_dir: bool = False,
                        file_storage_dir: str | None = None) -> ConfigData:
    """Configuration for ``gnt-cluster init``: cluster, default node group, master node.

    ``port`` is the master node's own noded port (None: the cluster's ``noded_port``).
    """
    hypervisors = list(enabled_hypervisors or [constants.HT_PROCESS])
    templates = list(enabled_disk_templates or [constants.DT_FILE])
    tools = list(compression_tools or constants.IEC_DEFAULT_TOOLS)
    bad_hv = sorted(set(hypervisors) - constants.HYPER_TYPES)
    if bad_hv:
        raise errors.OpPrereqError(f"Unknown hypervisor(s): {', '.join(bad_hv)}",
                                   errors.ECODE_INVAL)
    bad_dt = sorted(set(templates) - constants.DISK_TEMPLATES)
    if bad_dt:
        raise errors.OpPrereqError(f"Unknown disk template(s): {', '.join(bad_dt)}",
                                   errors.ECODE_INVAL)
    if constants.IEC_NONE not in tools:
        raise errors.OpPrereqError(
            f"Compression tools must include '{constants.IEC_NONE}'", errors.ECODE_INVAL)
    now = time.time()
    stamps: dict[str, Any] = {"serial_no": 1, "ctime": now, "mtime": now}
    group = NodeGroup(name=DEFAULT_NODEGROUP_NAME, **stamps)
    master = Node(name=master_node_name, primary_ip=primary_ip,
                  secondary_ip=secondary_ip, port=port, group=group.uuid,
                  master_candidate=True, master_capable=True, vm_capable=True, **stamps)
    cluster = Cluster(cluster_name=cluster_name, master_node=master.uuid, master_ip=master_ip,
                      noded_port=noded_port, enabled_hypervisors=hypervisors,
                      enabled_disk_templates=templates, compression_tools=tools,
                      shared_export_dir=shared_export_dir, file_storage_dir=file_storage_dir,
                      **stamps)
    return ConfigData(cluster=cluster, nodes={master.uuid: master},
                      nodegroups={group.uuid: group}, **stamps)
