"""The configuration journal: ``config.data`` plus a log of the changes since.

``config.data`` stays the Ganeti-style JSON file (``serial_no`` inside).  Beside
it, ``config.data.journal`` holds one record per line, UTF-8 JSON::

    {"serial": S, "ops": [...], "ts": 1700000000.5, "crc": "1a2b3c4d"}

An op is ``["set", section, key, value]`` or ``["del", section, key]``;
section is ``"cluster"`` (key null) or a top-level table of the file
(``"nodes"``, ``"instances"``, ...), value the object's JSON dict exactly as
in ``config.data``.  Applying record S also sets the file's top-level
``serial_no`` to S and ``mtime`` to ``ts``.  ``crc`` is the CRC-32 (8 hex
digits) of :func:`canonical` ``(serial, ops)``.

Why a journal: a commit appends and fsyncs a line of about a kilobyte instead
of rewriting the whole file (8 MiB at 10,000 instances).  Compaction folds
the journal back into the file now and then (:func:`compact`), so the file
alone is complete after a clean shutdown and tools reading it keep working.

Load (:func:`load`) = the file (serial B), then the records B+1, B+2, ...;
records <= B are skipped (a compaction crashed before rewriting the journal);
a torn or corrupt *last* line is dropped (it was never acknowledged: the
writer acknowledges after the journal's fsync); a bad line before the last,
or a gap in serials, is an error naming the file and line.  Every step of
:func:`compact` leaves a pair that loads to the same state.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganeti import errors
from ganeti.fileutils import atomic_write, fsync_dir

JOURNAL_SUFFIX = ".journal"
FILE_MODE = 0o600
SET = "set"
DEL = "del"
CLUSTER = "cluster"

Op = list[Any]


def journal_path(path: str | os.PathLike[str]) -> Path:
    """``config.data`` -> ``config.data.journal``."""
    target = Path(path)
    return target.with_name(target.name + JOURNAL_SUFFIX)


def canonical(serial: int, ops: Sequence[Op]) -> bytes:
    """What the crc covers: sorted keys, no spaces, UTF-8."""
    return json.dumps({"ops": ops, "serial": serial}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def crc_of(serial: int, ops: Sequence[Op]) -> str:
    return f"{zlib.crc32(canonical(serial, ops)) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class Record:
    """One journal line, decoded; ``line`` is its exact bytes (newline included)."""

    serial: int
    ops: list[Op]
    ts: float
    crc: str
    line: bytes

    @classmethod
    def make(cls, serial: int, ops: list[Op], ts: float) -> Record:
        crc, line = _encode(serial, ops, ts)
        return cls(serial, ops, ts, crc, line)


def encode_record(serial: int, ops: Sequence[Op], ts: float) -> bytes:
    """One journal line (newline-terminated)."""
    return _encode(serial, ops, ts)[1]


def _encode(serial: int, ops: Sequence[Op], ts: float) -> tuple[str, bytes]:
    ops = list(ops)
    _check_ops(ops, "record")
    crc = crc_of(serial, ops)
    body = json.dumps({"serial": serial, "ops": ops, "ts": ts, "crc": crc},
                      separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return crc, body.encode("utf-8") + b"\n"


def _check_ops(ops: Any, where: str) -> None:
    if not isinstance(ops, list):
        raise ValueError(f"{where}: 'ops' must be a list")
    for num, op in enumerate(ops):
        if not isinstance(op, list) or not op or op[0] not in (SET, DEL):
            raise ValueError(f"{where}: op {num} must be [\"set\", ...] or [\"del\", ...]")
        if len(op) != (4 if op[0] == SET else 3):
            raise ValueError(f"{where}: op {num} ({op[0]}) has {len(op)} elements")
        if not isinstance(op[1], str):
            raise ValueError(f"{where}: op {num}: the section must be a string")
        if op[1] == CLUSTER:
            if op[0] != SET or op[2] is not None:
                raise ValueError(f"{where}: op {num}: the cluster is only set, with key null")
        elif not isinstance(op[2], str):
            raise ValueError(f"{where}: op {num}: the key must be a string")
        if op[0] == SET and not isinstance(op[3], dict):
            raise ValueError(f"{where}: op {num}: the value must be an object")


def _decode_line(line: bytes) -> Record:
    """One line (without its newline) -> Record; ValueError says what is wrong."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not valid JSON ({err})") from None
    if not isinstance(obj, dict) or set(obj) != {"serial", "ops", "ts", "crc"}:
        raise ValueError("not a record (keys serial, ops, ts, crc)")
    serial, ops, ts, crc = obj["serial"], obj["ops"], obj["ts"], obj["crc"]
    if not isinstance(serial, int) or isinstance(serial, bool) or serial < 1:
        raise ValueError(f"bad serial {serial!r}")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        raise ValueError(f"bad ts {ts!r}")
    _check_ops(ops, f"serial {serial}")
    if not isinstance(crc, str) or crc != crc_of(serial, ops):
        raise ValueError(f"crc mismatch (serial {serial})")
    return Record(serial, ops, float(ts), crc, line + b"\n")


def _scan(raw: bytes, path: str | os.PathLike[str]) -> tuple[list[Record], int]:
    """Records and the length of the sound prefix (the torn/bad last line excluded)."""
    records: list[Record] = []
    pos = 0
    end = len(raw)
    lineno = 0
    while pos < end:
        lineno += 1
        nl = raw.find(b"\n", pos)
        last = nl == -1 or nl == end - 1
        if nl == -1:
            return records, pos  # torn: the write of the last line did not finish
        try:
            record = _decode_line(raw[pos:nl])
        except ValueError as err:
            if last:
                return records, pos
            raise errors.ConfigurationError(
                f"Configuration journal {path}, line {lineno}: {err}") from None
        if records and record.serial != records[-1].serial + 1:
            raise errors.ConfigurationError(
                f"Configuration journal {path}, line {lineno}: serial {record.serial}"
                f" follows {records[-1].serial} (gap or disorder)")
        records.append(record)
        pos = nl + 1
    return records, pos


def decode_records(raw: bytes, path: str | os.PathLike[str]) -> list[Record]:
    """The records of a journal's bytes; see the module docstring for what is dropped."""
    return _scan(raw, path)[0]


def apply_record(data: dict[str, Any], record: Record) -> None:
    """Apply one record to the configuration's JSON dict, in place."""
    for op in record.ops:
        kind, section, key = op[0], op[1], op[2]
        if section == CLUSTER:
            data[CLUSTER] = op[3]
            continue
        table = data.get(section)
        if not isinstance(table, dict):
            if kind == DEL:
                raise errors.ConfigurationError(
                    f"Journal record {record.serial}: no section {section!r} to delete"
                    f" {key} from")
            table = data[section] = {}
        if kind == SET:
            table[key] = op[3]
        elif key in table:
            del table[key]
        else:
            raise errors.ConfigurationError(
                f"Journal record {record.serial}: {section} has no {key} to delete")
    data["serial_no"] = record.serial
    data["mtime"] = record.ts


def replay(data: dict[str, Any], records: Iterable[Record], path: str | os.PathLike[str]
           ) -> int:
    """Apply the records after ``data``'s serial; the serial reached."""
    serial = _serial_of(data, path)
    for num, record in enumerate(records, 1):
        if record.serial <= serial:
            continue
        if record.serial != serial + 1:
            raise errors.ConfigurationError(
                f"Configuration journal {journal_path(path)}, line {num}: serial"
                f" {record.serial}, but the configuration is at {serial} (gap)")
        apply_record(data, record)
        serial = record.serial
    return serial


def _serial_of(data: Mapping[str, Any], path: str | os.PathLike[str]) -> int:
    serial = data.get("serial_no")
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise errors.ConfigurationError(
            f"Configuration file {path}: 'serial_no' must be an integer, got {serial!r}")
    return serial


def _read(path: Path, what: str) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise errors.ConfigurationError(f"Cannot read {what} {path}: {err}") from None


def read_journal(path: str | os.PathLike[str]) -> list[Record]:
    """The records of ``path``'s journal (none when there is no journal)."""
    jpath = journal_path(path)
    raw = _read(jpath, "configuration journal")
    return [] if raw is None else decode_records(raw, jpath)


def load(path: str | os.PathLike[str]) -> tuple[dict[str, Any], int]:
    """The configuration as JSON dict (file + journal) and its serial.

    The journal is read before the file: a compaction running meanwhile only
    moves the file forward, so the pair read is always consistent.
    """
    target = Path(path)
    records = read_journal(target)
    raw = _read(target, "configuration file")
    if raw is None:
        raise errors.ConfigurationError(f"Configuration file {target} does not exist")
    data = parse_file(raw, target)
    serial = replay(data, records, target)
    return data, serial


def parse_file(raw: bytes, path: Path) -> dict[str, Any]:
    """The JSON object of a configuration file's bytes (its journal not applied)."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise errors.ConfigurationError(
            f"Configuration file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise errors.ConfigurationError(
            f"Configuration file {path} must hold a JSON object, not {type(data).__name__}")
    return data


_HEAD_SERIAL = re.compile(rb'^\{\s*"uuid"\s*:\s*"[^"]*"\s*,\s*"serial_no"\s*:\s*(\d+)')


def file_serial(path: str | os.PathLike[str]) -> int:
    """The ``serial_no`` of the file alone (cheap for files this program wrote)."""
    target = Path(path)
    try:
        with open(target, "rb") as fh:
            head = fh.read(256)
    except OSError as err:
        raise errors.ConfigurationError(
            f"Cannot read configuration file {target}: {err}") from None
    match = _HEAD_SERIAL.match(head)
    if match:
        return int(match.group(1))
    raw = _read(target, "configuration file") or b""
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise errors.ConfigurationError(
            f"Configuration file {target} is not valid JSON: {err}") from None
    return _serial_of(data if isinstance(data, dict) else {}, target)


def current_serial(path: str | os.PathLike[str]) -> int:
    """Serial of file + journal, without building the configuration."""
    records = read_journal(path)
    base = file_serial(path)
    return max(base, records[-1].serial) if records else base


class JournalWriter:
    """Appends to one journal, keeping it open; the master's store holds one.

    Opening cuts a torn or corrupt last line (never acknowledged), so the next
    append does not turn it into a bad middle line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.config_path = Path(path)
        self.path = journal_path(path)
        self._fd: int | None = None
        self.size = 0
        self.last_serial: int | None = None

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            raw = b""
            size = os.fstat(fd).st_size
            if size:
                raw = os.pread(fd, size, 0)
            records, good = _scan(raw, self.path)
            if records and records[-1].serial <= file_serial(self.config_path):
                # the file holds all of it (a compaction that crashed before the
                # journal's rewrite, or a whole file shipped to a candidate): appending
                # after these would leave a gap between their serials and the new ones
                records, good = [], 0
            if good != len(raw):
                os.ftruncate(fd, good)
                os.fsync(fd)
            if created:
                fsync_dir(self.path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd, self.size = fd, good
        self.last_serial = records[-1].serial if records else None
        return fd

    def append(self, records: Sequence[Record], fsync: bool = True) -> None:
        """Write ``records`` (consecutive serials following the journal's last)."""
        if not records:
            return
        fd = self._open()
        for prev, rec in itertools.pairwise(records):
            if rec.serial != prev.serial + 1:
                raise errors.ConfigurationError(
                    f"Journal records out of order: {rec.serial} after {prev.serial}")
        expected = self.last_serial
        if expected is None:
            expected = file_serial(self.config_path)
        if records[0].serial != expected + 1:
            raise errors.ConfigurationError(
                f"Configuration journal {self.path}: base serial mismatch (it is at"
                f" {expected}, the records start at {records[0].serial})")
        blob = b"".join(r.line for r in records)
        start = self.size
        try:
            view = memoryview(blob)
            offset = start
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            if fsync:
                os.fdatasync(fd)
        except BaseException:
            # what was written is not acknowledged: cut it (best effort; a torn
            # last line is dropped by the next load anyway)
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            self.close()
            raise
        self.size = start + len(blob)
        self.last_serial = records[-1].serial

    def rewrite(self, lines: Sequence[bytes]) -> None:
        """Replace the journal by these record lines atomically (after a compaction)."""
        self.close()
        _write_journal(self.path, lines)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.last_serial = None


def _write_journal(jpath: Path, lines: Sequence[bytes]) -> None:
    if not lines and not jpath.exists():
        return
    fd, tmp_name = tempfile.mkstemp(dir=jpath.parent, prefix=f".{jpath.name}.",
                                    suffix=".tmp")
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(b"".join(lines))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, jpath)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(jpath.parent)


def append(path: str | os.PathLike[str], records: Sequence[Record],
           fsync: bool = True) -> None:
    """Append ``records`` to ``path``'s journal (e.g. on a master candidate).

    The first record must follow the journal's last (or the file's serial when
    the journal is empty): anything else is refused as a base serial mismatch.
    """
    writer = JournalWriter(path)
    try:
        writer.append(records, fsync=fsync)
    finally:
        writer.close()


def compact(path: str | os.PathLike[str], data: Mapping[str, Any] | bytes, serial: int,
            *, keep: Sequence[Record] | None = None) -> None:
    """Replace ``config.data`` by ``data`` (at ``serial``), then drop the journal's
    records <= ``serial``.

    Crash-safe at every step: before the rename the old pair is intact; after
    it, the new file plus the old journal load the same (records <= serial
    are skipped); the journal is replaced atomically.  ``keep`` are the
    records > serial when the caller knows them (the master's store), else
    they are read from the journal.
    """
    target = Path(path)
    if isinstance(data, bytes):
        raw = data
    else:
        if _serial_of(data, target) != serial:
            raise errors.ProgrammerError(
                f"compact: the data is at serial {data.get('serial_no')}, not {serial}")
        raw = json.dumps(data, ensure_ascii=False, separators=(",", ":"),
                         allow_nan=False).encode("utf-8")
    atomic_write(target, raw, FILE_MODE)
    rest = [r.line for r in (read_journal(target) if keep is None else keep)
            if r.serial > serial]
    _write_journal(journal_path(target), rest)


def remove(path: str | os.PathLike[str]) -> None:
    """Delete the journal of ``path`` (a new cluster, a destroyed one)."""
    try:
        journal_path(path).unlink()
    except FileNotFoundError:
        return
    fsync_dir(Path(path).parent)
