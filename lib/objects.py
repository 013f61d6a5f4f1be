"""Configuration objects: the typed contents of the cluster configuration file.

Every object is a mutable pydantic model whose JSON form (``to_dict``) is what
the config store writes; ``from_dict`` is strict, so a typo in a hand-edited or
damaged file is reported with the exact key path instead of being dropped.
"""

from __future__ import annotations

import time
import uuid as uuid_mod
from collections.abc import Iterable
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticSerializationError

from ganeti import constants, errors
from ganeti.backup import schedule_syntax
from ganeti.backup.retention import RetentionPolicy

NonEmptyStr = Annotated[str, Field(min_length=1)]
Port = Annotated[int, Field(gt=0, lt=65536)]

# Literal types mirror the constants (kept in sync by a unit test).
DiskMode = Literal["rw", "ro"]
DiskType = Literal["file", "plain"]
AdminState = Literal["up", "down", "offline"]
AdminStateSource = Literal["admin", "user"]

_MAX_REPORTED_ERRORS = 10
_MAX_SHOWN_INPUT = 80


def new_uuid() -> str:
    return str(uuid_mod.uuid4())


def describe_errors(err: ValidationError, prefix: str = "") -> str:
    """Turn pydantic errors into "key path: problem" text an administrator can act on."""
    parts: list[str] = []
    items = err.errors()
    for item in items[:_MAX_REPORTED_ERRORS]:
        path = ".".join([prefix, *map(str, item["loc"])] if prefix else map(str, item["loc"]))
        path = path or "<root>"
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown key '{path}'")
        elif item["type"] == "missing":
            parts.append(f"missing key '{path}'")
        else:
            got = repr(item.get("input"))
            shown = f" (got {got})" if len(got) <= _MAX_SHOWN_INPUT else ""
            parts.append(f"invalid value at '{path}': {item['msg']}{shown}")
    if len(items) > _MAX_REPORTED_ERRORS:
        parts.append(f"... and {len(items) - _MAX_REPORTED_ERRORS} more")
    return "; ".join(parts)


class ConfigObject(BaseModel):
    """Fields and JSON round trip shared by every configuration object."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    uuid: NonEmptyStr = Field(default_factory=new_uuid, description="Unique identifier")
    serial_no: Annotated[int, Field(ge=0)] = Field(
        0, description="Bumped by every change of the object")
    ctime: float = Field(default_factory=time.time, description="Creation time (epoch)")
    mtime: float = Field(default_factory=time.time,
                         description="Time of the last change (epoch)")
    # set by the config store on the objects it shares with readers (see freeze)
    _frozen: bool = PrivateAttr(default=False)

    def __setattr__(self, name: str, value: Any) -> None:
        private = self.__pydantic_private__
        if private is not None and private.get("_frozen"):
            raise errors.ProgrammerError(
                f"{type(self).__name__} {self.uuid} belongs to the configuration store"
                f" and is shared with every reader; edit a copy (get_*_info) and give it"
                f" back with update() instead of setting '{name}'")
        super().__setattr__(name, value)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """Copies (``model_copy(deep=True)``) are the caller's own: never frozen."""
        copy = super().__deepcopy__(memo)
        if copy.__pydantic_private__ is not None:
            copy.__pydantic_private__["_frozen"] = False
        return copy

    def freeze(self) -> Self:
        """Refuse attribute assignment from now on, here and in nested objects.

        The store freezes what it shares with snapshots so that a reader which
        sets a field by mistake gets a ProgrammerError instead of silently
        changing every other reader's view (and the next file written).
        """
        for value in self.__dict__.values():
            if isinstance(value, ConfigObject):
                value.freeze()
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ConfigObject):
                        item.freeze()
        if self.__pydantic_private__ is not None:
            self.__pydantic_private__["_frozen"] = True
        return self

    @property
    def frozen(self) -> bool:
        private = self.__pydantic_private__
        return bool(private is not None and private.get("_frozen"))

    def to_dict(self) -> dict[str, Any]:
        try:
            return self.model_dump(mode="json")
        except PydanticSerializationError as err:
            raise errors.ConfigurationError(
                f"{type(self).__name__} {self.uuid} cannot be serialized: {err}") from None

    def to_json(self) -> str:
        """Same content as ``json.dumps(self.to_dict())``, several times faster."""
        try:
            return self.model_dump_json()
        except PydanticSerializationError as err:
            raise errors.ConfigurationError(
                f"{type(self).__name__} {self.uuid} cannot be serialized: {err}") from None

    @classmethod
    def from_dict(cls, data: Any, path: str = "") -> Self:
        """Validate JSON data; ``path`` prefixes key paths in error messages."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise errors.ConfigurationError(
                f"Invalid {cls.__name__} data: {describe_errors(err, path)}") from None

    def validated_copy(self) -> Self:
        """Deep copy that is re-validated (catches bad values put into nested dicts)."""
        return type(self).from_dict(self.to_dict())


class Disk(ConfigObject):
    name: str | None = None
    size: Annotated[int, Field(ge=0)]
    mode: DiskMode = constants.DISK_RDWR
    dev_type: DiskType
    # ["file", "/path/to/image"] for file disks, [vg, lv] for plain (LVM) disks
    logical_id: list[Any] = Field(default_factory=list)
    iv_name: str = ""
    params: dict[str, Any] = Field(default_factory=dict)


class NIC(ConfigObject):
    name: str | None = None
    mac: str = ""
    ip: str | None = None
    network: str | None = None
    # mode, link, vlan
    nicparams: dict[str, Any] = Field(default_factory=dict)


class Instance(ConfigObject):
    name: NonEmptyStr
    primary_node: NonEmptyStr
    secondary_nodes: list[str] = Field(default_factory=list)
    os: str = ""
    hypervisor: str = constants.HT_PROCESS
    hvparams: dict[str, Any] = Field(default_factory=dict)
    beparams: dict[str, Any] = Field(default_factory=dict)
    osparams: dict[str, Any] = Field(default_factory=dict)
    # Ganeti's private OS parameters (an import's [os_private]): not in queries
    osparams_private: dict[str, Any] = Field(default_factory=dict)
    admin_state: AdminState = constants.ADMINST_DOWN
    admin_state_source: AdminStateSource = constants.ADMIN_SOURCE
    disk_template: str = constants.DT_DISKLESS
    disks: list[Disk] = Field(default_factory=list)
    nics: list[NIC] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @property
    def all_nodes(self) -> list[str]:
        """Primary node first, then each secondary once."""
        nodes = [self.primary_node]
        for node in self.secondary_nodes:
            if node not in nodes:
                nodes.append(node)
        return nodes

    def find_disk(self, index: int | str) -> Disk:
        """Disk by index as users type it (``0``, ``"1"``); bad input is a prereq error."""
        try:
            idx = int(index)
        except (TypeError, ValueError):
            raise errors.OpPrereqError(f"Invalid disk index '{index}'",
                                       errors.ECODE_INVAL) from None
        if not 0 <= idx < len(self.disks):
            raise errors.OpPrereqError(
                f"Invalid disk index {idx}: instance {self.name} has {len(self.disks)} disk(s)",
                errors.ECODE_INVAL)
        return self.disks[idx]


class Node(ConfigObject):
    name: NonEmptyStr
    primary_ip: NonEmptyStr
    secondary_ip: str | None = None
    # noded port; None means the cluster's noded_port
    port: Port | None = None
    group: str = ""
    offline: bool = False
    drained: bool = False
    master_candidate: bool = False
    master_capable: bool = True
    vm_capable: bool = True
    ndparams: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    # KiB/s shared by every export stream this node sends or receives; None: no limit
    backup_bwlimit: Annotated[int, Field(ge=0)] | None = None


class NodeGroup(ConfigObject):
    name: NonEmptyStr
    ndparams: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)


class Network(ConfigObject):
    name: NonEmptyStr
    network: str | None = None
    gateway: str | None = None
    mac_prefix: str | None = None
    tags: list[str] = Field(default_factory=list)


def _default_beparams() -> dict[str, Any]:
    return {"maxmem": 128, "minmem": 128, "vcpus": 1}


IoniceClass = Literal["best-effort", "idle"]
NotifyMode = Literal["always", "failure", "never"]


class BackupDefaults(BaseModel):
    """Cluster-wide defaults of backup jobs; a schedule or one export may override each.

    The one definition of these settings: ``gnt-cluster modify --backup-*`` options, the
    schedule overrides and the docs are derived from the fields and their descriptions.
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    notify: NotifyMode = Field(
        "failure", description="When to send a run's summary: always, failure or never")
    mail_to: list[NonEmptyStr] = Field(
        default_factory=list, description="Mail the summary to these addresses (sendmail)")
    webhook_url: str | None = Field(
        None, description="POST the summary as JSON to this http(s) URL")
    timezone: NonEmptyStr = Field(
        "UTC", description="Time zone of schedule cron expressions (IANA name)")
    bwlimit: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Bandwidth limit of one export in KiB/s (0 or unset: none)")
    ionice_class: IoniceClass | None = Field(
        None, description="I/O scheduling class of the copy on the nodes")
    ionice_level: Annotated[int, Field(ge=0, le=7)] | None = Field(
        None, description="I/O priority level within the best-effort class (0 highest)")

    @model_validator(mode="after")
    def _check_timezone(self) -> Self:
        import zoneinfo
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class Cluster(ConfigObject):
    cluster_name: NonEmptyStr
    master_node: NonEmptyStr
    master_ip: str | None = None
    noded_port: Port = constants.DEFAULT_NODED_PORT
    enabled_hypervisors: list[str] = Field(default_factory=lambda: [constants.HT_PROCESS])
    enabled_disk_templates: list[str] = Field(default_factory=lambda: [constants.DT_FILE])
    compression_tools: list[str] = Field(
        default_factory=lambda: list(constants.IEC_DEFAULT_TOOLS))
    # True: the export dir is shared by all nodes, so "other nodes'" exports are ours too
    shared_export_dir: bool = False
    hooks_timeout: Annotated[int, Field(gt=0)] = constants.DEFAULT_HOOK_TIMEOUT
    hvparams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    beparams: dict[str, Any] = Field(default_factory=_default_beparams)
    # per OS name
    osparams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    ndparams: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    file_storage_dir: str | None = None
    max_running_jobs: Annotated[int, Field(gt=0)] = 25
    max_queued_jobs: Annotated[int, Field(gt=0)] = 10000
    backup_defaults: BackupDefaults = Field(default_factory=BackupDefaults)

    def fill_beparams(self, instance: Instance) -> dict[str, Any]:
        """Backend parameters in effect: cluster defaults overridden by the instance."""
        return {**self.beparams, **instance.beparams}

    def fill_hvparams(self, instance: Instance) -> dict[str, Any]:
        return {**self.hvparams.get(instance.hypervisor, {}), **instance.hvparams}

    def fill_osparams(self, instance: Instance) -> dict[str, Any]:
        """OS parameters: base OS defaults, then "os+variant" defaults, then the instance."""
        base = instance.os.split("+", 1)[0]
        filled = dict(self.osparams.get(base, {}))
        if instance.os != base:
            filled.update(self.osparams.get(instance.os, {}))
        filled.update(instance.osparams)
        return filled

    def fill_ndparams(self, node: Node, group: NodeGroup | None = None) -> dict[str, Any]:
        filled = dict(self.ndparams)
        if group is not None:
            filled.update(group.ndparams)
        filled.update(node.ndparams)
        return filled

    def node_port(self, node: Node) -> int:
        """The noded port to contact ``node`` on."""
        return node.port if node.port is not None else self.noded_port


def override_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot override the BackupDefaults field ``key`` (None: it can)."""
    if key not in BackupDefaults.model_fields:
        return f"unknown setting (choose from {', '.join(BackupDefaults.model_fields)})"
    if value is None:
        return None
    try:
        backup_settings(BackupDefaults(), {key: value})
    except ValidationError as err:
        problem = err.errors()[0]["msg"].removeprefix("Value error, ")
        return f"{problem} (got {value!r})"
    if key == "webhook_url" and value and not value.startswith(("http://", "https://")):
        return f"expected an http(s) URL, got {value!r}"
    return None


def _known_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Schedule overrides (None values: drop the override, for modify)."""
    for key, value in sorted(overrides.items()):
        problem = override_problem(key, value)
        if problem:
            raise schedule_syntax.field_error(f"overrides.{key}", problem)
    return overrides


ScheduleName = Annotated[str, AfterValidator(schedule_syntax.name)]
CronExpr = Annotated[str, AfterValidator(schedule_syntax.cron)]
ExcludeItem = Annotated[NonEmptyStr, AfterValidator(schedule_syntax.exclude_item)]
NodePolicy = Literal["fixed", "primary", "other"]
ShutdownMode = Literal["shutdown", "snapshot"]


class ScheduleSpec(BaseModel):
    """What a scheduled export does: the one definition of a schedule's fields.

    The config object (BackupSchedule), OpBackupScheduleAdd (as is),
    OpBackupScheduleModify (every field optional) and the ``gnt-backup schedule``
    options are all derived from these fields, their types, bounds and descriptions.
    Rules between fields (selection, node policy) and against the cluster (known
    nodes, instances, compression tools) are the schedule LUs' job.
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    instances: list[NonEmptyStr] = Field(
        default_factory=list, description="Instances to export, by name")
    tags: list[NonEmptyStr] = Field(
        default_factory=list, description="Export the instances carrying any of these tags")
    all_instances: bool = Field(False, description="Export every instance")
    node_policy: NodePolicy = Field(
        "fixed", description="fixed (target_node), primary (the instance's primary) or"
                             " other (a node other than the primary, staying where older"
                             " exports are)")
    target_node: NonEmptyStr | None = Field(
        None, description="Target node (node policy 'fixed')")
    cron: CronExpr = Field(
        description="Cron expression (5 fields) or @hourly, @daily, @midnight, @weekly,"
                    " @monthly, @yearly, @annually; in the schedule's timezone")
    compress: NonEmptyStr = Field(
        constants.IEC_NONE, description="Compression tool of the exports")
    shutdown_mode: ShutdownMode = Field(
        "shutdown", description="shutdown (may keep the instance down while copying"
                                " without snapshots) or snapshot (live, needs snapshots)")
    retention: RetentionPolicy = Field(
        default_factory=RetentionPolicy,
        description="Which generations prune keeps (no rule: keep everything)")
    enabled: bool = Field(True, description="Whether the runner runs it when due")
    exclude: list[ExcludeItem] = Field(
        default_factory=list, description="Instances (names, or tag:T for those tagged T)"
                                          " left out of the selection")
    verify: bool = Field(False, description="Verify each export after it is written (as"
                                            " gnt-backup verify); prune then runs only when"
                                            " it is good")
    overrides: Annotated[dict[str, Any], AfterValidator(_known_overrides)] = Field(
        default_factory=dict, description="BackupDefaults settings this schedule sets"
                                          " itself (unset: the cluster's default)")


class BackupSchedule(ConfigObject, ScheduleSpec):
    """A scheduled export (doc/scheduled-exports.md); the runner turns it into export jobs."""

    name: ScheduleName = Field(description="Schedule name")


def backup_settings(defaults: BackupDefaults, overrides: dict[str, Any]) -> BackupDefaults:
    """The settings in effect: ``defaults`` with ``overrides`` applied, checked by one model."""
    return BackupDefaults.model_validate({**defaults.model_dump(), **overrides})


class ConfigData(ConfigObject):
    """The whole configuration file: the cluster and every object table keyed by uuid."""

    version: int = constants.CONFIG_VERSION
    cluster: Cluster
    nodes: dict[str, Node] = Field(default_factory=dict)
    nodegroups: dict[str, NodeGroup] = Field(default_factory=dict)
    instances: dict[str, Instance] = Field(default_factory=dict)
    networks: dict[str, Network] = Field(default_factory=dict)
    backup_schedules: dict[str, BackupSchedule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        tables: Iterable[tuple[str, dict[str, Any]]] = (
            ("nodes", self.nodes), ("nodegroups", self.nodegroups),
            ("instances", self.instances), ("networks", self.networks),
            ("backup_schedules", self.backup_schedules))
        for table_name, table in tables:
            for key, obj in table.items():
                if key != obj.uuid:
                    raise ValueError(f"key '{table_name}.{key}' does not match the uuid"
                                     f" of its object ({obj.uuid})")
        return self

    def verify(self) -> list[str]:
        """Cross-reference problems (dangling uuids, duplicate names); empty when sound."""
        problems: list[str] = []
        if self.cluster.master_node not in self.nodes:
            problems.append(f"master node {self.cluster.master_node} is not a known node")
        problems.extend(_duplicate_names("node", self.nodes.values()))
        problems.extend(_duplicate_names("node group", self.nodegroups.values()))
        problems.extend(_duplicate_names("instance", self.instances.values()))
        problems.extend(_duplicate_names("network", self.networks.values()))
        for node in self.nodes.values():
            if node.group not in self.nodegroups:
                problems.append(f"node {node.name} is in unknown node group '{node.group}'")
        for inst in self.instances.values():
            for node_uuid in inst.all_nodes:
                if node_uuid not in self.nodes:
                    problems.append(f"instance {inst.name} uses unknown node {node_uuid}")
            for nic in inst.nics:
                if nic.network is not None and nic.network not in self.networks:
                    problems.append(f"instance {inst.name} uses unknown network {nic.network}")
        return problems


def _duplicate_names(kind: str, objs: Iterable[Node | NodeGroup | Instance | Network]
                     ) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for obj in objs:
        if obj.name in seen:
            dups.append(f"duplicate {kind} name {obj.name}")
        seen.add(obj.name)
    return dups
