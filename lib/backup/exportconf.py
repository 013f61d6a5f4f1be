"""The export description, ``config.ini`` (Ganeti-compatible layout, doc/export-format.md).

An export directory holds ``config.ini`` plus one raw (sparse) dump file per
disk.  Sections: [export] (version, timestamp, source, os, compression),
[instance] (name, memory, vcpus, disk_template, hypervisor, tags, nics,
disks), [hypervisor], [backend], [os].  We add ``disk<N>_checksum`` (see
``ganeti.transfer.checksum``); Ganeti ignores keys it does not know.

Parsing treats the file as hostile: every value is checked, counts must
match, and dump names must be plain file names (no path components).
"""

from __future__ import annotations

import configparser
import io
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ganeti import constants, errors, limits

SECTION_EXPORT = "export"
SECTION_INSTANCE = "instance"
SECTION_HV = "hypervisor"
SECTION_BE = "backend"
SECTION_OS = "os"

_DUMP_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
# every cap is the one create and export apply (ganeti.limits)
_MAX_FILE_BYTES = limits.EXPORT_CONFIG.maximum


@dataclass
class ExportDisk:
    dump: str
    size: int                  # MiB
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
    source: str
    timestamp: int
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
    hvparams: dict[str, str] = field(default_factory=dict)
    beparams: dict[str, str] = field(default_factory=dict)
    osparams: dict[str, str] = field(default_factory=dict)


def dump_name(index: int) -> str:
    return f"disk{index}.img"


def _text(value: Any) -> str:
    # Ganeti writes Python's str() of values, "None" included; keep that so its
    # tools read our exports and ours read theirs
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def render(info: ExportInfo) -> str:
    """The config.ini text for ``info``."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser[SECTION_EXPORT] = {
        "version": str(info.version), "timestamp": str(info.timestamp),
        "source": info.source, "os": info.os, "compression": info.compression,
    }
    inst: dict[str, str] = {
        "name": info.name, "hypervisor": info.hypervisor,
        "disk_template": info.disk_template, "tags": _text(info.tags),
    }
    if info.maxmem is not None:
        inst.update(maxmem=str(info.maxmem), memory=str(info.maxmem))
    if info.minmem is not None:
        inst["minmem"] = str(info.minmem)
    if info.vcpus is not None:
        inst["vcpus"] = str(info.vcpus)
    inst["nic_count"] = str(len(info.nics))
    for idx, nic in enumerate(info.nics):
        for key in ("mac", "ip", "mode", "link", "network", "name", "vlan"):
            inst[f"nic{idx}_{key}"] = _text(getattr(nic, key))
    inst["disk_count"] = str(len(info.disks))
    for idx, disk in enumerate(info.disks):
        inst[f"disk{idx}_ivname"] = disk.ivname or f"disk/{idx}"
        inst[f"disk{idx}_dump"] = disk.dump
        inst[f"disk{idx}_size"] = str(disk.size)
        inst[f"disk{idx}_name"] = _text(disk.name)
        inst[f"disk{idx}_mode"] = disk.mode
        if disk.checksum:
            inst[f"disk{idx}_checksum"] = disk.checksum
    parser[SECTION_INSTANCE] = inst
    for section, params in ((SECTION_HV, info.hvparams), (SECTION_BE, info.beparams),
                            (SECTION_OS, info.osparams)):
        parser[section] = {k: _text(v) for k, v in sorted(params.items())}
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _bad(message: str) -> errors.OpPrereqError:
    return errors.OpPrereqError(f"Invalid export configuration: {message}",
                                errors.ECODE_INVAL)


def _opt(section: configparser.SectionProxy, key: str) -> str | None:
    value = section.get(key)
    return None if value in (None, "None", "") else value


def _int(section: configparser.SectionProxy, key: str, *, required: bool = True,
         minimum: int = 0, maximum: int | None = None) -> int | None:
    raw = section.get(key)
    if raw is None or raw in ("", "None"):
        if required:
            raise _bad(f"[{section.name}] {key} is missing")
        return None
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
             required: bool = True) -> int | None:
    value = _int(section, key, required=required, minimum=limit.minimum)
    if value is not None and value > limit.maximum:
        raise _bad(f"[{section.name}] {key}={value} exceeds the limit {limit.maximum}"
                   f" {limit.unit}")
    return value


def _check_limit(limit: limits.Limit, value: Any, what: str) -> None:
    try:
        limit.check(value, what)
    except errors.OpPrereqError as err:
        raise _bad(str(err.args[0])) from None


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
    os_name = exp.get("os", "")
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
        name=name, source=exp.get("source", ""), timestamp=_int(exp, "timestamp") or 0,
        os=os_name, compression=compression, version=version,
        hypervisor=inst.get("hypervisor", ""), disk_template=inst.get("disk_template", ""),
        maxmem=_limited(inst, "maxmem", limits.MEMORY, required=False)
        or _limited(inst, "memory", limits.MEMORY, required=False),
        minmem=_limited(inst, "minmem", limits.MEMORY, required=False),
        vcpus=_limited(inst, "vcpus", limits.VCPUS, required=False),
        tags=tags,
    )
    disk_count = _limited(inst, "disk_count", limits.DISKS) or 0
    dumps: set[str] = set()
    for idx in range(disk_count):
        dump = inst.get(f"disk{idx}_dump")
        if dump is None:
            raise _bad(f"[instance] disk{idx}_dump is missing")
        if not _DUMP_NAME_RE.match(dump) or dump in (constants.EXPORT_CONF_FILE,):
            raise _bad(f"[instance] disk{idx}_dump {dump!r} is not a plain file name")
        if dump in dumps:
            raise _bad(f"[instance] disk{idx}_dump {dump!r} is used twice")
        dumps.add(dump)
        size = _limited(inst, f"disk{idx}_size", limits.DISK_SIZE)
        assert size is not None
        mode = inst.get(f"disk{idx}_mode", constants.DISK_RDWR)
        if mode not in (constants.DISK_RDWR, constants.DISK_RDONLY):
            raise _bad(f"[instance] disk{idx}_mode {mode!r} is not rw or ro")
        info.disks.append(ExportDisk(
            dump=dump, size=size, ivname=inst.get(f"disk{idx}_ivname", f"disk/{idx}"),
            name=_opt(inst, f"disk{idx}_name"), mode=mode,
            checksum=_opt(inst, f"disk{idx}_checksum")))
    nic_count = _limited(inst, "nic_count", limits.NICS, required=False) or 0
    for idx in range(nic_count):
        def nic_value(key: str, idx: int = idx) -> str | None:
            return _opt(inst, f"nic{idx}_{key}")
        info.nics.append(ExportNic(
            mac=nic_value("mac") or "", ip=nic_value("ip"), mode=nic_value("mode"),
            link=nic_value("link"), network=nic_value("network"), name=nic_value("name"),
            vlan=nic_value("vlan")))
    for section, target in ((SECTION_HV, info.hvparams), (SECTION_BE, info.beparams),
                            (SECTION_OS, info.osparams)):
        if parser.has_section(section):
            target.update(parser[section].items())
    return info


def typed_value(text: str) -> Any:
    """A parameter value read back from config.ini (ints and booleans restored)."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        return text


def from_instance(instance: Any, cluster: Any, source_node: str,
                  checksums: list[str | None], timestamp: int | None = None,
                  compression: str = constants.IEC_NONE) -> ExportInfo:
    """Describe ``instance`` (objects.Instance) as exported from ``source_node``."""
    be = cluster.fill_beparams(instance)
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
    )
