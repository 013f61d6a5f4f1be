"""The export description, ``config.ini``, as Ganeti 3.0 writes and reads it (doc/export-format.md).

An export directory holds ``config.ini`` plus one raw (sparse) dump file per
disk.  Sections: [export] (version, timestamp, source, os, compression),
[instance] (name, memory, vcpus, disk_template, hypervisor, tags, nics,
disks), [hypervisor], [backend], [os], [os_private], as Ganeti 3.0's
FinalizeExport writes them.  Our extensions live where Ganeti ignores them:
``disk<N>_checksum``/``disk<N>_mode`` keys, and the section
[ganeti-ng:hypervisor] for hypervisor parameters Ganeti 3.0 would refuse
(its import checks every [hypervisor] key against its own tables).

Parsing treats the file as hostile: every value is checked, counts must
match, and dump names must stay below the export directory.  It accepts what
Ganeti 3.0's import accepts: no timestamp, no counts, ``disk<N>_size = 0``
(the size is the dump's), a disk without a dump (imported blank).
"""

from __future__ import annotations

import configparser
import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ganeti import constants, errors, limits

SECTION_EXPORT = "export"
SECTION_INSTANCE = "instance"
SECTION_HV = "hypervisor"
SECTION_BE = "backend"
SECTION_OS = "os"
SECTION_OS_PRIVATE = "os_private"
# hypervisor parameters Ganeti 3.0 does not know (or would refuse): read back by us only
SECTION_HV_EXT = "ganeti-ng:hypervisor"
# how a live export's snapshots were taken (doc/kvm.md, "Live export"); Ganeti ignores it
SECTION_EXPORT_EXT = "ganeti-ng:export"

_DUMP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_DUMP_DEPTH = 4
# every cap is the one create and export apply (ganeti.limits)
_MAX_FILE_BYTES = limits.EXPORT_CONFIG.maximum


def _one_of(*choices: str) -> Callable[[str], bool]:
    return lambda text: text in choices


def _abs_path(text: str) -> bool:
    # Ganeti's IsNormAbsPath
    return os.path.isabs(text) and os.path.normpath(text) == text


# The hypervisors Ganeti 3.0 knows and, for each of ours, which of our parameters
# its import takes in [hypervisor] and which written values its syntax check
# accepts (3.0's constants.HVS_PARAMETER_TYPES and the hypervisors' PARAMETERS
# tables; test/compat/test_compat_backup.py checks this against 3.0's code).
# A hypervisor missing here (ours: process) keeps [hypervisor] empty.
GANETI3_HV_PARAMETERS: dict[str, dict[str, Callable[[str], bool]]] = {
    constants.HT_KVM: {
        "kvm_path": _abs_path,
        "kvm_flag": _one_of("", "enabled", "disabled"),
        "disk_cache": _one_of("default", "none", "writeback", "writethrough"),
        # 3.0 takes "native" only with disk_cache=none, and no io_uring: ours keeps them
        "disk_aio": _one_of("threads"),
        "machine_version": lambda _text: True,
        # Ganeti's optional files (empty: boot from the disks) and free-form arguments
        "kernel_path": lambda text: not text or _abs_path(text),
        "initrd_path": lambda text: not text or _abs_path(text),
        "kernel_args": lambda _text: True,
    },
    constants.HT_FAKE: {},
}

@dataclass
class ExportDisk:
    dump: str | None           # None: no dump, the import creates the disk blank
    size: int                  # MiB; 0: unknown, the dump's size
    ivname: str = ""
    name: str | None = None
    mode: str = constants.DISK_RDWR
    checksum: str | None = None


@dataclass
class ExportNic:
    mac: str = ""
    ip: str | None = None
    mode: str | None = None
    link: str | None = None
    network: str | None = None
    name: str | None = None
    vlan: str | None = None


@dataclass
class ExportInfo:
    """Everything an import needs, parsed and validated."""

    name: str
    source: str                # a node name (ours) or a node UUID (Ganeti 3.0)
    timestamp: int | None      # None: Ganeti's sample exports have none
    os: str = ""
    compression: str = constants.IEC_NONE
    version: int = constants.EXPORT_VERSION
    hypervisor: str = ""
    disk_template: str = ""
    maxmem: int | None = None
    minmem: int | None = None
    vcpus: int | None = None
    tags: list[str] = field(default_factory=list)
    disks: list[ExportDisk] = field(default_factory=list)
    nics: list[ExportNic] = field(default_factory=list)
    # [hypervisor] and [ganeti-ng:hypervisor] together
    hvparams: dict[str, str] = field(default_factory=dict)
    # None: no [backend] section (an old export: the [instance] keys count)
    beparams: dict[str, str] | None = field(default_factory=dict)
    osparams: dict[str, str] = field(default_factory=dict)
    osparams_private: dict[str, str] = field(default_factory=dict)
    # [ganeti-ng:export] of a live export: consistency, pause_ms (frozen_ms)
    snapshot: dict[str, str] = field(default_factory=dict)

    def backend_params(self) -> dict[str, Any]:
        """The backend parameters to import, typed, as Ganeti 3.0 reads them.

        [backend] when the export has it (``memory`` standing for maxmem and
        minmem not given), else [instance]'s maxmem, minmem and vcpus.
        """
        if self.beparams is None:
            return {k: v for k, v in (("maxmem", self.maxmem), ("minmem", self.minmem),
                                      ("vcpus", self.vcpus)) if v is not None}
        params = {k: typed_value(v) for k, v in self.beparams.items()
                  if v.lower() != "none"}
        memory = params.pop("memory", None)
        if memory is not None:
            params.setdefault("maxmem", memory)
            params.setdefault("minmem", memory)
        return params


def dump_name(index: int) -> str:
    return f"disk{index}.img"


def _text(value: Any) -> str:
    # Ganeti writes Python's str() of values, "None" included; keep that so its
    # tools read our exports and ours read theirs
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def split_hvparams(hypervisor: str, params: dict[str, Any]
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """(what goes to [hypervisor], what goes to [ganeti-ng:hypervisor])."""
    known = GANETI3_HV_PARAMETERS.get(hypervisor, {})
    ganeti: dict[str, str] = {}
    ours: dict[str, str] = {}
    for key, value in sorted(params.items()):
        text = _text(value)
        accepts = known.get(key)
        (ganeti if accepts is not None and accepts(text) else ours)[key] = text
    return ganeti, ours


def render(info: ExportInfo) -> str:
    """The config.ini text for ``info``, in Ganeti 3.0's layout."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser[SECTION_EXPORT] = {
        "version": str(info.version),
        **({} if info.timestamp is None else {"timestamp": str(info.timestamp)}),
        "source": info.source, "os": info.os, "compression": info.compression,
    }
    inst: dict[str, str] = {"name": info.name}
    if info.maxmem is not None:
        inst["maxmem"] = str(info.maxmem)
    if info.minmem is not None:
        inst["minmem"] = str(info.minmem)
    if info.maxmem is not None:
        inst["memory"] = str(info.maxmem)  # for Ganeti before 2.6
    if info.vcpus is not None:
        inst["vcpus"] = str(info.vcpus)
    inst.update(disk_template=info.disk_template, hypervisor=info.hypervisor,
                tags=_text(info.tags))
    for idx, nic in enumerate(info.nics):
        for key in ("mac", "ip", "network", "name", "link", "mode"):
            inst[f"nic{idx}_{key}"] = _text(getattr(nic, key))
        # Ganeti's filled nicparams have vlan "" when unset
        inst[f"nic{idx}_vlan"] = nic.vlan or ""
    inst["nic_count"] = str(len(info.nics))
    for idx, disk in enumerate(info.disks):
        inst[f"disk{idx}_ivname"] = disk.ivname or f"disk/{idx}"
        if disk.dump is not None:
            inst[f"disk{idx}_dump"] = disk.dump
        inst[f"disk{idx}_size"] = str(disk.size)
        inst[f"disk{idx}_name"] = _text(disk.name)
        inst[f"disk{idx}_mode"] = disk.mode
        if disk.checksum:
            inst[f"disk{idx}_checksum"] = disk.checksum
    inst["disk_count"] = str(len(info.disks))
    parser[SECTION_INSTANCE] = inst
    ganeti_hv, our_hv = split_hvparams(info.hypervisor, info.hvparams)
    parser[SECTION_HV] = ganeti_hv
    parser[SECTION_BE] = {k: _text(v) for k, v in sorted((info.beparams or {}).items())}
    parser[SECTION_OS] = {k: _text(v) for k, v in sorted(info.osparams.items())}
    parser[SECTION_OS_PRIVATE] = {k: _text(v)
                                  for k, v in sorted(info.osparams_private.items())}
    if our_hv:
        parser[SECTION_HV_EXT] = our_hv
    if info.snapshot:
        parser[SECTION_EXPORT_EXT] = dict(sorted(info.snapshot.items()))
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _bad(message: str) -> errors.OpPrereqError:
    return errors.OpPrereqError(f"Invalid export configuration: {message}",
                                errors.ECODE_INVAL)


def _is_none(value: str | None) -> bool:
    # Ganeti's reader takes "None" in any case for None
    return value is None or value == "" or value.lower() == "none"


def _opt(section: configparser.SectionProxy, key: str) -> str | None:
    value = section.get(key)
    return None if _is_none(value) else value


def _int(section: configparser.SectionProxy, key: str, *, required: bool = True,
         minimum: int = 0, maximum: int | None = None) -> int | None:
    raw = section.get(key)
    if _is_none(raw):
        if required:
            raise _bad(f"[{section.name}] {key} is missing")
        return None
    assert raw is not None
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"[{section.name}] {key} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise _bad(f"[{section.name}] {key}={value} is out of range")
    return value


def _check_utf8(text: str) -> None:
    """Nodes read config.ini with surrogateescape: undecodable bytes show up here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        line = text.count("\n", 0, err.start) + 1
        raise _bad(f"config.ini is not UTF-8 text (undecodable byte at line {line},"
                   f" character {err.start})") from None


def _limited(section: configparser.SectionProxy, key: str, limit: limits.Limit,
             required: bool = True, minimum: int | None = None) -> int | None:
    value = _int(section, key, required=required,
                 minimum=limit.minimum if minimum is None else minimum)
    if value is not None and value > limit.maximum:
        raise _bad(f"[{section.name}] {key}={value} exceeds the limit {limit.maximum}"
                   f" {limit.unit}")
    return value


def _check_limit(limit: limits.Limit, value: Any, what: str) -> None:
    try:
        limit.check(value, what)
    except errors.OpPrereqError as err:
        raise _bad(str(err.args[0])) from None


def _count(inst: configparser.SectionProxy, key: str, limit: limits.Limit,
           probe: str) -> int:
    """``disk_count``/``nic_count``, or (Ganeti's reader) the keys ``probe`` % N present."""
    if inst.get(key) is not None:
        return _limited(inst, key, limit) or 0
    count = 0
    while count <= limit.maximum and (probe % count) in inst:
        count += 1
    if count > limit.maximum:
        raise _bad(f"[instance] more than {limit.maximum} {limit.key}")
    return count


def _check_dump(idx: int, dump: str) -> None:
    """A dump is a relative path below the export directory (as Ganeti's PathJoin
    insists), made of plain names; never config.ini itself."""
    parts = dump.split("/")
    if (len(parts) > _DUMP_DEPTH or not all(_DUMP_NAME_RE.match(p) for p in parts)
            or dump == constants.EXPORT_CONF_FILE):
        raise _bad(f"[instance] disk{idx}_dump {dump!r} is not a plain file name below"
                   " the export directory")


def parse(text: str) -> ExportInfo:
    """Parse and validate config.ini; OpPrereqError (wrong_input) names what is wrong."""
    if len(text) > _MAX_FILE_BYTES:
        raise _bad(f"file larger than {_MAX_FILE_BYTES} bytes")
    if "\x00" in text:
        raise _bad("file contains NUL bytes")
    _check_utf8(text)
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as err:
        raise _bad(f"not an INI file ({err.__class__.__name__}: {err})") from None
    for section in (SECTION_EXPORT, SECTION_INSTANCE):
        if not parser.has_section(section):
            raise _bad(f"section [{section}] is missing")
    exp = parser[SECTION_EXPORT]
    inst = parser[SECTION_INSTANCE]
    version = _int(exp, "version")
    if version != constants.EXPORT_VERSION:
        raise _bad(f"unsupported export version {version}")
    name = inst.get("name", "")
    if not name or "/" in name or name.startswith("."):
        raise _bad(f"[instance] name {name!r:.80} is not a valid instance name")
    _check_limit(limits.NAME_LENGTH, name, "[instance] name")
    # Ganeti's import reads the OS unconditionally: an export without one is refused
    os_name = exp.get("os")
    if os_name is None:
        raise _bad("[export] os is missing")
    if os_name:
        try:
            limits.check_os_name(os_name, "[export] os")
        except errors.OpPrereqError as err:
            raise _bad(str(err.args[0])) from None
    tags = (inst.get("tags") or "").split()
    _check_limit(limits.TAGS, tags, "[instance] tags")
    for tag in tags:
        _check_limit(limits.TAG_LENGTH, tag, "[instance] tags")
    compression = exp.get("compression", constants.IEC_NONE) or constants.IEC_NONE
    info = ExportInfo(
        name=name, source=exp.get("source", ""), timestamp=_int(exp, "timestamp",
                                                                required=False),
        os=os_name, compression=compression, version=version,
        hypervisor=inst.get("hypervisor", ""), disk_template=inst.get("disk_template", ""),
        maxmem=_limited(inst, "maxmem", limits.MEMORY, required=False)
        or _limited(inst, "memory", limits.MEMORY, required=False),
        minmem=_limited(inst, "minmem", limits.MEMORY, required=False),
        vcpus=_limited(inst, "vcpus", limits.VCPUS, required=False),
        tags=tags,
    )
    dumps: set[str] = set()
    for idx in range(_count(inst, "disk_count", limits.DISKS, "disk%d_size")):
        dump = _opt(inst, f"disk{idx}_dump")
        if dump is not None:
            _check_dump(idx, dump)
            if dump in dumps:
                raise _bad(f"[instance] disk{idx}_dump {dump!r} is used twice")
            dumps.add(dump)
        # 0: Ganeti's "the size of the dump"
        size = _limited(inst, f"disk{idx}_size", limits.DISK_SIZE, minimum=0)
        assert size is not None
        mode = inst.get(f"disk{idx}_mode", constants.DISK_RDWR)
        if mode not in (constants.DISK_RDWR, constants.DISK_RDONLY):
            raise _bad(f"[instance] disk{idx}_mode {mode!r} is not rw or ro")
        info.disks.append(ExportDisk(
            dump=dump, size=size, ivname=inst.get(f"disk{idx}_ivname", f"disk/{idx}"),
            name=_opt(inst, f"disk{idx}_name"), mode=mode,
            checksum=_opt(inst, f"disk{idx}_checksum")))
    for idx in range(_count(inst, "nic_count", limits.NICS, "nic%d_mac")):
        def nic_value(key: str, idx: int = idx) -> str | None:
            return _opt(inst, f"nic{idx}_{key}")
        info.nics.append(ExportNic(
            mac=nic_value("mac") or "", ip=nic_value("ip"), mode=nic_value("mode"),
            link=nic_value("link"), network=nic_value("network"), name=nic_value("name"),
            vlan=nic_value("vlan")))
    for section in (SECTION_HV, SECTION_HV_EXT):
        if parser.has_section(section):
            info.hvparams.update(parser[section].items())
    info.beparams = dict(parser[SECTION_BE].items()) \
        if parser.has_section(SECTION_BE) else None
    for section, target in ((SECTION_OS, info.osparams),
                            (SECTION_OS_PRIVATE, info.osparams_private)):
        if parser.has_section(section):
            target.update(parser[section].items())
    if parser.has_section(SECTION_EXPORT_EXT):
        info.snapshot = dict(parser[SECTION_EXPORT_EXT].items())
    return info


def typed_value(text: str) -> Any:
    """A parameter value read back from config.ini (ints and booleans restored)."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return int(text)
    except ValueError:
        return text


def from_instance(instance: Any, cluster: Any, source_node: str,
                  checksums: list[str | None], timestamp: int | None = None,
                  compression: str = constants.IEC_NONE,
                  snapshot: dict[str, str] | None = None) -> ExportInfo:
    """Describe ``instance`` (objects.Instance) as exported from ``source_node``."""
    # Ganeti 3.0 writes every backend parameter (its defaults where unset)
    be = {**constants.BE_DEFAULTS, **cluster.fill_beparams(instance)}
    return ExportInfo(
        name=instance.name, source=source_node,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        os=instance.os, compression=compression, hypervisor=instance.hypervisor,
        disk_template=instance.disk_template, maxmem=be.get("maxmem"),
        minmem=be.get("minmem"), vcpus=be.get("vcpus"), tags=list(instance.tags),
        disks=[ExportDisk(dump=dump_name(idx), size=disk.size,
                          ivname=disk.iv_name or f"disk/{idx}", name=disk.name,
                          mode=disk.mode, checksum=checksums[idx])
               for idx, disk in enumerate(instance.disks)],
        nics=[ExportNic(mac=nic.mac, ip=nic.ip, mode=nic.nicparams.get("mode"),
                        link=nic.nicparams.get("link"), network=nic.network,
                        name=nic.name, vlan=nic.nicparams.get("vlan"))
              for nic in instance.nics],
        # filled with the cluster defaults, as Ganeti writes them; an import with
        # identify_defaults drops the ones still equal to its cluster's defaults
        hvparams=cluster.fill_hvparams(instance), beparams=be,
        osparams=cluster.fill_osparams(instance),
        osparams_private=dict(getattr(instance, "osparams_private", {})),
        snapshot=dict(snapshot or {}),
    )
