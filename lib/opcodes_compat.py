"""Ganeti 3.0's opcode fields: the table saying how each is treated here.

A Ganeti 3.0 client sends every field of an opcode, the unset ones too (its
``OpCode.__getstate__`` after ``__init__`` filled in the defaults).  For each
opcode whose ``OP_ID`` Ganeti 3.0.2 also has, :data:`GANETI3_FIELDS` lists
every field 3.0 knows, with 3.0's default and what we do with it:

* :class:`Ours`: one of our own fields; a None (3.0's "unset") where our
  field takes no None means our default.
* :class:`Unsupported`: a feature we lack; accepted at 3.0's default, refused
  otherwise (OpPrereqError ECODE_INVAL naming ``OP_X.field``).
* :class:`Ignored`: dropped whatever the value, where that loses nothing a
  user asked for (``why`` says why).
* :class:`UuidOf`: the uuid of one of our name fields; kept with the opcode
  and resolved against the configuration before the LU runs
  (:func:`resolve_uuids`, called by the processor).

The disk and NIC dicts inside opcodes get the same treatment from
:data:`SPEC_FIELDS` (3.0's keys we lack, or spell otherwise: :class:`Renamed`).
Fields no table names are left to the model, which refuses unknown ones.
doc/opcodes.md shows both tables (``ganeti.opcodes.render_markdown``).
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

from ganeti import errors

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from ganeti.objects import Instance, Node
    from ganeti.opcodes import OpCode


@dataclass(frozen=True)
class Ours:
    """A field we implement under 3.0's name; ``values`` maps 3.0 values we spell
    otherwise to ours (``why`` says what the difference is)."""

    default: Any = None
    values: tuple[tuple[Any, Any], ...] = ()
    why: str = ""

    def describe(self) -> str:
        if not self.values:
            return "implemented"
        pairs = ", ".join(f"`{theirs}` means `{ours}`" for theirs, ours in self.values)
        return f"implemented; {pairs} ({self.why})"


@dataclass(frozen=True)
class Unsupported:
    """A 3.0 feature we lack: only 3.0's default is accepted."""

    default: Any
    feature: str

    def describe(self) -> str:
        return f"refused unless at its default: {self.feature} is not supported"


@dataclass(frozen=True)
class Ignored:
    """A 3.0 field dropped whatever its value; ``why`` says why nothing is lost."""

    default: Any
    why: str

    def describe(self) -> str:
        return f"ignored: {self.why}"


@dataclass(frozen=True)
class UuidOf:
    """The uuid (or, ``many``: the uuids) of the objects a name field names."""

    name_field: str
    kind: Literal["node", "instance"]
    many: bool = False
    default: Any = None

    def describe(self) -> str:
        return (f"{self.kind} uuid{'s' if self.many else ''} of `{self.name_field}`:"
                " checked against it, fills it when it is not given")


@dataclass(frozen=True)
class Renamed:
    """A key of a nested spec we implement under another name."""

    name: str
    default: Any = None

    def describe(self) -> str:
        return f"the older name of `{self.name}`"


Rule = Ours | Unsupported | Ignored | UuidOf
SpecRule = Unsupported | Renamed

# the fields 3.0's base OpCode gives every opcode (ours are OpCode's common fields)
COMMON_FIELDS: dict[str, Rule] = {
    "dry_run": Ours(None),
    "debug_level": Ours(None),
    "priority": Ours(0),
    "depends": Ours(None),
    "comment": Ours(None),
    "reason": Ours([]),
}

_NO_IPOLICY = "there is no instance policy here, so nothing to ignore"
_NO_CONFLICTS = ("there are no network IP pools here, so no IP conflict to check for"
                 " (or to skip)")
_NO_VARIANTS = ("OS variants are not checked against a list here, so there is nothing"
                " to force")
_INSTANCE = UuidOf("instance_name", "instance")
# 3.0's gzip-fast (gzip -1) and gzip-slow (gzip -9): gzip streams too; we have one level
_COMPRESS = Ours("none", values=(("gzip-fast", "gzip"), ("gzip-slow", "gzip")),
                 why="the stream is gzip either way; there is one compression level"
                     " here")


def _cluster_settings(*names: str) -> dict[str, Rule]:
    """3.0's cluster settings we do not have: all None (unchanged) by default."""
    return {name: Unsupported(None, f"changing the cluster's {name}") for name in names}


GANETI3_FIELDS: dict[str, dict[str, Rule]] = {
    "OP_CLUSTER_QUERY": {},
    "OP_CLUSTER_DESTROY": {},
    "OP_CLUSTER_VERIFY": {
        "debug_simulate_errors": Unsupported(False, "simulating verify errors"),
        "error_codes": Ours(False),
        "skip_checks": Ours([]),
        "ignore_errors": Unsupported([], "downgrading verify errors to warnings"),
        "verbose": Unsupported(False, "verbose verify output"),
        "group_name": Ours(None),
        "verify_clutter": Unsupported(False, "checking for clutter files"),
    },
    "OP_CLUSTER_VERIFY_GROUP": {
        "group_name": Ours(None),
        "debug_simulate_errors": Unsupported(False, "simulating verify errors"),
        "error_codes": Ours(False),
        "skip_checks": Ours([]),
        "ignore_errors": Unsupported([], "downgrading verify errors to warnings"),
        "verbose": Unsupported(False, "verbose verify output"),
        "verify_clutter": Unsupported(False, "checking for clutter files"),
    },
    "OP_CLUSTER_RENEW_CRYPTO": {
        "node_certificates": Unsupported(False, "renewing the node certificates"),
        "renew_ssh_keys": Unsupported(False, "renewing the SSH keys"),
        "ssh_key_type": Unsupported(None, "choosing the SSH key type"),
        "ssh_key_bits": Unsupported(None, "choosing the SSH key size"),
        "verbose": Unsupported(False, "verbose renewal output"),
        "debug": Unsupported(False, "debug renewal output"),
    },
    "OP_CLUSTER_SET_PARAMS": {
        "force": Ignored(False, "every setting 3.0's force overrides a check for is"
                                " refused here, so it has nothing to override"),
        **_cluster_settings(
            "hv_state", "disk_state", "vg_name", "enabled_hypervisors", "hvparams",
            "beparams", "os_hvp", "osparams", "osparams_private_cluster", "diskparams",
            "candidate_pool_size", "max_running_jobs", "max_tracked_jobs", "uid_pool",
            "add_uids", "remove_uids", "maintain_node_health", "prealloc_wipe_disks",
            "nicparams", "ndparams", "ipolicy", "drbd_helper", "default_iallocator",
            "default_iallocator_params", "mac_prefix", "master_netdev", "master_netmask",
            "reserved_lvs", "hidden_os", "blacklisted_os", "use_external_mip_script",
            "enabled_disk_templates", "modify_etc_hosts", "file_storage_dir",
            "shared_file_storage_dir", "gluster_storage_dir", "install_image",
            "instance_communication_network", "zeroing_image", "compression_tools",
            "enabled_user_shutdown", "enabled_data_collectors",
            "data_collector_interval"),
    },
    "OP_TEST_DELAY": {
        "duration": Ours(None),
        "on_master": Ours(True),
        "on_nodes": Ours([]),
        "on_node_uuids": UuidOf("on_nodes", "node", many=True),
        "repeat": Ours(0),
        "interruptible": Unsupported(False, "interrupting the delay through a socket"),
        "no_locks": Ignored(True, "3.0's LUTestDelay locks the nodes it sleeps on"
                                  " whatever no_locks says, and so do we"),
    },
    "OP_NODE_ADD": {
        "node_name": Ours(None),
        "hv_state": Unsupported(None, "setting the node's hypervisor state"),
        "disk_state": Unsupported(None, "setting the node's disk state"),
        "primary_ip": Ours(None),
        "secondary_ip": Ours(None),
        "readd": Ours(False),
        "group": Ours(None),
        "master_capable": Ours(None),
        "vm_capable": Ours(None),
        "ndparams": Ours(None),
        "node_setup": Unsupported(False, "setting up the node's SSH by the master"),
    },
    "OP_NODE_REMOVE": {
        "node_name": Ours(None),
        "node_uuid": UuidOf("node_name", "node"),
    },
    "OP_NODE_SET_PARAMS": {
        "node_name": Ours(None),
        "node_uuid": UuidOf("node_name", "node"),
        "force": Ours(False),
        "hv_state": Unsupported(None, "setting the node's hypervisor state"),
        "disk_state": Unsupported(None, "setting the node's disk state"),
        "master_candidate": Ours(None),
        "offline": Ours(None),
        "drained": Ours(None),
        "auto_promote": Ours(False),
        "master_capable": Unsupported(None, "changing master_capable"),
        "vm_capable": Unsupported(None, "changing vm_capable"),
        "secondary_ip": Unsupported(None, "changing the secondary IP"),
        "ndparams": Unsupported(None, "changing node parameters"),
        "powered": Unsupported(None, "recording the power state (out-of-band"
                                     " management)"),
    },
    "OP_INSTANCE_CREATE": {
        "instance_name": Ours(None),
        "force_variant": Ignored(False, _NO_VARIANTS),
        "wait_for_sync": Ours(True),
        "name_check": Ours(True),
        "ignore_ipolicy": Ours(False),
        "opportunistic_locking": Unsupported(False, "opportunistic locking for the"
                                                    " allocator"),
        "beparams": Ours({}),
        "disks": Ours(None),
        "disk_template": Ours(None),
        "group_name": Unsupported(None, "choosing the node group"),
        "file_driver": Unsupported(None, "choosing the file disk driver"),
        "file_storage_dir": Ours(None),
        "hvparams": Ours({}),
        "hypervisor": Ours(None),
        "iallocator": Ours(None),
        "identify_defaults": Ours(False),
        "ip_check": Ours(True),
        "conflicts_check": Ignored(True, _NO_CONFLICTS),
        "mode": Ours(None),
        "nics": Ours(None),
        "no_install": Ours(None),
        "osparams": Ours({}),
        "osparams_private": Ours(None),
        "osparams_secret": Unsupported(None, "OS parameters passed to the OS scripts"
                                             " only"),
        "os_type": Ours(None),
        "pnode": Ours(None),
        "pnode_uuid": UuidOf("pnode", "node"),
        "snode": Ours(None),
        "snode_uuid": UuidOf("snode", "node"),
        "source_handshake": Ours(None),
        "source_instance_name": Ours(None),
        "source_shutdown_timeout": Ours(120),
        "source_x509_ca": Ours(None),
        "src_node": Ours(None),
        "src_node_uuid": UuidOf("src_node", "node"),
        "src_path": Ours(None),
        "compress": _COMPRESS,
        "start": Ours(True),
        "forthcoming": Unsupported(False, "forthcoming instances"),
        "commit": Unsupported(False, "committing forthcoming instances"),
        "tags": Ours([]),
        "instance_communication": Unsupported(False, "instance communication"),
        "helper_startup_timeout": Unsupported(None, "the OS install helper VM"),
        "helper_shutdown_timeout": Unsupported(None, "the OS install helper VM"),
    },
    "OP_INSTANCE_REMOVE": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "shutdown_timeout": Ours(120),
        "ignore_failures": Ours(False),
    },
    "OP_INSTANCE_STARTUP": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "force": Ours(False),
        "ignore_offline_nodes": Ours(False),
        "hvparams": Ours({}),
        "beparams": Ours({}),
        "no_remember": Ours(False),
        "startup_paused": Ours(False),
        "shutdown_timeout": Ignored(120, "3.0 uses it only to clean up an instance its"
                                         " user shut down from inside, which is not"
                                         " tracked here"),
    },
    "OP_INSTANCE_SHUTDOWN": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "force": Ours(False),
        "ignore_offline_nodes": Ours(False),
        "timeout": Ours(120),
        "no_remember": Ours(False),
        "admin_state_source": Unsupported(None, "recording who shut the instance down"),
    },
    "OP_INSTANCE_REBOOT": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "shutdown_timeout": Ours(120),
        "ignore_secondaries": Ours(False),
        "reboot_type": Ours(None),
    },
    "OP_INSTANCE_QUERY_DATA": {
        "use_locking": Ours(False),
        "instances": Ours([]),
        "static": Ours(False),
    },
    "OP_INSTANCE_SET_PARAMS": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "force": Ours(False),
        "force_variant": Ignored(False, _NO_VARIANTS),
        "ignore_ipolicy": Ignored(False, _NO_IPOLICY),
        "nics": Unsupported([], "adding, removing or changing NICs"),
        "disks": Unsupported([], "adding, removing or changing disks"),
        "beparams": Ours({}),
        "runtime_mem": Unsupported(None, "changing the memory of a running instance"),
        "hvparams": Ours({}),
        "disk_template": Unsupported(None, "converting the disk template"),
        "ext_params": Unsupported({}, "ext storage parameters"),
        "file_driver": Unsupported(None, "choosing the file disk driver"),
        "file_storage_dir": Unsupported(None, "moving file disks"),
        "pnode": Unsupported(None, "changing the primary node"),
        "pnode_uuid": Unsupported(None, "changing the primary node"),
        "remote_node": Unsupported(None, "choosing a new secondary node"),
        "remote_node_uuid": Unsupported(None, "choosing a new secondary node"),
        "iallocator": Unsupported(None, "allocator scripts"),
        "os_name": Unsupported(None, "changing the OS"),
        "osparams": Ours({}),
        "osparams_private": Unsupported(None, "changing private OS parameters"),
        "wait_for_sync": Ignored(True, "disk changes are refused here, so there is no"
                                       " synchronisation to wait for"),
        "offline": Unsupported(None, "marking the instance offline"),
        "conflicts_check": Ignored(True, _NO_CONFLICTS),
        "hotplug": Unsupported(False, "hotplugging devices"),
        "hotplug_if_possible": Ignored(False, "changes apply at the next start here,"
                                              " which is what 3.0 does when hotplug is"
                                              " not possible"),
        "instance_communication": Unsupported(None, "instance communication"),
    },
    "OP_BACKUP_PREPARE": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "mode": Ours(None),
    },
    "OP_BACKUP_EXPORT": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
        "compress": _COMPRESS,
        "shutdown_timeout": Ours(120),
        "target_node": Ours(None),
        "target_node_uuid": UuidOf("target_node", "node"),
        "shutdown": Ours(True),
        "remove_instance": Ours(False),
        "ignore_remove_failures": Ours(False),
        "mode": Ours("local"),
        "x509_key_name": Ours(None),
        "destination_x509_ca": Ours(None),
        "zero_free_space": Unsupported(False, "zeroing the disks' free space before the"
                                              " export"),
        "zeroing_timeout_fixed": Unsupported(None, "zeroing the disks' free space"),
        "zeroing_timeout_per_mib": Unsupported(None, "zeroing the disks' free space"),
        "long_sleep": Ours(False),
    },
    "OP_BACKUP_REMOVE": {
        "instance_name": Ours(None),
        "instance_uuid": _INSTANCE,
    },
    "OP_TAGS_GET": {
        "kind": Ours(None),
        "name": Ours(None),
        "use_locking": Ours(False),
    },
    "OP_TAGS_SET": {
        "kind": Ours(None),
        "name": Ours(None),
        "tags": Ours(None),
    },
    "OP_TAGS_DEL": {
        "kind": Ours(None),
        "name": Ours(None),
        "tags": Ours(None),
    },
}


# keys of the disk and NIC dicts (IDISK_PARAMS, INIC_PARAMS) beyond our spec fields
SPEC_FIELDS: dict[str, dict[str, SpecRule]] = {
    "DiskSpec": {
        "access": Unsupported(None, "choosing how the hypervisor accesses the disk"),
        "adopt": Unsupported(None, "adopting an existing volume"),
        "dev_type": Unsupported(None, "a disk template per disk"),
        "metavg": Unsupported(None, "DRBD metadata volume groups"),
        "provider": Unsupported(None, "ext storage providers"),
        "spindles": Unsupported(None, "spindles"),
        "vg": Unsupported(None, "choosing the volume group"),
    },
    "NicSpec": {
        "bridge": Renamed("link"),
    },
}


def split_spec(spec: str, data: Any) -> Any:
    """A disk or NIC dict with 3.0's extra keys handled; ValueError names the key."""
    rules = SPEC_FIELDS.get(spec, {})
    if not isinstance(data, dict) or not rules.keys() & data.keys():
        return data
    out = dict(data)
    for key, rule in rules.items():
        if key not in out:
            continue
        value = out.pop(key)
        if isinstance(rule, Unsupported) and not is_default(value, rule.default):
            raise ValueError(f"{key} is not supported here ({rule.feature})")
        if isinstance(rule, Renamed) and value is not None:
            if out.get(rule.name) not in (None, value):
                raise ValueError(f"{key} {value!r} and {rule.name} {out[rule.name]!r}"
                                 f" differ ({key} is the older name of {rule.name})")
            out[rule.name] = value
    return out


def rules_for(op_id: str) -> dict[str, Rule]:
    """Every 3.0 field of ``op_id`` with its rule (the common ones first)."""
    return {**COMMON_FIELDS, **GANETI3_FIELDS.get(op_id, {})}


_EMPTY: tuple[Any, ...] = (None, [], {})


def is_default(value: Any, default: Any) -> bool:
    """3.0's "unset": its default, where None, [] and {} count as one."""
    if any(value == e and type(value) is type(e) for e in _EMPTY):
        return any(default == e and type(default) is type(e) for e in _EMPTY)
    return type(value) is type(default) and bool(value == default)


def _accepts_none(info: FieldInfo) -> bool:
    tp = info.annotation
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(arg is type(None) for arg in typing.get_args(tp))
    return tp is None or tp is type(None) or tp is Any


def _bad(op_id: str, field: str, problem: str, value: Any) -> errors.OpPrereqError:
    return errors.OpPrereqError(f"Parameter '{op_id}.{field}' {problem} (got {value!r})",
                                errors.ECODE_INVAL)


def _check_uuids(op_id: str, field: str, rule: UuidOf, value: Any) -> None:
    values = value if rule.many and isinstance(value, list) else [value]
    if (rule.many and not isinstance(value, list)) or \
            not all(isinstance(v, str) and v for v in values):
        what = "a list of uuids" if rule.many else "a uuid (non-empty string)"
        raise _bad(op_id, field, f"fails validation: {what} is needed", value)


def split(cls: type[OpCode], fields: dict[str, Any]) -> tuple[dict[str, Any],
                                                               dict[str, Any]]:
    """A 3.0 field dict for ``cls`` -> (the fields for our model, uuids kept aside).

    Unsupported fields set to anything but their default raise OpPrereqError.
    A name field left unset gets its uuid for now (our name lookups take
    uuids too); :func:`resolve_uuids` puts the real name in.
    """
    op_id = cls.OP_ID
    out = dict(fields)
    kept: dict[str, Any] = {}
    for name, rule in rules_for(op_id).items():
        if name not in out:
            continue
        value = out[name]
        if isinstance(rule, Ours):
            mapped = dict(rule.values)
            if isinstance(value, str) and value in mapped:
                out[name] = mapped[value]
            info = cls.model_fields.get(name)
            if value is None and info is not None and not info.is_required() \
                    and not _accepts_none(info):
                del out[name]
            continue
        del out[name]
        if isinstance(rule, Ignored) and value is not None and rule.default is not None \
                and type(value) is not type(rule.default):
            raise _bad(op_id, name, "fails validation: a"
                                    f" {type(rule.default).__name__} is needed", value)
        if isinstance(rule, Unsupported) and not is_default(value, rule.default):
            raise _bad(op_id, name, f"is not supported here ({rule.feature}); only"
                                    f" {rule.default!r} is accepted", value)
        if isinstance(rule, UuidOf) and not is_default(value, rule.default):
            _check_uuids(op_id, name, rule, value)
            kept[name] = value
            if out.get(rule.name_field) in _EMPTY:
                out[rule.name_field] = list(value) if rule.many else value
    return out, kept


class ObjectLookup(Protocol):
    """The part of the configuration store uuid resolution reads."""

    def get_node_info(self, uuid: str) -> Node | None: ...

    def get_instance_info(self, uuid: str) -> Instance | None: ...

    def expand_node_name(self, name: str) -> str | None: ...

    def expand_instance_name(self, name: str) -> str | None: ...


def _resolve_one(cfg: ObjectLookup, op_id: str, field: str, rule: UuidOf, uuid: str,
                 name: str | None) -> str:
    if rule.kind == "node":
        obj: Node | Instance | None = cfg.get_node_info(uuid)
        expanded = None if name is None else cfg.expand_node_name(name)
    else:
        obj = cfg.get_instance_info(uuid)
        expanded = None if name is None else cfg.expand_instance_name(name)
    if obj is None:
        raise errors.OpPrereqError(f"Parameter '{op_id}.{field}': no {rule.kind} has the"
                                   f" uuid {uuid!r}", errors.ECODE_NOENT)
    if name is not None and expanded != uuid:
        raise errors.OpPrereqError(
            f"Parameter '{op_id}.{field}': {uuid!r} is {rule.kind} {obj.name!r}, but"
            f" '{op_id}.{rule.name_field}' names {name!r}", errors.ECODE_INVAL)
    return str(obj.name)


def resolve_uuids(op: OpCode, cfg: ObjectLookup) -> None:
    """Check each uuid the opcode came with against its name field and fill the name.

    Unknown uuid: OpPrereqError ECODE_NOENT; uuid and name naming different
    objects: ECODE_INVAL.  A name equal to its uuid is the placeholder
    :func:`split` left and counts as not given.
    """
    op_id = op.OP_ID
    rules = rules_for(op_id)
    for field, value in op.compat_values().items():
        rule = rules.get(field)
        if not isinstance(rule, UuidOf):
            continue
        current = getattr(op, rule.name_field)
        if rule.many:
            names: list[str | None] = list(current or [])
            if names == value:
                names = [None] * len(value)
            elif len(names) != len(value):
                raise errors.OpPrereqError(
                    f"Parameter '{op_id}.{field}' has {len(value)} uuids but"
                    f" '{op_id}.{rule.name_field}' {len(names)} names", errors.ECODE_INVAL)
            resolved: Any = [_resolve_one(cfg, op_id, field, rule, uuid, name)
                             for uuid, name in zip(value, names, strict=True)]
        else:
            given = None if current in (None, "", value) else current
            resolved = _resolve_one(cfg, op_id, field, rule, value, given)
        setattr(op, rule.name_field, resolved)


def check_table(registry: dict[str, type[OpCode]]) -> list[str]:
    """Problems of the table against our models (the unit tests want none)."""
    problems = []
    for op_id, rules in GANETI3_FIELDS.items():
        cls = registry.get(op_id)
        if cls is None:
            problems.append(f"{op_id}: no such opcode here")
            continue
        for name, rule in {**COMMON_FIELDS, **rules}.items():
            ours = name in cls.model_fields
            if isinstance(rule, Ours) != ours:
                problems.append(f"{op_id}.{name}: {'not ' if ours else ''}one of our"
                                f" fields but marked {type(rule).__name__}")
            if isinstance(rule, UuidOf) and rule.name_field not in cls.model_fields:
                problems.append(f"{op_id}.{name}: no name field {rule.name_field}")
    return problems
