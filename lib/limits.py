"""The limits every entry point agrees on: one table, used by create, modify, export, import.

An instance that create accepts must survive export and import, so each
bound is defined once here and every check (opcode fields, logical units,
the config.ini parser, node procedures) reads it from this table.  The
"Limits" section of doc/reliability.md is generated from it
(``python -m ganeti.limits``) and a unit test keeps the two in step.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, NamedTuple

from ganeti import errors


class Limit(NamedTuple):
    """One bound: the fields it applies to, its range and why it is what it is.

    (A NamedTuple, not a dataclass: the gnt-* commands import this module.)
    """

    key: str
    fields: tuple[str, ...]
    maximum: int
    unit: str
    why: str
    minimum: int = 0

    def check(self, value: Any, what: str | None = None) -> Any:
        """``value`` (a number, or a sized thing for counts/lengths) or OpPrereqError."""
        name = what or self.fields[0]
        if self.unit in (ITEMS, CHARACTERS, BYTES):
            size = len(value)
            if size > self.maximum or size < self.minimum:
                raise errors.OpPrereqError(
                    f"{name}: {size} {self.unit} is outside the limit"
                    f" {self.minimum}..{self.maximum}", errors.ECODE_INVAL)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise errors.OpPrereqError(f"{name}: {value!r:.40} is not a finite number",
                                       errors.ECODE_INVAL)
        if not self.minimum <= value <= self.maximum:
            raise errors.OpPrereqError(
                f"{name}: {value!r:.40} {self.unit} is outside the limit"
                f" {self.minimum}..{self.maximum}", errors.ECODE_INVAL)
        return value


ITEMS = "items"
CHARACTERS = "characters"
BYTES = "bytes"

TIB_IN_MIB = 1024 * 1024

DISKS = Limit("disks", ("disks", "disk_count"), 16, ITEMS,
              "Ganeti's MAX_DISKS; each disk is a transfer, a dump file and hook variables")
NICS = Limit("nics", ("nics", "nic_count"), 8, ITEMS, "Ganeti's MAX_NICS")
TAGS = Limit("tags", ("tags",), 4096, ITEMS, "tags per object, Ganeti's MAX_TAGS_PER_OBJ")
TAG_LENGTH = Limit("tag_length", ("tags[]",), 128, CHARACTERS, "Ganeti's MAX_TAG_LEN",
                   minimum=1)
NAME_LENGTH = Limit("name_length", ("instance_name", "node_name"), 200, CHARACTERS,
                    "room below NAME_MAX (255) for the suffixes node-side paths add"
                    " (staging, trash, snapshots, disk files)", minimum=1)
OS_NAME_LENGTH = Limit("os_name_length", ("os_type",), 64, CHARACTERS,
                       "an OS name is a directory name under the OS search path")
COMMENT = Limit("comment", ("comment",), 4096, CHARACTERS,
                "stored with every job; free text, not a data channel")
REASON_ENTRIES = Limit("reason_entries", ("reason",), 64, ITEMS,
                       "the reason trail grows by one entry per hop")
REASON_TEXT = Limit("reason_text", ("reason[].text",), 1024, CHARACTERS,
                    "one entry of the reason trail")
MEMORY = Limit("memory", ("beparams.maxmem", "beparams.minmem", "beparams.memory"),
               4 * TIB_IN_MIB, "MiB", "4 TiB of guest memory", minimum=1)
VCPUS = Limit("vcpus", ("beparams.vcpus",), 256, "vcpus", "more than any hypervisor here"
              " supports", minimum=1)
DISK_SIZE = Limit("disk_size", ("disks[].size", "disk<N>_size"), 64 * TIB_IN_MIB, "MiB",
                  "64 TiB; its size in bytes fits a signed 64-bit offset", minimum=1)
SHUTDOWN_TIMEOUT = Limit("shutdown_timeout", ("timeout", "shutdown_timeout",
                                             "source_shutdown_timeout"), 24 * 3600,
                         "seconds", "socket and event timeouts overflow beyond time_t;"
                         " a day is already far past any guest's shutdown")
TEST_REPEAT = Limit("test_repeat", ("OP_TEST_DELAY.repeat",), 10_000, "rounds",
                    "a running job cannot be canceled; 2^80 rounds never end")
TEST_DELAY = Limit("test_delay", ("OP_TEST_DELAY.duration",), 24 * 3600, "seconds",
                   "longer sleeps are typos; time.sleep overflows on huge values")
JOB_AGE = Limit("job_age", ("AutoArchiveJobs.age", "AutoArchiveJobs.timeout"),
                100 * 366 * 24 * 3600, "seconds",
                "a century; -1 for age means every finished job", minimum=-1)
JSON_DEPTH = Limit("json_depth", ("LUXI message", "RPC body"), 64, "levels",
                   "deeper nesting only serves to exhaust the decoder's stack")
EXPORT_CONFIG = Limit("export_config", ("config.ini",), 1024 * 1024, BYTES,
                      "an export description; 16 disks and 8 NICs need a few KiB")
RAPI_BODY = Limit("rapi_body", ("RAPI request body",), 4 * 1024 * 1024, BYTES,
                  "the largest RAPI body (an instance creation) is a few KiB; refused"
                  " from Content-Length, before it is read")

TABLE: tuple[Limit, ...] = (
    DISKS, NICS, TAGS, TAG_LENGTH, NAME_LENGTH, OS_NAME_LENGTH, COMMENT, REASON_ENTRIES,
    REASON_TEXT, MEMORY, VCPUS, DISK_SIZE, SHUTDOWN_TIMEOUT, TEST_DELAY, TEST_REPEAT,
    JOB_AGE, JSON_DEPTH, EXPORT_CONFIG, RAPI_BODY,
)
BY_KEY: dict[str, Limit] = {limit.key: limit for limit in TABLE}

MAX_NAME_LENGTH = NAME_LENGTH.maximum

# OS names: a plain directory name, optionally "+variant" (Ganeti's syntax)
OS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\+[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_os_name(value: Any, what: str = "os_type") -> str:
    """Refuse OS names with path components or characters outside OS_NAME_RE."""
    if not isinstance(value, str):
        raise errors.OpPrereqError(f"{what}: {value!r:.40} is not a string",
                                   errors.ECODE_INVAL)
    OS_NAME_LENGTH.check(value, what)
    if not OS_NAME_RE.match(value) or ".." in value:
        raise errors.OpPrereqError(
            f"{what}: {value!r:.80} is not a valid OS name (letters, digits, '.', '_', '-',"
            " one optional '+variant'; no path components)", errors.ECODE_INVAL)
    return value


# Ganeti's TaggableObject.VALID_TAG_RE: letters, digits (Unicode) and .+*/:@-
TAG_RE = re.compile(r"^[\w.+*/:@-]+$")


def tag_problem(tag: Any) -> str | None:
    """Why ``tag`` is no valid tag (Ganeti's rules: a string, 1..128 characters of
    TAG_RE), or None."""
    if not isinstance(tag, str):
        return f"{tag!r:.40} is not a string"
    if not TAG_LENGTH.minimum <= len(tag) <= TAG_LENGTH.maximum:
        return (f"{len(tag)} characters is outside the limit"
                f" {TAG_LENGTH.minimum}..{TAG_LENGTH.maximum}")
    if not TAG_RE.match(tag):
        return f"{tag!r:.80} contains invalid characters (letters, digits and .+*/:@- only)"
    return None


def check_tags(tags: Any, what: str = "tags") -> list[str]:
    TAGS.check(tags, what)
    for idx, tag in enumerate(tags):
        TAG_LENGTH.check(tag, f"{what}[{idx}]")
    return list(tags)


def instance_problems(instance: Any, beparams: dict[str, Any] | None = None) -> list[str]:
    """Why an existing instance could not be restored by import ([] if it could).

    ``beparams``: the filled backend parameters config.ini would record.
    """
    problems = []
    checks: list[tuple[Limit, Any, str]] = [
        (DISKS, instance.disks, "disks"), (NICS, instance.nics, "nics"),
        (NAME_LENGTH, instance.name, "instance_name")]
    checks += [(DISK_SIZE, disk.size, f"disks[{idx}].size")
               for idx, disk in enumerate(instance.disks)]
    checks += [(limit, (beparams or {})[key], f"beparams.{key}")
               for key, limit in (("maxmem", MEMORY), ("minmem", MEMORY), ("vcpus", VCPUS))
               if (beparams or {}).get(key) is not None]
    for limit, value, what in checks:
        try:
            limit.check(value, what)
        except errors.OpPrereqError as err:
            problems.append(str(err.args[0]))
    try:
        check_tags(instance.tags)
    except errors.OpPrereqError as err:
        problems.append(str(err.args[0]))
    if instance.os:
        try:
            check_os_name(instance.os)
        except errors.OpPrereqError as err:
            problems.append(str(err.args[0]))
    return problems


def json_depth_problem(value: Any, limit: int | None = None) -> str | None:
    """Whether a decoded JSON value nests deeper than JSON_DEPTH (iteratively: no stack)."""
    maximum = JSON_DEPTH.maximum if limit is None else limit
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > maximum:
            return f"nested deeper than {maximum} levels"
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return None


def render_markdown() -> str:
    """The table as doc/reliability.md shows it (generated, never edited by hand)."""
    lines = ["| limit | fields | range | unit | why |", "|---|---|---|---|---|"]
    for limit in TABLE:
        fields = ", ".join(f"`{f}`" for f in limit.fields)
        lines.append(f"| {limit.key} | {fields} | {limit.minimum}..{limit.maximum:,} |"
                     f" {limit.unit} | {limit.why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
