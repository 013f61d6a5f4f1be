"""Opcode definitions.

Each opcode is a pydantic model: the class body *is* the declarative table of
fields, types and defaults.  ``OP_ID`` is derived from the class name
(``OpBackupExport`` -> ``OP_BACKUP_EXPORT``) and every class registers itself
so that :func:`from_dict` can rebuild an opcode from its JSON form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ganeti import constants, errors, limits

NonEmptyStr = Annotated[str, Field(min_length=1)]
# names of new objects: short enough for every path a node derives from them
NewName = Annotated[str, Field(min_length=1, max_length=limits.NAME_LENGTH.maximum)]
Tag = Annotated[str, Field(min_length=limits.TAG_LENGTH.minimum,
                           max_length=limits.TAG_LENGTH.maximum)]
TagList = Annotated[list[Tag], Field(max_length=limits.TAGS.maximum)]
# seconds handed to sockets and events, which overflow beyond time_t
Timeout = Annotated[int, Field(ge=0, le=limits.SHUTDOWN_TIMEOUT.maximum)]
Priority = Annotated[int, Field(ge=constants.OP_PRIO_HIGHEST, le=constants.OP_PRIO_LOWEST)]
FinalStatus = Literal["success", "error", "canceled"]
# (job id, statuses that satisfy the dependency); ids may be relative (negative)
Dependency = Annotated[tuple[int, list[FinalStatus]], Field(strict=False)]
# (source, text, timestamp in nanoseconds)
ReasonEntry = Annotated[
    tuple[str, Annotated[str, Field(max_length=limits.REASON_TEXT.maximum)],
          Annotated[int, Field(ge=0, lt=2**63)]],
    Field(strict=False)]
# (host, port, magic, hmac digest, hmac salt) for one disk of a remote export
RemoteDiskTarget = Annotated[tuple[str, int, str, str, str], Field(strict=False)]

OPCODE_REGISTRY: dict[str, type[OpCode]] = {}


def _op_id_for(class_name: str) -> str:
    if not class_name.startswith("Op"):
        raise errors.ProgrammerError(f"Opcode class {class_name} must start with 'Op'")
    words = re.findall(r"[A-Z][a-z0-9]*", class_name[2:])
    return "OP_" + "_".join(w.upper() for w in words)


class OpCode(BaseModel):
    """Base of every opcode; holds the fields common to all of them."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              frozen=False)

    OP_ID: ClassVar[str] = "OP_ABSTRACT"
    # field whose value is shown by Summary(), e.g. BACKUP_EXPORT(inst1)
    OP_DSC_FIELD: ClassVar[str | None] = None
    # type of the result Exec must return; the processor checks it (None: any JSON value)
    OP_RESULT: ClassVar[Any] = None
    # fields holding secrets: kept in memory only, never in the job store or job queries
    OP_SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    dry_run: bool = False
    debug_level: Annotated[int, Field(ge=0)] = 0
    priority: Priority = constants.OP_PRIO_NORMAL
    depends: list[Dependency] | None = None
    comment: Annotated[str, Field(max_length=limits.COMMENT.maximum)] | None = None
    reason: list[ReasonEntry] = Field(default_factory=list,
                                      max_length=limits.REASON_ENTRIES.maximum)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        op_id = _op_id_for(cls.__name__)
        cls.OP_ID = op_id
        if op_id in OPCODE_REGISTRY and OPCODE_REGISTRY[op_id].__name__ != cls.__name__:
            raise errors.ProgrammerError(f"Duplicate opcode id {op_id}")
        OPCODE_REGISTRY[op_id] = cls

    @classmethod
    def create(cls, **fields: Any) -> OpCode:
        """Build and validate; bad input raises OpPrereqError naming the field."""
        try:
            return cls.model_validate(fields)
        except ValidationError as err:
            raise _prereq_from_validation(cls.OP_ID, err) from None

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["OP_ID"] = self.OP_ID
        return data

    def Summary(self) -> str:
        """Short text such as ``BACKUP_EXPORT(inst1)`` for job lists and logs."""
        text = self.OP_ID.removeprefix("OP_")
        if self.OP_DSC_FIELD is not None:
            value = getattr(self, self.OP_DSC_FIELD, None)
            if value is not None:
                if isinstance(value, (list, tuple)):
                    value = ",".join(str(v) for v in value)
                text = f"{text}({value})"
        return text

    def TinySummary(self) -> str:
        return self.Summary()

    def validate_fields(self) -> None:
        """Re-validate every field (after programmatic changes)."""
        try:
            type(self).model_validate(self.model_dump())
        except ValidationError as err:
            raise _prereq_from_validation(self.OP_ID, err) from None


_MAX_REPORTED_ERRORS = 5


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _prereq_from_validation(op_id: str, err: ValidationError) -> errors.OpPrereqError:
    parts = []
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "<opcode>"
        # the input may be huge (100,000 disks): show its start only
        parts.append(f"Parameter '{op_id}.{field}' fails validation: {item['msg']}"
                     f" (got {_short(item.get('input'))})")
        if len(parts) >= _MAX_REPORTED_ERRORS:
            break
    return errors.OpPrereqError("; ".join(parts), errors.ECODE_INVAL)


def from_dict(data: Any) -> OpCode:
    """Rebuild an opcode from its JSON form (with ``OP_ID``)."""
    if not isinstance(data, dict):
        raise errors.OpPrereqError(f"Opcode must be a dict, got {type(data).__name__}",
                                   errors.ECODE_INVAL)
    fields = dict(data)
    op_id = fields.pop("OP_ID", None)
    if not isinstance(op_id, str):
        raise errors.OpPrereqError("Opcode dict has no OP_ID", errors.ECODE_INVAL)
    cls = OPCODE_REGISTRY.get(op_id)
    if cls is None:
        raise errors.OpCodeUnknown(f"Unknown opcode {op_id}")
    return cls.create(**fields)


# --- cluster ---------------------------------------------------------------


class OpClusterInit(OpCode):
    """Not submitted through the queue: gnt-cluster init runs it locally."""

    OP_DSC_FIELD = "cluster_name"
    cluster_name: NonEmptyStr
    master_node: NonEmptyStr
    master_ip: str | None = None
    noded_port: Annotated[int, Field(gt=0, lt=65536)] = constants.DEFAULT_NODED_PORT
    enabled_disk_templates: list[str] = Field(default_factory=lambda: [constants.DT_FILE])
    enabled_hypervisors: list[str] = Field(default_factory=lambda: [constants.HT_PROCESS])
    compression_tools: list[str] = Field(
        default_factory=lambda: list(constants.IEC_DEFAULT_TOOLS))
    shared_export_dir: bool = False


class OpClusterQuery(OpCode):
    pass


class OpClusterVerify(OpCode):
    pass


class OpClusterDestroy(OpCode):
    pass


class OpClusterRenewCrypto(OpCode):
    OP_SECRET_FIELDS = ("cluster_domain_secret",)
    new_cluster_domain_secret: bool = False
    cluster_domain_secret: str | None = None


class OpClusterSetParams(OpCode):
    """Change cluster settings; ``backup_defaults`` holds only the keys to change."""

    backup_defaults: dict[str, Any] = Field(default_factory=dict)


class OpClusterCleanupLeftovers(OpCode):
    """Remove export snapshots, staging dirs and transfers no running job uses."""


# --- tests -----------------------------------------------------------------


class OpTestDelay(OpCode):
    """Sleep on the master and/or nodes; exercises the engine end to end."""

    OP_DSC_FIELD = "duration"
    duration: Annotated[float, Field(ge=0, le=limits.TEST_DELAY.maximum,
                                     allow_inf_nan=False)]
    on_master: bool = True
    on_nodes: list[NonEmptyStr] = Field(default_factory=list)
    repeat: Annotated[int, Field(ge=0, le=limits.TEST_REPEAT.maximum)] = 0
    # instances to hold exclusively while sleeping (lets tests create lock contention)
    lock_instances: list[NonEmptyStr] = Field(default_factory=list)
    fail: bool = False


# --- nodes -----------------------------------------------------------------


class OpNodeAdd(OpCode):
    OP_DSC_FIELD = "node_name"
    node_name: NewName
    primary_ip: str | None = None
    secondary_ip: str | None = None
    readd: bool = False
    group: str | None = None
    master_capable: bool | None = None
    vm_capable: bool | None = None
    ndparams: dict[str, Any] | None = None
    # noded port of the new node (a local cluster runs several on one host)
    port: Annotated[int, Field(gt=0, lt=65536)] | None = None
    ssh_user: str | None = None
    ssh_port: Annotated[int, Field(gt=0, lt=65536)] | None = None


class OpNodeRemove(OpCode):
    OP_DSC_FIELD = "node_name"
    node_name: NonEmptyStr


class OpNodeQuery(OpCode):
    output_fields: list[NonEmptyStr]
    names: list[NonEmptyStr] = Field(default_factory=list)
    use_locking: bool = False


class OpNodeSetParams(OpCode):
    OP_DSC_FIELD = "node_name"
    node_name: NonEmptyStr
    force: bool = False
    offline: bool | None = None
    drained: bool | None = None
    master_candidate: bool | None = None
    auto_promote: bool = False
    # KiB/s shared by the node's export streams (0: remove the limit); None: unchanged
    backup_bwlimit: Annotated[int, Field(ge=0)] | None = None


# --- instances ---------------------------------------------------------------


class OpInstanceCreate(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NewName
    mode: Literal["create", "import", "remote-import"] = constants.INSTANCE_CREATE
    disk_template: str = constants.DT_FILE
    # counts bounded here, so a huge submission is refused before it is queued
    disks: list[dict[str, Any]] = Field(default_factory=list,
                                        max_length=limits.DISKS.maximum)
    nics: list[dict[str, Any]] = Field(default_factory=list, max_length=limits.NICS.maximum)
    os_type: str | None = None
    osparams: dict[str, Any] = Field(default_factory=dict)
    beparams: dict[str, Any] = Field(default_factory=dict)
    hvparams: dict[str, Any] = Field(default_factory=dict)
    hypervisor: str | None = None
    pnode: str | None = None
    snode: str | None = None
    iallocator: str | None = None
    start: bool = True
    ip_check: bool = False
    name_check: bool = False
    wait_for_sync: bool = True
    no_install: bool | None = None
    tags: TagList = Field(default_factory=list)
    file_storage_dir: str | None = None
    # import
    src_node: str | None = None
    src_path: str | None = None
    identify_defaults: bool = False
    compress: str = constants.IEC_NONE
    # remote import
    source_handshake: list[Any] | None = None
    source_x509_ca: str | None = None
    source_instance_name: str | None = None
    source_shutdown_timeout: Timeout = constants.DEFAULT_SHUTDOWN_TIMEOUT


class OpInstanceRemove(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    ignore_failures: bool = False
    shutdown_timeout: Timeout = constants.DEFAULT_SHUTDOWN_TIMEOUT


class OpInstanceStartup(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    force: bool = False
    ignore_offline_nodes: bool = False
    hvparams: dict[str, Any] = Field(default_factory=dict)
    beparams: dict[str, Any] = Field(default_factory=dict)
    no_remember: bool = False
    startup_paused: bool = False


class OpInstanceShutdown(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    force: bool = False
    ignore_offline_nodes: bool = False
    timeout: Timeout = constants.DEFAULT_SHUTDOWN_TIMEOUT
    no_remember: bool = False


class OpInstanceReboot(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    reboot_type: Literal["soft", "hard", "full"] = "hard"
    ignore_secondaries: bool = False
    shutdown_timeout: Timeout = constants.DEFAULT_SHUTDOWN_TIMEOUT


class OpInstanceQuery(OpCode):
    output_fields: list[NonEmptyStr]
    names: list[NonEmptyStr] = Field(default_factory=list)
    use_locking: bool = False


class OpInstanceQueryData(OpCode):
    instances: list[NonEmptyStr] = Field(default_factory=list)
    static: bool = False
    use_locking: bool = False


class OpInstanceSetParams(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    beparams: dict[str, Any] = Field(default_factory=dict)
    hvparams: dict[str, Any] = Field(default_factory=dict)
    osparams: dict[str, Any] = Field(default_factory=dict)
    force: bool = False


# --- backup ------------------------------------------------------------------


class OpBackupPrepare(OpCode):
    """Prepare an export; in remote mode returns handshake, key name and signed CA."""

    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    mode: Literal["local", "remote"]


@dataclass(frozen=True)
class LocalTarget:
    """Local mode: the node of this cluster that receives the export."""

    node: str


@dataclass(frozen=True)
class RemoteTarget:
    """Remote mode: per-disk endpoints in another cluster and the signed transfer keys."""

    disks: tuple[tuple[str, int, str, str, str], ...]
    x509_key_name: list[Any] | None
    destination_x509_ca: str | None


class OpBackupExport(OpCode):
    """Export an instance's configuration and disks to a node (or another cluster).

    On the wire ``mode`` and ``target_node`` stay as Ganeti sends them; ``target``
    is their typed view, and the validator refuses a target_node of the wrong kind.
    """

    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    # a node name in local mode; per-disk (host, port, magic, hmac, salt) in remote mode
    target_node: NonEmptyStr | Annotated[list[RemoteDiskTarget],
                                         Field(max_length=limits.DISKS.maximum)]
    shutdown: bool = True
    shutdown_timeout: Timeout = constants.DEFAULT_SHUTDOWN_TIMEOUT
    remove_instance: bool = False
    ignore_remove_failures: bool = False
    mode: Literal["local", "remote"] = constants.EXPORT_MODE_LOCAL
    x509_key_name: Annotated[list[Any], Field(strict=False)] | None = None
    destination_x509_ca: str | None = None
    compress: NonEmptyStr = constants.IEC_NONE
    long_sleep: bool = False
    # keep the replaced export as an older generation (scheduled exports) instead
    # of deleting it (Ganeti's semantics, the default)
    keep_generations: bool = False
    # KiB/s for this export (0: none); None: the cluster's backup default
    bwlimit: Annotated[int, Field(ge=0)] | None = None
    # I/O priority of the copy on both nodes; None: the cluster's backup default
    ionice_class: Literal["best-effort", "idle"] | None = None
    ionice_level: Annotated[int, Field(ge=0, le=7)] | None = None
    # free-text note stored with the new export (local mode; see OpBackupSetGenerationParams)
    note: str | None = None

    # (finalize ok, per-disk ok)
    OP_RESULT = tuple[bool, list[bool]]

    @model_validator(mode="after")
    def _mode_selects_target(self) -> OpBackupExport:
        self.target  # noqa: B018 -- raises when target_node does not fit the mode
        return self

    @property
    def target(self) -> LocalTarget | RemoteTarget:
        if self.mode == constants.EXPORT_MODE_REMOTE:
            if isinstance(self.target_node, str):
                raise errors.OpPrereqError(
                    "target_node: in remote mode it must be a list of per-disk destinations"
                    " [host, port, magic, hmac, salt]", errors.ECODE_INVAL)
            return RemoteTarget(tuple(self.target_node), self.x509_key_name,
                                self.destination_x509_ca)
        if not isinstance(self.target_node, str):
            raise errors.OpPrereqError("target_node: in local mode it must be a node name",
                                       errors.ECODE_INVAL)
        return LocalTarget(self.target_node)


class OpBackupQuery(OpCode):
    nodes: list[NonEmptyStr] = Field(default_factory=list)
    use_locking: bool = False


class OpBackupRemove(OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr


# --- scheduled exports and retention (ganeti.cmdlib.backup_schedule) ----------

KeepCount = Annotated[int, Field(ge=0)] | None


class OpBackupListGenerations(OpCode):
    """Every export generation with timestamp and sizes (QueryExports stays as is)."""

    nodes: list[NonEmptyStr] = Field(default_factory=list)
    instances: list[NonEmptyStr] = Field(default_factory=list)


class OpBackupPrune(OpCode):
    """Apply a retention policy to the generations of instances (all if none named)."""

    OP_DSC_FIELD = "instances"
    instances: list[NonEmptyStr] = Field(default_factory=list)
    nodes: list[NonEmptyStr] = Field(default_factory=list)
    keep_last: KeepCount = None
    keep_hourly: KeepCount = None
    keep_daily: KeepCount = None
    keep_weekly: KeepCount = None
    keep_monthly: KeepCount = None
    keep_yearly: KeepCount = None


class OpBackupRemoveGeneration(OpCode):
    """Remove one older export generation (the newest: OpBackupRemove)."""

    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    generation: NonEmptyStr
    nodes: list[NonEmptyStr] = Field(default_factory=list)


class OpBackupSetGenerationParams(OpCode):
    """Protect/unprotect an export generation or set its note (None: unchanged).

    ``generation`` None addresses the newest export.  A protected generation
    is skipped by prune and cannot be removed until it is unprotected.
    """

    OP_DSC_FIELD = "instance_name"
    instance_name: NonEmptyStr
    generation: NonEmptyStr | None = None
    nodes: list[NonEmptyStr] = Field(default_factory=list)
    protected: bool | None = None
    note: str | None = None

    # [{"node", "generation", "protected", "note"}] for each copy changed
    OP_RESULT = list[dict[str, Any]]


class OpBackupScheduleAdd(OpCode):
    OP_DSC_FIELD = "name"
    name: NonEmptyStr
    instances: list[NonEmptyStr] = Field(default_factory=list)
    tags: list[NonEmptyStr] = Field(default_factory=list)
    all_instances: bool = False
    node_policy: Literal["fixed", "primary", "other"] = "fixed"
    target_node: NonEmptyStr | None = None
    cron: NonEmptyStr
    compress: NonEmptyStr = constants.IEC_NONE
    shutdown_mode: Literal["shutdown", "snapshot"] = "shutdown"
    retention: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    enabled: bool = True
    exclude: list[NonEmptyStr] = Field(default_factory=list)
    # objects.BackupDefaults fields this schedule overrides
    overrides: dict[str, Any] = Field(default_factory=dict)


class OpBackupScheduleModify(OpCode):
    """Change the given fields of a schedule (None: unchanged)."""

    OP_DSC_FIELD = "name"
    name: NonEmptyStr
    instances: list[NonEmptyStr] | None = None
    tags: list[NonEmptyStr] | None = None
    all_instances: bool | None = None
    node_policy: Literal["fixed", "primary", "other"] | None = None
    target_node: str | None = None
    cron: NonEmptyStr | None = None
    compress: NonEmptyStr | None = None
    shutdown_mode: Literal["shutdown", "snapshot"] | None = None
    retention: dict[str, Annotated[int, Field(ge=0)]] | None = None
    enabled: bool | None = None
    exclude: list[NonEmptyStr] | None = None
    # overrides to set; a None value drops that override (back to the cluster default)
    overrides: dict[str, Any] | None = None


class OpBackupScheduleRemove(OpCode):
    OP_DSC_FIELD = "name"
    name: NonEmptyStr


class OpBackupScheduleQuery(OpCode):
    names: list[NonEmptyStr] = Field(default_factory=list)


def all_op_ids() -> list[str]:
    return sorted(OPCODE_REGISTRY)
