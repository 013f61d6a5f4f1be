"""A master candidate's copy of the configuration: the whole file, or journal records.

The master ships its journal records (``ganeti.config_journal``) to a candidate
that holds exactly the serial they follow; the candidate appends them to its own
``config.data.journal`` and compacts by the same rule as the master, so its copy
is always loadable with ``config_journal.load`` (master failover starts masterd
from it).  Records that do not follow the node's serial are refused with
:class:`ganeti.errors.ConfigSerialMismatch`; the master then ships the whole file,
which replaces the file *and* empties the journal (first the journal: a crash in
between leaves the older file alone, consistent).

The node's serial is remembered per file identity (both files' stamps), so a
shipment does not re-read 8 MiB of configuration; the first one after the node
daemon starts does.
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

from ganeti import config_journal, errors
from ganeti.backend import RpcFail
from ganeti.config import COMPACT_MIN_BYTES, COMPACT_RATIO
from ganeti.fileutils import atomic_write, file_stamp

_Stamps = tuple[tuple[int, ...] | None, tuple[int, ...] | None]

_LOCK = threading.Lock()  # one change of a node's copy at a time (noded runs threads)
_KNOWN: dict[Path, tuple[_Stamps, int]] = {}  # config path -> (stamps, serial)


def _stamps(path: Path) -> _Stamps:
    return file_stamp(path), file_stamp(config_journal.journal_path(path))


def _remember(path: Path, serial: int) -> None:
    _KNOWN[path] = (_stamps(path), serial)


def node_serial(path: Path) -> int | None:
    """The serial of this node's copy (file + journal); None: no readable copy."""
    stamps = _stamps(path)
    known = _KNOWN.get(path)
    if known is not None and known[0] == stamps:
        return known[1]
    if stamps[0] is None:
        return None
    try:
        serial = config_journal.current_serial(path)
    except (errors.GenericError, OSError, ValueError):
        return None
    _KNOWN[path] = (stamps, serial)
    return serial


def should_compact(journal_bytes: int, data_bytes: int) -> bool:
    """The master's rule (``ganeti.config``): the journal reached a share of the file."""
    return journal_bytes >= max(COMPACT_MIN_BYTES, int(data_bytes * COMPACT_RATIO))


def append_records(path: Path, base_serial: int, raw: bytes) -> int:
    """Append the master's records ``raw`` (journal lines) after ``base_serial``.

    Returns the node's new serial.  Refused (ConfigSerialMismatch) unless the
    node holds exactly ``base_serial`` and the records start right after it.
    """
    try:
        records = config_journal.decode_records(raw, "records from the master")
    except errors.GenericError as err:
        raise RpcFail(f"Invalid configuration records: {err}") from None
    lines = sum(1 for line in raw.split(b"\n") if line.strip())
    if not records or len(records) != lines:
        raise RpcFail(f"Invalid configuration records: {lines} line(s) sent,"
                      f" {len(records)} intact")
    first = records[0].serial
    for prev, rec in itertools.pairwise(records):
        if rec.serial != prev.serial + 1:
            raise RpcFail(f"Invalid configuration records: serial {rec.serial} follows"
                          f" {prev.serial}")
    with _LOCK:
        serial = node_serial(path)
        if serial is None or serial != base_serial or first != serial + 1:
            raise errors.ConfigSerialMismatch(serial, first)
        config_journal.append(path, records, fsync=True)
        new_serial = records[-1].serial
        _remember(path, new_serial)
        _maybe_compact(path)
        return new_serial


def _maybe_compact(path: Path) -> None:
    try:
        journal_bytes = config_journal.journal_path(path).stat().st_size
        data_bytes = path.stat().st_size
    except OSError:
        return
    if not should_compact(journal_bytes, data_bytes):
        return
    data, serial = config_journal.load(path)
    config_journal.compact(path, data, serial)
    _remember(path, serial)


def replace_file(path: Path, data: bytes, mode: int, mtime: float | None) -> int | None:
    """The whole configuration file from the master: the journal is emptied first.

    Returns the file's serial (None when it has none: then the file is only copied).
    """
    serial: int | None = None
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        value = parsed.get("serial_no")
        if isinstance(value, int) and not isinstance(value, bool):
            serial = value
    with _LOCK:
        config_journal.remove(path)
        atomic_write(path, data, mode, mtime=mtime)
        if serial is None:
            _KNOWN.pop(path, None)
        else:
            _remember(path, serial)
    return serial
