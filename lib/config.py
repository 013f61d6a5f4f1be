"""The cluster configuration store: one JSON file, written atomically.

The master owns the only writable ``ConfigStore``; every change goes through a
write method that validates it, bumps serial numbers and replaces the file in
one atomic step, so a crash leaves either the old or the new file, and readers
in other processes never see a partial one.

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
- Group commit: a change is applied in memory, then its caller waits until a
  write containing it is durable.  One waiting caller writes the file for every
  change made so far, so concurrent changes share one write and fsync.
"""

from __future__ import annotations

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

from ganeti import constants, errors
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


def _parse(raw: bytes, path: Path) -> ConfigData:
    """Bytes of a config file -> validated data; every problem is a ConfigurationError."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise errors.ConfigurationError(
            f"Configuration file {path} is not valid JSON: {err}") from None
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


def _load(path: Path) -> tuple[ConfigData, bytes, _FileKey]:
    try:
        with open(path, "rb") as fh:
            key = _file_key(os.fstat(fh.fileno()))
            raw = fh.read()
    except FileNotFoundError:
        raise errors.ConfigurationError(f"Configuration file {path} does not exist") from None
    except OSError as err:
        raise errors.ConfigurationError(
            f"Cannot read configuration file {path}: {err}") from None
    return _parse(raw, path), raw, key


def _write_file(path: Path, raw: bytes, *, exclusive: bool) -> _FileKey:
    """Write ``raw`` to ``path`` atomically; ``exclusive`` refuses to overwrite a file."""
    return _file_key(atomic_write(path, raw, CONFIG_FILE_MODE, exclusive=exclusive))




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


@dataclass
class _Index:
    """Lookups kept in step with the data by every change (never rebuilt per read).

    Values are immutable (frozensets), so :meth:`copy` is shallow: a snapshot
    keeps the old dicts while the store goes on with copies.
    """

    instance_by_name: dict[str, str] = field(default_factory=dict)
    node_by_name: dict[str, str] = field(default_factory=dict)
    # lowered part up to the first dot -> uuids (candidates of short-name expansion)
    instance_keys: dict[str, frozenset[str]] = field(default_factory=dict)
    node_keys: dict[str, frozenset[str]] = field(default_factory=dict)
    # MAC -> number of NICs using it (the data does not forbid duplicates)
    macs: dict[str, int] = field(default_factory=dict)
    # node uuid -> uuids of the instances using it as primary or secondary
    node_instances: dict[str, frozenset[str]] = field(default_factory=dict)

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
        index.node_instances = {k: frozenset(v) for k, v in users.items()}
        return index

    def copy(self) -> _Index:
        return _Index(dict(self.instance_by_name), dict(self.node_by_name),
                      dict(self.instance_keys), dict(self.node_keys), dict(self.macs),
                      dict(self.node_instances))

    def add_node(self, node: Node) -> None:
        self.node_by_name[node.name] = node.uuid
        for key in _name_keys(node.name):
            _key_add(self.node_keys, key, node.uuid)

    def remove_node(self, node: Node) -> None:
        if self.node_by_name.get(node.name) == node.uuid:
            del self.node_by_name[node.name]
        for key in _name_keys(node.name):
            _key_remove(self.node_keys, key, node.uuid)

    def add_instance(self, inst: Instance) -> None:
        self.instance_by_name[inst.name] = inst.uuid
        for key in _name_keys(inst.name):
            _key_add(self.instance_keys, key, inst.uuid)
        for nic in inst.nics:
            if nic.mac:
                self.macs[nic.mac] = self.macs.get(nic.mac, 0) + 1
        for node_uuid in inst.all_nodes:
            _key_add(self.node_instances, node_uuid, inst.uuid)

    def remove_instance(self, inst: Instance) -> None:
        if self.instance_by_name.get(inst.name) == inst.uuid:
            del self.instance_by_name[inst.name]
        for key in _name_keys(inst.name):
            _key_remove(self.instance_keys, key, inst.uuid)
        for nic in inst.nics:
            if nic.mac:
                left = self.macs.get(nic.mac, 0) - 1
                if left > 0:
                    self.macs[nic.mac] = left
                else:
                    self.macs.pop(nic.mac, None)
        for node_uuid in inst.all_nodes:
            _key_remove(self.node_instances, node_uuid, inst.uuid)


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
        uuids = self._index.node_instances.get(node_uuid, frozenset())
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
    """Thread-safe access to the configuration file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        # reentrant so that a listener which itself writes cannot deadlock
        self._notify_lock = threading.RLock()
        self._listeners: list[tuple[WriteListener, bool]] = []
        self._data, self._raw, self._file_key = _load(self._path)
        self._index = _Index.build(self._data)
        # the last snapshot handed out; while set, the live tables are shared with it
        self._snapshot: ConfigSnapshot | None = None
        self._notified_serial = self._data.serial_no
        # group commit (see _wait_durable); lock order: _lock, then _io
        self._io = threading.Condition(threading.Lock())
        self._writing = False
        self._durable_serial = self._data.serial_no
        self._epoch = 0  # bumped when a failed write rolls the in-memory data back
        self._epoch_end: dict[int, int] = {}  # epoch -> last serial made durable in it
        self._write_error = ""
        self._fragments = _Fragments()

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
        try:
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
        """The configuration file's content as last written."""
        with self._lock:
            raw = self._raw
        result: dict[str, Any] = json.loads(raw)
        return result

    def get_config_data(self) -> ConfigData:
        """A deep copy of everything (O(size)); readers want :meth:`snapshot`."""
        with self._lock:
            return self._data.model_copy(deep=True)

    def reload_if_changed(self) -> bool:
        """Re-read the file if another process replaced it; True when the data changed.

        For read-only consumers; a corrupt file raises and the old data is kept.
        """
        try:
            key = _file_key(os.stat(self._path))
        except OSError as err:
            raise errors.ConfigurationError(
                f"Cannot stat configuration file {self._path}: {err}") from None
        with self._lock:
            if key == self._file_key:
                return False
        data, raw, key = _load(self._path)
        with self._lock:
            self._file_key = key
            if data.serial_no == self._data.serial_no:
                return False
            self._data, self._raw = data, raw
            self._index = _Index.build(data)
            self._snapshot = None
            with self._io:
                self._durable_serial = data.serial_no
            return True

    def add_write_listener(self, callback: WriteListener, *, with_data: bool = True) -> None:
        """Call ``callback(config_dict, serial_no)`` after every successful write.

        Callbacks run outside the store lock, see strictly increasing serials (a
        serial may be skipped when a newer write got there first, e.g. several
        changes shared one write) and must not raise: exceptions are logged and
        otherwise ignored.  Each gets its own dict, parsed from the file written
        (about 0.1 s of CPU at 10,000 instances); ``with_data=False`` listeners,
        which only need to know that a write happened, get an empty dict instead.
        """
        with self._notify_lock:
            self._listeners.append((callback, with_data))

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

        def mutate(data: ConfigData, index: _Index, now: float) -> Node:
            if new.uuid in data.nodes:
                raise errors.OpPrereqError(f"Node uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique("Node", new, index.node_by_name)
            if not new.group:
                new.group = _default_group(data)
            elif new.group not in data.nodegroups:
                raise errors.OpPrereqError(f"Node group {new.group} does not exist",
                                           errors.ECODE_NOENT)
            _stamp_new(new, now)
            data.nodes[new.uuid] = new.freeze()
            index.add_node(new)
            return new

        stored = self._commit(mutate)
        _copy_stamps(stored, node)
        node.group = stored.group

    def remove_node(self, uuid: str) -> None:
        def mutate(data: ConfigData, index: _Index, now: float) -> None:
            node = data.nodes.get(uuid)
            if node is None:
                raise errors.ConfigurationError(f"Unknown node uuid {uuid}")
            if uuid == data.cluster.master_node:
                raise errors.OpPrereqError(f"Node {node.name} is the master node",
                                           errors.ECODE_STATE)
            users = sorted(data.instances[i].name
                           for i in index.node_instances.get(uuid, frozenset()))
            if users:
                raise errors.OpPrereqError(
                    f"Node {node.name} still hosts instance(s): {', '.join(users)}",
                    errors.ECODE_STATE)
            del data.nodes[uuid]
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

        def mutate(data: ConfigData, index: _Index, now: float) -> NodeGroup:
            if new.uuid in data.nodegroups:
                raise errors.OpPrereqError(f"Node group uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique_name("Node group", new, data.nodegroups.values())
            _stamp_new(new, now)
            data.nodegroups[new.uuid] = new.freeze()
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

        def mutate(data: ConfigData, index: _Index, now: float) -> Instance:
            if new.uuid in data.instances:
                raise errors.OpPrereqError(f"Instance uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique("Instance", new, index.instance_by_name)
            _check_instance_nodes(new, data)
            _stamp_new(new, now)
            data.instances[new.uuid] = new.freeze()
            index.add_instance(new)
            return new

        _copy_stamps(self._commit(mutate), instance)

    def remove_instance(self, uuid: str) -> None:
        def mutate(data: ConfigData, index: _Index, now: float) -> None:
            inst = data.instances.get(uuid)
            if inst is None:
                raise errors.ConfigurationError(f"Unknown instance uuid {uuid}")
            del data.instances[uuid]
            index.remove_instance(inst)

        self._commit(mutate)

    def set_instance_admin_state(self, uuid: str, state: str,
                                 source: str = constants.ADMIN_SOURCE) -> None:
        if state not in constants.ADMINST_ALL:
            raise errors.ProgrammerError(f"Invalid admin state {state!r}")
        if source not in (constants.ADMIN_SOURCE, constants.USER_SOURCE):
            raise errors.ProgrammerError(f"Invalid admin state source {source!r}")

        def mutate(data: ConfigData, index: _Index, now: float) -> None:
            current = data.instances.get(uuid)
            if current is None:
                raise errors.ConfigurationError(f"Unknown instance uuid {uuid}")
            inst = current.model_copy(deep=True)
            inst.admin_state = state  # type: ignore[assignment]
            inst.admin_state_source = source  # type: ignore[assignment]
            inst.serial_no += 1
            inst.mtime = now
            data.instances[uuid] = inst.freeze()  # same name, MACs, nodes: index unchanged

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

        def mutate(data: ConfigData, index: _Index, now: float) -> None:
            current = next((s for s in data.backup_schedules.values()
                            if s.name == new.name), None)
            if create and current is not None:
                raise errors.OpPrereqError(f"Backup schedule '{new.name}' already exists",
                                           errors.ECODE_EXISTS)
            if not create and current is None:
                raise errors.OpPrereqError(f"Backup schedule '{new.name}' does not exist",
                                           errors.ECODE_NOENT)
            if current is not None:
                del data.backup_schedules[current.uuid]
                new.uuid, new.ctime = current.uuid, current.ctime
                new.serial_no = current.serial_no + 1
            else:
                new.ctime = now
            new.mtime = now
            data.backup_schedules[new.uuid] = new.freeze()

        self._commit(mutate)

    def remove_backup_schedule(self, name: str) -> None:
        def mutate(data: ConfigData, index: _Index, now: float) -> None:
            for uuid, sched in data.backup_schedules.items():
                if sched.name == name:
                    del data.backup_schedules[uuid]
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

        def mutate(data: ConfigData, index: _Index, now: float
                   ) -> Cluster | Node | Instance | NodeGroup:
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
                data.nodes[new.uuid] = new
                index.add_node(new)
            elif isinstance(new, Instance):
                assert isinstance(current, Instance)
                index.remove_instance(current)
                data.instances[new.uuid] = new
                index.add_instance(new)
            elif isinstance(new, NodeGroup):
                data.nodegroups[new.uuid] = new
            else:
                data.cluster = new
            return new

        stored = self._commit(mutate)
        obj.serial_no = stored.serial_no
        obj.mtime = stored.mtime

    # --- writing --------------------------------------------------------------------

    def _commit(self, mutate: Callable[[ConfigData, _Index, float], _T]) -> _T:
        """Apply ``mutate`` to the live data, then return once that change is durable.

        The change is made on copies of the tables (shallow, about a millisecond at
        10,000 instances), so a mutator that raises leaves the state before it
        exactly as it was, including other threads' changes still waiting for
        their write.
        """
        with self._lock:
            before = self._data, self._index, self.snapshot()
            self._unshare()
            now = time.time()
            try:
                result = mutate(self._data, self._index, now)
            except BaseException:
                self._data, self._index, self._snapshot = before
                raise
            # not through validate_assignment: it would re-run ConfigData's key check
            # over every table (O(size)) for two numbers we set ourselves
            self._data.__dict__["serial_no"] = self._data.serial_no + 1
            self._data.__dict__["mtime"] = now
            serial, epoch = self._data.serial_no, self._epoch
        self._wait_durable(serial, epoch)
        return result

    def _restore(self) -> None:
        """Back to the last written bytes (they parsed before, so they parse now)."""
        self._data = _parse(self._raw, self._path)
        self._index = _Index.build(self._data)
        self._snapshot = None

    def _wait_durable(self, serial: int, epoch: int) -> None:
        """Group commit: wait for a write containing ``serial``, or be the one writing.

        Whoever finds no write in flight serialises every change made so far (its
        own and those of the threads waiting behind it) and writes the file
        outside the store lock; the others wait on ``_io``.  A failed write rolls
        the in-memory data back to the file and fails every change it dropped.
        """
        with self._io:
            while True:
                if epoch != self._epoch:
                    if serial <= self._epoch_end[epoch]:
                        return
                    raise errors.ConfigurationError(
                        f"Cannot write configuration file {self._path}: {self._write_error}")
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
                # under the lock (cheap with fragments, and no table copies for the
                # changes made meanwhile); the slow part, writing, is outside it
                raw = self._fragments.serialize(self._data)
                serial = self._data.serial_no
            key = _write_file(self._path, raw, exclusive=False)
        except BaseException as err:
            with self._lock:
                self._restore()
                with self._io:
                    self._epoch_end[self._epoch] = self._durable_serial
                    self._epoch += 1
                    self._write_error = str(err)
                    self._writing = False
                    self._io.notify_all()
            if isinstance(err, OSError):
                raise errors.ConfigurationError(
                    f"Cannot write configuration file {self._path}: {err}") from err
            raise
        with self._lock:
            self._raw, self._file_key = raw, key
        with self._io:
            self._durable_serial = serial
            self._writing = False
            self._io.notify_all()
        self._notify(raw, serial)

    def _notify(self, raw: bytes, serial: int) -> None:
        with self._notify_lock:
            if serial <= self._notified_serial:
                return
            self._notified_serial = serial
            for callback, with_data in list(self._listeners):
                try:
                    callback(json.loads(raw) if with_data else {}, serial)
                except Exception:
                    logger.exception("Configuration write listener %r failed", callback)


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
