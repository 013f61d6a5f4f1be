"""Opcode definitions: the documented table of every operation a job can run.

Each opcode is a pydantic model: the class body *is* the declarative table of
fields, types, bounds, defaults and descriptions, the class docstring says
what the operation is for and ``OP_RESULT`` is the type of what its LU's
``Exec`` returns (the processor checks it).  ``OP_ID`` is derived from the
class name (``OpBackupExport`` -> ``OP_BACKUP_EXPORT``) and every class
registers itself so that :func:`from_dict` can rebuild an opcode from its
JSON form.  doc/opcodes.md is generated from this module
(``python -m ganeti.opcodes``) and a unit test keeps the two in step.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Union

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo
from typing_extensions import TypedDict, is_typeddict

from ganeti import constants, errors, limits, objects, opcodes_compat
from ganeti.backup.retention import RetentionRules

# OP_RESULT of an LU whose Exec returns None
NoneType: Any = type(None)

NonEmptyStr = Annotated[str, Field(min_length=1)]
# names of new objects: short enough for every path a node derives from them
NewName = Annotated[str, Field(min_length=1, max_length=limits.NAME_LENGTH.maximum)]
Tag = Annotated[str, Field(min_length=limits.TAG_LENGTH.minimum,
                           max_length=limits.TAG_LENGTH.maximum)]
TagList = Annotated[list[Tag], Field(max_length=limits.TAGS.maximum)]
# seconds handed to sockets and events, which overflow beyond time_t
Timeout = Annotated[int, Field(ge=0, le=limits.SHUTDOWN_TIMEOUT.maximum)]
Priority = Annotated[int, Field(ge=constants.OP_PRIO_HIGHEST, le=constants.OP_PRIO_LOWEST)]
Port = Annotated[int, Field(gt=0, lt=65536)]
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

# a cluster domain secret: one word, long enough not to be guessed
DOMAIN_SECRET_MIN_LENGTH = 32
DomainSecret = Annotated[str, Field(min_length=DOMAIN_SECRET_MIN_LENGTH, pattern=r"^\S+$")]

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

    dry_run: bool = Field(False, description="Only check the prerequisites, change nothing")
    debug_level: Annotated[int, Field(ge=0)] = Field(
        0, description="Verbosity of the LU's debug output")
    priority: Priority = Field(constants.OP_PRIO_NORMAL,
                               description="Scheduling priority (lower runs first)")
    depends: list[Dependency] | None = Field(
        None, description="Jobs (id, accepted final statuses) to wait for; negative ids"
                          " count back from this job in the same submission")
    comment: Annotated[str, Field(max_length=limits.COMMENT.maximum)] | None = Field(
        None, description="Free-text note stored with the job")
    reason: list[ReasonEntry] = Field(
        default_factory=list, max_length=limits.REASON_ENTRIES.maximum,
        description="Reason trail: (source, text, timestamp in ns), one entry per hop")
    # uuid fields of Ganeti 3.0 clients (ganeti.opcodes_compat), resolved by the processor
    _compat: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        op_id = _op_id_for(cls.__name__)
        cls.OP_ID = op_id
        if op_id in OPCODE_REGISTRY and OPCODE_REGISTRY[op_id].__name__ != cls.__name__:
            raise errors.ProgrammerError(f"Duplicate opcode id {op_id}")
        OPCODE_REGISTRY[op_id] = cls

    @classmethod
    def create(cls, **fields: Any) -> OpCode:
        """Build and validate; bad input raises OpPrereqError naming the field.

        Ganeti 3.0's fields are treated as ganeti.opcodes_compat says.
        """
        fields, kept = opcodes_compat.split(cls, fields)
        try:
            op = cls.model_validate(fields)
        except ValidationError as err:
            raise _prereq_from_validation(cls, err) from None
        op._compat = kept
        return op

    def compat_values(self) -> dict[str, Any]:
        """The Ganeti 3.0 uuid fields this opcode came with (field -> value)."""
        return dict(self._compat)

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        # a secret field holding nothing is no secret: left out, the job can still run
        # after a master restart (the job queue keeps secrets in memory only)
        for name in self.OP_SECRET_FIELDS:
            if data.get(name) in ({}, []):
                del data[name]
        data.update(self._compat)
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

    def validate_fields(self) -> None:
        """Re-validate every field (after programmatic changes)."""
        try:
            type(self).model_validate(self.model_dump())
        except ValidationError as err:
            raise _prereq_from_validation(type(self), err) from None


_MAX_REPORTED_ERRORS = 5


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("disks", 0, "size")`` -> ``disks[0].size``, as the limits table names fields."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _problem(item: Any) -> str:
    if item["type"] == "extra_forbidden":
        return "unknown parameter"
    return str(item["msg"]).removeprefix("Value error, ")


def validation_message(what: str, err: ValidationError,
                       secret_fields: tuple[str, ...] = ()) -> str:
    """Pydantic errors as "Parameter 'WHAT.field' fails validation: ..." (Ganeti's text).

    The input of a field in ``secret_fields`` is never shown.
    """
    parts = []
    for item in err.errors():
        loc = item["loc"]
        path = field_path((what, *loc)) if loc else f"{what}.<opcode>"
        # the input may be huge (100,000 disks): show its start only
        got = "<redacted>" if loc and loc[0] in secret_fields else _short(item.get("input"))
        parts.append(f"Parameter '{path}' fails validation: {_problem(item)} (got {got})")
        if len(parts) >= _MAX_REPORTED_ERRORS:
            break
    return "; ".join(parts)


def _prereq_from_validation(cls: type[OpCode], err: ValidationError) -> errors.OpPrereqError:
    return errors.OpPrereqError(validation_message(cls.OP_ID, err, cls.OP_SECRET_FIELDS),
                                errors.ECODE_INVAL)


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


def _optional_view(model: type[BaseModel], namespace: dict[str, Any]) -> None:
    """Add every field of ``model`` to a class body being defined, optional (None:
    unchanged): a modify opcode derived from the same fields as its add opcode."""
    annotations = namespace.setdefault("__annotations__", {})
    for name, info in model.model_fields.items():
        annotations[name] = Union[info.rebuild_annotation(), None]  # noqa: UP007
        namespace[name] = Field(None, description=f"{info.description} (None: unchanged)")


# --- nested specifications -----------------------------------------------------------


class Spec(BaseModel):
    """Base of the nested specifications opcodes carry (a disk, a NIC).

    On the wire a spec is the dict Ganeti sends, without the keys left unset (None).
    """

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _ganeti3_keys(cls, data: Any) -> Any:
        """Ganeti 3.0's keys we lack or spell otherwise (opcodes_compat.SPEC_FIELDS)."""
        return opcodes_compat.split_spec(cls.__name__, data)

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


def _within(limit: limits.Limit, value: Any) -> Any:
    try:
        return limit.check(value, "value")
    except errors.OpPrereqError as err:
        raise ValueError(str(err.args[0]).split(": ", 1)[1]) from None


def _disk_size(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"invalid size {value!r} (a positive number of MiB is needed)")
    return _within(limits.DISK_SIZE, value)


def _disk_mode(value: Any) -> Any:
    if value not in (constants.DISK_RDWR, constants.DISK_RDONLY):
        raise ValueError(f"invalid mode {value!r} (rw or ro)")
    return value


def _optional_name(value: Any) -> Any:
    # "none" (any case) is no name, as in Ganeti: its move-instance sends str(None)
    if isinstance(value, str) and value.lower() == "none":
        return None
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"invalid name {value!r}")
    return value


class DiskSpec(Spec):
    """One disk of a new instance (Ganeti's ``disks`` entry: ``{"size": 1024, ...}``)."""

    size: Annotated[int, BeforeValidator(_disk_size)] = Field(
        description="Size in MiB")
    mode: Annotated[objects.DiskMode, BeforeValidator(_disk_mode)] = Field(
        constants.DISK_RDWR, description="Access mode: rw or ro")
    name: Annotated[str | None, BeforeValidator(_optional_name)] = Field(
        None, description="Optional disk name (none: no name)")


_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
MAC_AUTO = ("auto", "generate")
NicMode = Literal["bridged", "routed", "openvswitch"]
# constants.VERIFY_OPTIONAL_CHECKS
VerifyOptionalCheck = Literal["nplusone_mem"]


def _mac(value: Any) -> Any:
    if value in (None, "", *MAC_AUTO):
        return None
    if not isinstance(value, str) or not _MAC_RE.match(value.lower()):
        raise ValueError(f"invalid MAC address {value!r}")
    return value.lower()


def _nic_mode(value: Any) -> Any:
    modes = typing.get_args(NicMode)
    if value is not None and value not in modes:
        raise ValueError(f"invalid mode {value!r} (one of {', '.join(modes)})")
    return value


class NicSpec(Spec):
    """One NIC of a new instance (Ganeti's ``nics`` entry: ``{"mac": "auto", ...}``)."""

    mac: Annotated[str | None, BeforeValidator(_mac)] = Field(
        None, description="MAC address; none, auto or generate: a new unique one")
    ip: str | None = Field(None, description="IP address (informational)")
    link: str | None = Field(None, description="Bridge or routing table the NIC joins")
    mode: Annotated[NicMode | None, BeforeValidator(_nic_mode)] = Field(
        None, description="bridged, routed or openvswitch")
    name: str | None = Field(None, description="Optional NIC name")
    network: str | None = Field(None, description="Network (uuid) the NIC belongs to")
    vlan: str | None = Field(None, description="VLAN (openvswitch mode)")


def _unset_only(feature: str) -> Callable[[Any], Any]:
    """A field kept for Ganeti's clients whose feature we lack: None only."""
    def check(value: Any) -> Any:
        if value is not None:
            raise ValueError(f"is not supported here ({feature}); only None is accepted")
        return value
    return check


# --- results ---------------------------------------------------------------------------


class RemoteExportInfo(TypedDict):
    """What OpBackupPrepare returns in remote mode, for the destination cluster."""

    handshake: list[Any]
    x509_key_name: list[str]
    x509_ca: str


class GenerationList(TypedDict):
    """Every generation found (one dict each, with its node) and the silent nodes."""

    generations: list[dict[str, Any]]
    unreachable: list[str]


class PrunePlan(TypedDict):
    """Each generation with its keep/remove decision and reasons, and the silent nodes."""

    plan: list[dict[str, Any]]
    unreachable: list[str]


class GenerationChange(TypedDict):
    """One copy of a generation after the change."""

    node: str
    generation: str
    protected: bool
    note: str | None


class VerifiedGeneration(TypedDict):
    """One generation on one node as verify found it; ``disks`` holds the per-disk results
    (``ganeti.rpc.payloads.DiskVerifyResult``)."""

    instance: str
    generation: str
    node: str
    ok: bool
    problems: list[str]
    disks: list[dict[str, Any]]


class VerifyReport(TypedDict):
    """Every generation checked, whether all were ok, and the nodes that were not asked."""

    ok: bool
    generations: list[VerifiedGeneration]
    unreachable: list[str]


class CleanupReport(TypedDict):
    """What was cleaned; ``complete`` is false while instances were busy (run it again)."""

    busy_instances: list[str]
    snapshots: list[str]
    staging: dict[str, list[str]]
    transfers: dict[str, list[str]]
    complete: bool


# --- cluster ---------------------------------------------------------------


class OpClusterQuery(OpCode):
    """Cluster-wide settings and identity (``gnt-cluster info``, LUXI QueryClusterInfo)."""

    OP_RESULT = dict[str, Any]


class OpClusterVerify(OpCode):
    """Submit one OpClusterVerifyGroup job per node group (all, or ``group_name``);
    the result is Ganeti's job-submitted ``{"jobs": [[True, job_id], ...]}``."""

    OP_RESULT = dict[str, Any]
    group_name: NonEmptyStr | None = Field(None, description="Verify only this node group")
    error_codes: bool = Field(
        False, description="Log each problem in Ganeti's machine-parsable form,"
                           " ERROR:CODE:TYPE:ITEM:MESSAGE (e.g. ERROR:ENODEVERSION:node:"
                           "node3:...)")
    skip_checks: list[VerifyOptionalCheck] = Field(
        default_factory=list, description="Optional checks to leave out (nplusone_mem:"
                                          " the N+1 memory redundancy of the nodes)")


class OpClusterVerifyGroup(OpCode):
    """Check that the group's nodes answer, run a compatible daemon and hold no stray
    files; True when nothing is wrong (the problems are in the job log)."""

    OP_DSC_FIELD = "group_name"
    OP_RESULT = bool
    group_name: NonEmptyStr = Field(description="Node group to verify")
    error_codes: bool = Field(False, description="As OpClusterVerify's error_codes")
    skip_checks: list[VerifyOptionalCheck] = Field(
        default_factory=list, description="As OpClusterVerify's skip_checks")


class OpClusterDestroy(OpCode):
    """Take the cluster down for good: config and keys go; returns the master's name."""

    OP_RESULT = str


class OpClusterRenewCrypto(OpCode):
    """Replace the cluster domain secret, which clusters exchanging instances share,
    and/or the RAPI daemon's certificate.

    Either a new random secret or another cluster's (``cluster_domain_secret``);
    the secret is a secret field: it never reaches the job store.
    """

    OP_SECRET_FIELDS = ("cluster_domain_secret",)
    # the file written on the master: the secret's, else the RAPI certificate's
    OP_RESULT = str
    new_cluster_domain_secret: bool = Field(
        False, description="Generate a new random cluster domain secret")
    cluster_domain_secret: DomainSecret | None = Field(
        None, description="Use this secret (another cluster's) instead")
    new_rapi_certificate: bool = Field(
        False, description="Replace the RAPI daemon's certificate (rapi.pem) with a new"
                           " self-signed one for the master's name and address")


class OpClusterSetParams(OpCode):
    """Change cluster settings; returns the names of the settings changed."""

    OP_RESULT = list[str]
    backup_defaults: dict[str, Any] = Field(
        default_factory=dict,
        description="BackupDefaults fields to change (only the keys given)")


class OpClusterCleanupLeftovers(OpCode):
    """Remove export snapshots, staging dirs and transfers no running job uses."""

    OP_RESULT = CleanupReport


# --- tests -----------------------------------------------------------------


class OpTestDelay(OpCode):
    """Sleep on the master and/or nodes; exercises the engine end to end."""

    OP_DSC_FIELD = "duration"
    OP_RESULT = bool
    duration: Annotated[float, Field(ge=0, le=limits.TEST_DELAY.maximum,
                                     allow_inf_nan=False)] = Field(
        description="Seconds to sleep")
    on_master: bool = Field(True, description="Sleep on the master")
    on_nodes: list[NonEmptyStr] = Field(default_factory=list,
                                        description="Nodes to sleep on (through the RPC)")
    repeat: Annotated[int, Field(ge=0, le=limits.TEST_REPEAT.maximum)] = Field(
        0, description="Extra rounds of the same sleep")
    # lets tests create lock contention
    lock_instances: list[NonEmptyStr] = Field(
        default_factory=list, description="Instances to hold exclusively while sleeping")
    fail: bool = Field(False, description="Fail after sleeping (tests error paths)")


# --- nodes -----------------------------------------------------------------


class OpNodeAdd(OpCode):
    """Add a prepared node to the cluster (or re-add a known one); returns its name."""

    OP_DSC_FIELD = "node_name"
    OP_RESULT = str
    node_name: NewName = Field(description="Name of the new node")
    primary_ip: str | None = Field(None, description="Primary IP (default: resolved name)")
    secondary_ip: str | None = Field(None, description="Secondary (replication) IP")
    readd: bool = Field(False, description="Re-add a node already in the configuration")
    group: str | None = Field(None, description="Node group (default: the default group)")
    master_capable: bool | None = Field(None, description="Whether it may become master")
    vm_capable: bool | None = Field(None, description="Whether it may run instances")
    ndparams: dict[str, Any] | None = Field(None, description="Node parameters")
    # a local cluster runs several nodes on one host
    port: Port | None = Field(None, description="noded port of the new node")
    ssh_user: str | None = Field(None, description="User to log in as to set the node up")
    ssh_port: Port | None = Field(None, description="SSH port of the new node")


class OpNodeRemove(OpCode):
    """Remove a node that holds no instances from the cluster."""

    OP_DSC_FIELD = "node_name"
    OP_RESULT = bool
    node_name: NonEmptyStr = Field(description="Node to remove")


class OpNodeQuery(OpCode):
    """Rows of node fields (``gnt-node list``): one list of values per node."""

    OP_RESULT = list[list[Any]]
    output_fields: list[NonEmptyStr] = Field(description="Fields to return, in this order")
    names: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to list (none: all)")
    use_locking: bool = Field(False, description="Take shared node locks (consistent"
                                                 " answers, may wait)")


class OpNodeSetParams(OpCode):
    """Change a node's flags and export bandwidth; returns (setting, new value) pairs."""

    OP_DSC_FIELD = "node_name"
    OP_RESULT = list[tuple[str, Any]]
    node_name: NonEmptyStr = Field(description="Node to change")
    force: bool = Field(False, description="Apply even where checks advise against it")
    offline: bool | None = Field(None, description="Mark offline (None: unchanged)")
    drained: bool | None = Field(None, description="Mark drained: no new instances"
                                                   " (None: unchanged)")
    master_candidate: bool | None = Field(
        None, description="Make it a master candidate (None: unchanged)")
    auto_promote: bool = Field(False, description="Promote another node to keep enough"
                                                  " master candidates")
    backup_bwlimit: Annotated[int, Field(ge=0)] | None = Field(
        None, description="KiB/s shared by the node's export streams (0: remove the"
                          " limit; None: unchanged)")


# --- instances ---------------------------------------------------------------


class OpInstanceCreate(OpCode):
    """Create an instance, or import one from an export (local or remote cluster).

    Returns the names of the nodes the new instance uses (primary first).
    """

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = list[str]
    OP_SECRET_FIELDS = ("osparams_private",)
    instance_name: NewName = Field(description="Name of the new instance")
    mode: Literal["create", "import", "remote-import"] = Field(
        constants.INSTANCE_CREATE,
        description="create (empty disks), import (from an export in this cluster) or"
                    " remote-import (from another cluster)")
    disk_template: str = Field(constants.DT_FILE, description="Storage of the disks")
    # counts bounded here, so a huge submission is refused before it is queued
    disks: list[DiskSpec] = Field(default_factory=list, max_length=limits.DISKS.maximum,
                                  description="The disks, in order")
    nics: list[NicSpec] = Field(default_factory=list, max_length=limits.NICS.maximum,
                                description="The NICs, in order")
    # "": what OpInstanceQueryData shows for an instance without one (move-instance)
    os_type: Annotated[str | None, BeforeValidator(lambda v: None if v == "" else v)] = \
        Field(None, description="OS (definition name, +variant); empty: none")
    osparams: dict[str, Any] = Field(default_factory=dict, description="OS parameters")
    osparams_private: dict[str, Any] = Field(
        default_factory=dict, description="OS parameters kept out of job queries")
    beparams: dict[str, Any] = Field(default_factory=dict,
                                     description="Backend parameters (memory, vcpus, ...)")
    hvparams: dict[str, Any] = Field(default_factory=dict,
                                     description="Hypervisor parameters")
    hypervisor: str | None = Field(None, description="Hypervisor (default: the cluster's"
                                                     " first enabled one)")
    pnode: str | None = Field(None, description="Primary node (default: the usable node"
                                                " with the fewest instances)")
    snode: str | None = Field(None, description="Secondary node (no template here uses"
                                                " one)")
    iallocator: Literal["hail", "."] | None = Field(
        None, description="Allocator choosing the primary node instead of pnode: hail (built"
                          " in: the usable node with the most free memory and disk left"
                          " after the placement) or '.' (the cluster's default, hail)")
    start: bool = Field(True, description="Start the instance once created")
    ip_check: bool = Field(False, description="Check that nothing answers at the IP the name"
                                              " resolves to (needs name_check)")
    name_check: bool = Field(False, description="Check that the name resolves")
    ignore_ipolicy: bool = Field(
        False, description="Ignore instance policy violations (the policy here has no"
                           " limits; its disk templates are the enabled ones, which are"
                           " required anyway: nothing is refused by it)")
    no_nics: bool = Field(False, description="import: no NICs, not the export's (nics"
                                             " must be empty)")
    wait_for_sync: bool = Field(True, description="Wait for disk synchronisation")
    no_install: bool | None = Field(None, description="Do not run the OS install scripts")
    tags: TagList = Field(default_factory=list, description="Tags of the new instance")
    file_storage_dir: Annotated[str | None, BeforeValidator(
        _unset_only("choosing the directory of file disks"))] = Field(
        None, description="Directory of file disks (not supported: only None; the"
                          " node's file storage directory)")
    src_node: str | None = Field(None, description="import: node holding the export"
                                                   " (default: searched)")
    src_path: str | None = Field(None, description="import: export name or path; NAME@GEN"
                                                   " picks an older generation")
    identify_defaults: bool = Field(
        False, description="import: do not keep exported values equal to the cluster"
                           " defaults as instance values")
    compress: str = Field(constants.IEC_NONE, description="import: compression of the"
                                                          " copy")
    source_handshake: list[Any] | None = Field(
        None, description="remote-import: the source cluster's handshake")
    source_x509_ca: str | None = Field(
        None, description="remote-import: the source's signed X509 CA")
    source_instance_name: str | None = Field(
        None, description="remote-import: the instance's name in the source cluster")
    source_shutdown_timeout: Timeout = Field(
        constants.DEFAULT_SHUTDOWN_TIMEOUT,
        description="remote-import: seconds the source waits for a clean shutdown")


class OpInstanceRemove(OpCode):
    """Stop an instance and remove it with its disks."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = NoneType
    instance_name: NonEmptyStr = Field(description="Instance to remove")
    ignore_failures: bool = Field(False, description="Remove it from the configuration"
                                                     " even if shutdown or disk removal"
                                                     " fail")
    shutdown_timeout: Timeout = Field(constants.DEFAULT_SHUTDOWN_TIMEOUT,
                                      description="Seconds to wait for a clean shutdown")


class OpInstanceStartup(OpCode):
    """Start an instance (and remember it should run)."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = NoneType
    instance_name: NonEmptyStr = Field(description="Instance to start")
    force: bool = Field(False, description="Start even if checks advise against it")
    ignore_offline_nodes: bool = Field(
        False, description="With an offline primary, only mark the instance as started")
    hvparams: dict[str, Any] = Field(default_factory=dict,
                                     description="Hypervisor parameters for this start only")
    beparams: dict[str, Any] = Field(default_factory=dict,
                                     description="Backend parameters for this start only")
    no_remember: bool = Field(False, description="Do not record the new admin state")
    startup_paused: bool = Field(False, description="Start with the CPUs paused")


class OpInstanceShutdown(OpCode):
    """Stop an instance (and remember it should stay down)."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = NoneType
    instance_name: NonEmptyStr = Field(description="Instance to stop")
    force: bool = Field(False, description="Succeed with a warning if the stop fails")
    ignore_offline_nodes: bool = Field(
        False, description="With an offline primary, only mark the instance as stopped")
    timeout: Timeout = Field(constants.DEFAULT_SHUTDOWN_TIMEOUT,
                             description="Seconds to wait for a clean shutdown")
    no_remember: bool = Field(False, description="Do not record the new admin state")


class OpInstanceReboot(OpCode):
    """Reboot a running instance."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = NoneType
    instance_name: NonEmptyStr = Field(description="Instance to reboot")
    reboot_type: Literal["soft", "hard", "full"] = Field(
        "hard", description="soft (inside the guest), hard (hypervisor restart) or full"
                            " (stop and start)")
    ignore_secondaries: bool = Field(False, description="Ignore errors on secondaries")
    shutdown_timeout: Timeout = Field(constants.DEFAULT_SHUTDOWN_TIMEOUT,
                                      description="Seconds to wait for a clean shutdown")


class OpInstanceQuery(OpCode):
    """Rows of instance fields (``gnt-instance list``): one list of values per instance."""

    OP_RESULT = list[list[Any]]
    output_fields: list[NonEmptyStr] = Field(description="Fields to return, in this order")
    names: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Instances to list (none: all)")
    use_locking: bool = Field(False, description="Take shared instance locks")


class OpInstanceQueryData(OpCode):
    """Detailed information per instance (``gnt-instance info``), keyed by name: the keys of
    Ganeti 3.0's result (``config_state``, ``run_state`` up/down/user down/offline or None
    when static, node groups, ``*_instance``/``*_actual`` parameters, disks with uuid and
    status, NICs as its (name, uuid, ip, mac, mode, link, vlan, network, netinfo)
    tuples), plus ``admin_state``, ``oper_ram``, ``oper_vcpus``, ``tags`` and ``accel`` (the
    accelerator of a running kvm instance, kvm or tcg; None otherwise)."""

    OP_RESULT = dict[str, dict[str, Any]]
    instances: list[NonEmptyStr] = Field(default_factory=list,
                                         description="Instances to describe (none: all)")
    static: bool = Field(False, description="Configuration only: do not ask the nodes")
    use_locking: bool = Field(False, description="Take shared instance locks")


class OpInstanceSetParams(OpCode):
    """Change an instance's parameters (next start); returns (param, new value) pairs."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = list[tuple[str, Any]]
    instance_name: NonEmptyStr = Field(description="Instance to change")
    beparams: dict[str, Any] = Field(default_factory=dict,
                                     description="Backend parameters; \"default\" resets one")
    hvparams: dict[str, Any] = Field(default_factory=dict,
                                     description="Hypervisor parameters; \"default\" resets"
                                                 " one")
    osparams: dict[str, Any] = Field(default_factory=dict,
                                     description="OS parameters; \"default\" resets one")
    force: bool = Field(False, description="Apply even where checks advise against it")


# --- backup ------------------------------------------------------------------


class OpBackupPrepare(OpCode):
    """Prepare an export; in remote mode returns handshake, key name and signed CA."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = RemoteExportInfo | None
    instance_name: NonEmptyStr = Field(description="Instance to be exported")
    mode: Literal["local", "remote"] = Field(description="Export mode to prepare for")


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
    instance_name: NonEmptyStr = Field(description="Instance to export")
    target_node: NonEmptyStr | Annotated[list[RemoteDiskTarget],
                                         Field(max_length=limits.DISKS.maximum)] = Field(
        description="local: the node that receives the export; remote: one destination"
                    " [host, port, magic, hmac, salt] per disk")
    shutdown: bool = Field(True, description="Stop the instance for the copy (restarted"
                                             " after); false: copy live from snapshots")
    shutdown_timeout: Timeout = Field(constants.DEFAULT_SHUTDOWN_TIMEOUT,
                                      description="Seconds to wait for a clean shutdown")
    remove_instance: bool = Field(False, description="Remove the instance after a"
                                                     " successful export")
    ignore_remove_failures: bool = Field(
        False, description="Succeed even if removing the instance fails")
    mode: Literal["local", "remote"] = Field(
        constants.EXPORT_MODE_LOCAL,
        description="local: to a node of this cluster; remote: to another cluster")
    x509_key_name: Annotated[list[Any], Field(strict=False)] | None = Field(
        None, description="remote: the signed key name OpBackupPrepare returned")
    destination_x509_ca: str | None = Field(
        None, description="remote: the destination cluster's signed X509 CA")
    compress: NonEmptyStr = Field(constants.IEC_NONE,
                                  description="Compression tool of the dump files")
    long_sleep: bool = Field(False, description="Tests: sleep inside the copy")
    keep_generations: bool = Field(
        False, description="Keep the replaced export as an older generation (scheduled"
                           " exports) instead of deleting it (Ganeti's semantics)")
    bwlimit: Annotated[int, Field(ge=0)] | None = Field(
        None, description="KiB/s for this export (0: none; None: the cluster's backup"
                          " default)")
    ionice_class: Literal["best-effort", "idle"] | None = Field(
        None, description="I/O class of the copy on both nodes (None: the cluster's"
                          " backup default)")
    ionice_level: Annotated[int, Field(ge=0, le=7)] | None = Field(
        None, description="I/O level within best-effort (None: the cluster's default)")
    note: str | None = Field(None, description="local: free-text note stored with the new"
                                               " export (see OpBackupSetGenerationParams)")
    full: bool = Field(False, description="local: read, send and store every disk whole;"
                                          " otherwise only what changed since the newest"
                                          " export on the target node")

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
    """The exports on each node, Ganeti's format: names, or False for a silent node."""

    OP_RESULT = dict[str, list[str] | Literal[False]]
    nodes: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to ask (none: all online)")
    use_locking: bool = Field(False, description="Take shared node locks")


class OpBackupRemove(OpCode):
    """Remove the newest export of an instance; returns the nodes it was removed from."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = list[str]
    instance_name: NonEmptyStr = Field(description="Instance (or export) name")


# --- scheduled exports and retention (ganeti.cmdlib.backup_schedule) ----------


class OpBackupListGenerations(OpCode):
    """Every export generation with timestamp and sizes (QueryExports stays as is)."""

    OP_RESULT = GenerationList
    nodes: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to ask (none: all online)")
    instances: list[NonEmptyStr] = Field(default_factory=list,
                                         description="Instances to list (none: all)")


class OpBackupPrune(OpCode, RetentionRules):
    """Apply a retention policy to the generations of instances (all if none named)."""

    OP_DSC_FIELD = "instances"
    OP_RESULT = PrunePlan
    instances: list[NonEmptyStr] = Field(default_factory=list,
                                         description="Instances to prune (none: all)")
    nodes: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to prune on (none: all online)")


class OpBackupRemoveGeneration(OpCode):
    """Remove one older export generation (the newest: OpBackupRemove)."""

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = list[str]
    instance_name: NonEmptyStr = Field(description="Instance (or export) name")
    generation: NonEmptyStr = Field(description="Generation to remove")
    nodes: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to look on (none: all online)")


class OpBackupSetGenerationParams(OpCode):
    """Protect/unprotect an export generation or set its note (None: unchanged).

    A protected generation is skipped by prune and cannot be removed until it
    is unprotected.  Returns one entry per copy changed.
    """

    OP_DSC_FIELD = "instance_name"
    OP_RESULT = list[GenerationChange]
    instance_name: NonEmptyStr = Field(description="Instance (or export) name")
    generation: NonEmptyStr | None = Field(None, description="Generation (None: the"
                                                             " newest export)")
    nodes: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to look on (none: all online)")
    protected: bool | None = Field(None, description="Protect from prune and removal")
    note: str | None = Field(None, description="Free-text note")


class OpBackupVerify(OpCode):
    """Re-hash export dumps against their checksums and block indexes; record the result.

    Every bad block is reported by disk and offset, and the outcome is stored
    with each generation (its sidecar), where base selection and ``gnt-backup
    list -g`` read it.
    """

    OP_DSC_FIELD = "exports"
    OP_RESULT = VerifyReport
    exports: list[NonEmptyStr] = Field(
        default_factory=list, description="INSTANCE (every generation) or"
                                          " INSTANCE@GENERATION (none: every export)")
    nodes: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Nodes to look on (none: all online)")
    newest_only: bool = Field(False, description="Only the newest export of each instance"
                                                 " (scheduled verifies)")
    fail_on_problems: bool = Field(
        False, description="Fail the job when anything is bad (scheduled verifies, so the"
                           " run reports it); otherwise the result says it")


class OpBackupScheduleAdd(OpCode, objects.ScheduleSpec):
    """Add a scheduled export; the fields are ScheduleSpec's.  Returns its name."""

    OP_DSC_FIELD = "name"
    OP_RESULT = str
    name: objects.ScheduleName = Field(description="Schedule name")


class OpBackupScheduleModify(OpCode):
    """Change the given fields of a schedule (None: unchanged); returns their names.

    Every ScheduleSpec field, optional.  ``overrides`` is merged into the
    schedule's; a None value in it drops that override (back to the cluster
    default).
    """

    OP_DSC_FIELD = "name"
    OP_RESULT = list[str]
    name: objects.ScheduleName = Field(description="Schedule to change")
    _optional_view(objects.ScheduleSpec, locals())

    def changes(self) -> dict[str, Any]:
        """The ScheduleSpec fields given (not None)."""
        return {name: getattr(self, name) for name in objects.ScheduleSpec.model_fields
                if getattr(self, name) is not None}


class OpBackupScheduleRemove(OpCode):
    """Remove a scheduled export (its exports stay)."""

    OP_DSC_FIELD = "name"
    OP_RESULT = bool
    name: NonEmptyStr = Field(description="Schedule to remove")


class OpBackupScheduleQuery(OpCode):
    """The schedules as stored in the configuration."""

    OP_RESULT = list[objects.BackupSchedule]
    names: list[NonEmptyStr] = Field(default_factory=list,
                                     description="Schedules to return (none: all)")


# --- tags ---------------------------------------------------------------------


# the kinds of objects carrying tags (constants.TAG_*, LUXI's QueryTags kinds)
TagKind = Literal["cluster", "instance", "node", "nodegroup", "network"]


def _valid_tag(value: Any) -> Any:
    problem = limits.tag_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


ValidTag = Annotated[str, AfterValidator(_valid_tag)]
ValidTagList = Annotated[list[ValidTag], Field(max_length=limits.TAGS.maximum)]


class OpTagsGet(OpCode):
    """The tags of the cluster or of one node, instance, node group or network (sorted)."""

    OP_DSC_FIELD = "name"
    OP_RESULT = list[str]
    kind: TagKind = Field(description="Kind of the object: cluster, instance, node,"
                                      " nodegroup or network")
    name: str | None = Field(None, description="The object's name (none for the cluster)")
    use_locking: bool = Field(False, description="Take a shared lock on the object")


class OpTagsSet(OpCode):
    """Add tags to the cluster or to one node, instance or node group."""

    OP_DSC_FIELD = "name"
    OP_RESULT = NoneType
    kind: TagKind = Field(description="Kind of the object: cluster, instance, node,"
                                      " nodegroup or network")
    name: str | None = Field(None, description="The object's name (none for the cluster)")
    tags: ValidTagList = Field(default_factory=list,
                               description="Tags to add (letters, digits and .+*/:@-;"
                                           " 1..128 characters each)")


class OpTagsDel(OpCode):
    """Remove tags from the cluster or from one node, instance or node group; each
    must be there."""

    OP_DSC_FIELD = "name"
    OP_RESULT = NoneType
    kind: TagKind = Field(description="Kind of the object: cluster, instance, node,"
                                      " nodegroup or network")
    name: str | None = Field(None, description="The object's name (none for the cluster)")
    tags: ValidTagList = Field(default_factory=list, description="Tags to remove")


def all_op_ids() -> list[str]:
    return sorted(OPCODE_REGISTRY)


# --- reference documentation -----------------------------------------------------------

_BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
           (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"),
           (annotated_types.MinLen, "min_length", "length >="),
           (annotated_types.MaxLen, "max_length", "length <="))


def _bounds_text(metadata: list[Any]) -> str:
    parts = []
    for item in metadata:
        for sub in (item.metadata if isinstance(item, FieldInfo) else [item]):
            for kind, attr, sign in _BOUNDS:
                if isinstance(sub, kind):
                    parts.append(f"{sign} {getattr(sub, attr):,}")
    return f" ({', '.join(parts)})" if parts else ""


def type_text(tp: Any) -> str:
    """An annotation as the reference shows it: ``list[DiskSpec] (length <= 16)``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is NoneType or tp is None:
        return "null"
    if tp is Any:
        return "any"
    if origin is Annotated:
        return type_text(args[0]) + _bounds_text(list(args[1:]))
    if origin in (Union, types.UnionType):
        return " \\| ".join(type_text(a) for a in args)
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if info.default_factory is not None and not isinstance(value, (list, dict, BaseModel)):
        return "generated"  # a new uuid, the current time
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value)}`"


def _field_rows(fields: dict[str, FieldInfo]) -> list[str]:
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, info in fields.items():
        kind = type_text(info.annotation) + _bounds_text(list(info.metadata))
        rows.append(f"| `{name}` | {kind} | {_default_text(info)} |"
                    f" {info.description or ''} |")
    return rows


def _compat_rows(op_id: str, cls: type[OpCode]) -> list[str]:
    """How the fields Ganeti 3.0 sends for ``op_id`` are treated (opcodes_compat)."""
    if op_id not in opcodes_compat.GANETI3_FIELDS:
        return []
    rules = opcodes_compat.GANETI3_FIELDS[op_id]
    # plain implemented fields by name; those mapping 3.0 values in the table below
    ours = [name for name, rule in rules.items()
            if isinstance(rule, opcodes_compat.Ours) and not rule.values]
    others = {name: rule for name, rule in rules.items() if name not in ours}
    lines = ["", "Ganeti 3.0 has this opcode too."]
    if ours:
        lines += [f"3.0 fields implemented here: {', '.join(f'`{n}`' for n in ours)}."]
    if others:
        lines += ["Its other fields:", "", "| field | 3.0 default | treatment |",
                  "|---|---|---|"]
        lines += [f"| `{name}` | `{json.dumps(rule.default)}` | {rule.describe()} |"
                  for name, rule in others.items()]
    return lines


def _spec_compat_rows(name: str) -> list[str]:
    rules = opcodes_compat.SPEC_FIELDS.get(name)
    if not rules:
        return []
    return ["", "Ganeti 3.0's other keys:", "", "| key | treatment |", "|---|---|",
            *[f"| `{key}` | {rule.describe()} |" for key, rule in rules.items()]]


def _doc(obj: Any) -> str:
    return " ".join((obj.__doc__ or "").split())


def _nested_types(tp: Any, found: dict[str, Any]) -> None:
    for arg in typing.get_args(tp):
        _nested_types(arg, found)
    if isinstance(tp, type) and (issubclass(tp, BaseModel) or is_typeddict(tp)) \
            and not issubclass(tp, OpCode) and tp.__name__ not in found:
        found[tp.__name__] = tp
        hints = (tp.model_fields.values() if issubclass(tp, BaseModel)
                 else typing.get_type_hints(tp).values())
        for hint in hints:
            _nested_types(hint.annotation if isinstance(hint, FieldInfo) else hint, found)


def project_opcodes() -> dict[str, type[OpCode]]:
    """The opcodes this module defines (tests register opcodes of their own)."""
    return {op_id: cls for op_id, cls in OPCODE_REGISTRY.items() if cls.__module__ == __name__}


def render_markdown() -> str:
    """doc/opcodes.md (generated, never edited by hand)."""
    common = set(OpCode.model_fields)
    lines = ["# Opcode reference", "",
             "Generated from `lib/opcodes.py` by `python -m ganeti.opcodes`; do not edit.",
             "Every opcode is a JSON object with `OP_ID` and the fields below; unknown",
             "fields are refused.  The result is what the job's opresult holds on success.",
             "",
             "An opcode Ganeti 3.0 also has accepts every field 3.0 sends (its clients",
             "send them all, the unset ones too); its section says how each is treated.",
             "A field 3.0 sends as None (unset) means our default where ours takes no",
             "None.  A feature we lack is refused unless its field is at 3.0's default",
             "(None, [] and {} count as one); a `*_uuid` field is checked against its",
             "name field before the LU runs: an unknown uuid fails with ECODE_NOENT, a",
             "uuid and a name of different objects with ECODE_INVAL, and a uuid alone",
             "fills the name in.  Fields Ganeti 3.0 does not know either are refused.",
             "", "## Fields common to every opcode", "",
             *_field_rows(OpCode.model_fields)]
    nested: dict[str, Any] = {}
    for op_id, cls in project_opcodes().items():
        lines += ["", f"## {op_id}", "", f"`{cls.__name__}`: {_doc(cls)}", ""]
        if cls.OP_SECRET_FIELDS:
            lines += [f"Secret fields (never stored): {', '.join(cls.OP_SECRET_FIELDS)}.",
                      ""]
        own = {n: f for n, f in cls.model_fields.items() if n not in common}
        lines += _field_rows(own) if own else ["No fields of its own."]
        lines += ["", f"Result: {type_text(cls.OP_RESULT)}"]
        lines += _compat_rows(op_id, cls)
        for info in own.values():
            _nested_types(info.annotation, nested)
        _nested_types(cls.OP_RESULT, nested)
    lines += ["", "## Nested types"]
    for name, tp in sorted(nested.items()):
        lines += ["", f"### {name}", "", _doc(tp), ""]
        if issubclass(tp, BaseModel):
            lines += _field_rows(tp.model_fields)
            lines += _spec_compat_rows(name)
        else:
            lines += ["| key | type |", "|---|---|"]
            lines += [f"| `{k}` | {type_text(v)} |"
                      for k, v in typing.get_type_hints(tp).items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
