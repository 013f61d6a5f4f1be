"""The cluster configuration store: one JSON file, written atomically.

The master owns the only writable ``ConfigStore``; every change goes through a
write method that validates it, bumps serial numbers and replaces the file in
one atomic step, so a crash leaves either the old or the new file, and readers
in other processes never see a partial one.  Read methods hand out copies:
callers edit a copy and give it back with :meth:`ConfigStore.update`, which
refuses stale copies.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from ganeti import constants, errors
from ganeti.fileutils import atomic_write
from ganeti.objects import (
    BackupSchedule,
    Cluster,
    ConfigData,
    Instance,
    Node,
    NodeGroup,
)

logger = logging.getLogger(__name__)

DEFAULT_NODEGROUP_NAME = "default"
CONFIG_FILE_MODE = 0o600

WriteListener = Callable[[dict[str, Any], int], None]
_T = TypeVar("_T")
# identifies one version of the file on disk: (inode, mtime_ns, size)
_FileKey = tuple[int, int, int]


def _file_key(st: os.stat_result) -> _FileKey:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _serialize(data: ConfigData) -> bytes:
    return data.to_json().encode("utf-8")


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


class ConfigStore:
    """Thread-safe access to the configuration file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        # reentrant so that a listener which itself writes cannot deadlock
        self._notify_lock = threading.RLock()
        self._listeners: list[WriteListener] = []
        self._data, self._raw, self._file_key = _load(self._path)
        self._notified_serial = self._data.serial_no

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

    # --- whole-config access --------------------------------------------------------

    def get_serial(self) -> int:
        with self._lock:
            return self._data.serial_no

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            raw = self._raw
        result: dict[str, Any] = json.loads(raw)
        return result

    def get_config_data(self) -> ConfigData:
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
            return True

    def add_write_listener(self, callback: WriteListener) -> None:
        """Call ``callback(config_dict, serial_no)`` after every successful write.

        Callbacks run outside the store lock, see strictly increasing serials (a
        serial may be skipped when a newer write got there first) and must not
        raise: exceptions are logged and otherwise ignored.
        """
        with self._notify_lock:
            self._listeners.append(callback)

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
            return self._data.nodes[self._data.cluster.master_node].name

    # --- nodes ----------------------------------------------------------------------

    def get_node_info(self, uuid: str) -> Node | None:
        with self._lock:
            node = self._data.nodes.get(uuid)
            return node.model_copy(deep=True) if node is not None else None

    def get_node_info_by_name(self, name: str) -> Node | None:
        with self._lock:
            for node in self._data.nodes.values():
                if node.name == name:
                    return node.model_copy(deep=True)
            return None

    def get_all_nodes_info(self) -> dict[str, Node]:
        with self._lock:
            return {u: n.model_copy(deep=True) for u, n in self._data.nodes.items()}

    def get_node_list(self) -> list[str]:
        """Node uuids, ordered by node name."""
        with self._lock:
            return _uuids_by_name(self._data.nodes.values())

    def get_node_names(self, uuids: Iterable[str]) -> list[str]:
        with self._lock:
            names = []
            for uuid in uuids:
                node = self._data.nodes.get(uuid)
                if node is None:
                    raise errors.ConfigurationError(f"Unknown node uuid {uuid}")
                names.append(node.name)
            return names

    def expand_node_name(self, name: str) -> str | None:
        """Node uuid for a full name, a unique short name ("node1") or a uuid."""
        with self._lock:
            return _expand_name(name, self._data.nodes.values())

    def get_online_nodes(self) -> list[str]:
        """Uuids of nodes not marked offline, ordered by name."""
        with self._lock:
            return _uuids_by_name(n for n in self._data.nodes.values() if not n.offline)

    def get_master_candidates(self) -> list[str]:
        with self._lock:
            return _uuids_by_name(n for n in self._data.nodes.values() if n.master_candidate)

    def get_node_instances(self, node_uuid: str) -> list[str]:
        """Uuids of instances using the node as primary or secondary, ordered by name."""
        with self._lock:
            return _uuids_by_name(i for i in self._data.instances.values()
                                  if node_uuid in i.all_nodes)

    def add_node(self, node: Node) -> None:
        """Add a node; an empty ``group`` means the default node group.

        On success the caller's object gets the stored serial_no/ctime/mtime.
        """
        new = node.validated_copy()

        def mutate(data: ConfigData, now: float) -> Node:
            if new.uuid in data.nodes:
                raise errors.OpPrereqError(f"Node uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique_name("Node", new, data.nodes.values())
            if not new.group:
                new.group = _default_group(data)
            elif new.group not in data.nodegroups:
                raise errors.OpPrereqError(f"Node group {new.group} does not exist",
                                           errors.ECODE_NOENT)
            _stamp_new(new, now)
            data.nodes[new.uuid] = new
            return new

        stored = self._commit(mutate)
        _copy_stamps(stored, node)
        node.group = stored.group

    def remove_node(self, uuid: str) -> None:
        def mutate(data: ConfigData, now: float) -> None:
            node = data.nodes.get(uuid)
            if node is None:
                raise errors.ConfigurationError(f"Unknown node uuid {uuid}")
            if uuid == data.cluster.master_node:
                raise errors.OpPrereqError(f"Node {node.name} is the master node",
                                           errors.ECODE_STATE)
            users = sorted(i.name for i in data.instances.values() if uuid in i.all_nodes)
            if users:
                raise errors.OpPrereqError(
                    f"Node {node.name} still hosts instance(s): {', '.join(users)}",
                    errors.ECODE_STATE)
            del data.nodes[uuid]

        self._commit(mutate)

    # --- node groups ----------------------------------------------------------------

    def get_nodegroup_info(self, uuid: str) -> NodeGroup | None:
        with self._lock:
            group = self._data.nodegroups.get(uuid)
            return group.model_copy(deep=True) if group is not None else None

    def get_all_nodegroups_info(self) -> dict[str, NodeGroup]:
        with self._lock:
            return {u: g.model_copy(deep=True) for u, g in self._data.nodegroups.items()}

    def add_nodegroup(self, group: NodeGroup) -> None:
        new = group.validated_copy()

        def mutate(data: ConfigData, now: float) -> NodeGroup:
            if new.uuid in data.nodegroups:
                raise errors.OpPrereqError(f"Node group uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique_name("Node group", new, data.nodegroups.values())
            _stamp_new(new, now)
            data.nodegroups[new.uuid] = new
            return new

        _copy_stamps(self._commit(mutate), group)

    # --- instances ------------------------------------------------------------------

    def get_instance_info(self, uuid: str) -> Instance | None:
        with self._lock:
            inst = self._data.instances.get(uuid)
            return inst.model_copy(deep=True) if inst is not None else None

    def get_instance_info_by_name(self, name: str) -> Instance | None:
        with self._lock:
            for inst in self._data.instances.values():
                if inst.name == name:
                    return inst.model_copy(deep=True)
            return None

    def get_all_instances_info(self) -> dict[str, Instance]:
        with self._lock:
            return {u: i.model_copy(deep=True) for u, i in self._data.instances.items()}

    def get_instance_list(self) -> list[str]:
        """Instance uuids, ordered by instance name."""
        with self._lock:
            return _uuids_by_name(self._data.instances.values())

    def expand_instance_name(self, name: str) -> str | None:
        """Instance uuid for a full name, a unique short name or a uuid."""
        with self._lock:
            return _expand_name(name, self._data.instances.values())

    def add_instance(self, instance: Instance) -> None:
        """Add an instance; its nodes must exist. The caller's object gets the stamps."""
        new = instance.validated_copy()

        def mutate(data: ConfigData, now: float) -> Instance:
            if new.uuid in data.instances:
                raise errors.OpPrereqError(f"Instance uuid {new.uuid} already exists",
                                           errors.ECODE_EXISTS)
            _check_unique_name("Instance", new, data.instances.values())
            _check_instance_nodes(new, data)
            _stamp_new(new, now)
            data.instances[new.uuid] = new
            return new

        _copy_stamps(self._commit(mutate), instance)

    def remove_instance(self, uuid: str) -> None:
        def mutate(data: ConfigData, now: float) -> None:
            if uuid not in data.instances:
                raise errors.ConfigurationError(f"Unknown instance uuid {uuid}")
            del data.instances[uuid]

        self._commit(mutate)

    def set_instance_admin_state(self, uuid: str, state: str,
                                 source: str = constants.ADMIN_SOURCE) -> None:
        if state not in constants.ADMINST_ALL:
            raise errors.ProgrammerError(f"Invalid admin state {state!r}")
        if source not in (constants.ADMIN_SOURCE, constants.USER_SOURCE):
            raise errors.ProgrammerError(f"Invalid admin state source {source!r}")

        def mutate(data: ConfigData, now: float) -> None:
            inst = data.instances.get(uuid)
            if inst is None:
                raise errors.ConfigurationError(f"Unknown instance uuid {uuid}")
            inst.admin_state = state  # type: ignore[assignment]
            inst.admin_state_source = source  # type: ignore[assignment]
            inst.serial_no += 1
            inst.mtime = now

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

        def mutate(data: ConfigData, now: float) -> None:
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
            data.backup_schedules[new.uuid] = new

        self._commit(mutate)

    def remove_backup_schedule(self, name: str) -> None:
        def mutate(data: ConfigData, now: float) -> None:
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

        def mutate(data: ConfigData, now: float) -> Cluster | Node | Instance | NodeGroup:
            current = _find_current(data, new)
            if current is None:
                raise errors.ConfigurationError(
                    f"{type(new).__name__} {new.uuid} is not in the configuration")
            if current.serial_no != new.serial_no:
                raise errors.ConfigurationError(
                    f"{type(new).__name__} {new.uuid} was modified concurrently (stale copy:"
                    f" serial {new.serial_no}, configuration has {current.serial_no})")
            if isinstance(new, Node):
                _check_unique_name("Node", new, data.nodes.values())
                if new.group not in data.nodegroups:
                    raise errors.OpPrereqError(f"Node group {new.group} does not exist",
                                               errors.ECODE_NOENT)
                data.nodes[new.uuid] = new
            elif isinstance(new, Instance):
                _check_unique_name("Instance", new, data.instances.values())
                _check_instance_nodes(new, data)
                data.instances[new.uuid] = new
            elif isinstance(new, NodeGroup):
                _check_unique_name("Node group", new, data.nodegroups.values())
                data.nodegroups[new.uuid] = new
            else:
                if new.master_node not in data.nodes:
                    raise errors.OpPrereqError(f"Master node {new.master_node} is unknown",
                                               errors.ECODE_NOENT)
                data.cluster = new
            new.ctime = current.ctime
            new.serial_no = current.serial_no + 1
            new.mtime = now
            return new

        stored = self._commit(mutate)
        obj.serial_no = stored.serial_no
        obj.mtime = stored.mtime

    # --- writing --------------------------------------------------------------------

    def _commit(self, mutate: Callable[[ConfigData, float], _T]) -> _T:
        """Apply ``mutate`` to the live data and persist it, or roll everything back.

        Mutators check first and only then change the data, so a GenericError they
        raise needs no rollback (cheap refusals); anything later restores the last
        written state.
        """
        with self._lock:
            now = time.time()
            try:
                result = mutate(self._data, now)
            except errors.GenericError:
                raise
            except BaseException:
                self._data = _parse(self._raw, self._path)
                raise
            try:
                self._data.serial_no += 1
                self._data.mtime = now
                raw = _serialize(self._data)
                self._file_key = _write_file(self._path, raw, exclusive=False)
            except BaseException as err:
                # the last written bytes are the truth; they parsed before, so they parse now
                self._data = _parse(self._raw, self._path)
                if isinstance(err, OSError):
                    raise errors.ConfigurationError(
                        f"Cannot write configuration file {self._path}: {err}") from err
                raise
            self._raw = raw
            serial = self._data.serial_no
        self._notify(raw, serial)
        return result

    def _notify(self, raw: bytes, serial: int) -> None:
        with self._notify_lock:
            if serial <= self._notified_serial:
                return
            self._notified_serial = serial
            for callback in list(self._listeners):
                try:
                    callback(json.loads(raw), serial)
                except Exception:
                    logger.exception("Configuration write listener %r failed", callback)


# --- helpers ------------------------------------------------------------------------


def _uuids_by_name(objs: Iterable[Node | Instance]) -> list[str]:
    return [o.uuid for o in sorted(objs, key=lambda o: o.name)]


def _expand_name(name: str, objs: Iterable[Node | Instance]) -> str | None:
    """Exact name, then uuid, then a unique case-insensitive match up to a dot."""
    candidates = list(objs)
    for obj in candidates:
        if obj.name == name:
            return obj.uuid
    for obj in candidates:
        if obj.uuid == name:
            return obj.uuid
    lowered = name.lower()
    matches = [o.uuid for o in candidates
               if o.name.lower() == lowered or o.name.lower().startswith(lowered + ".")]
    return matches[0] if len(matches) == 1 else None


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
