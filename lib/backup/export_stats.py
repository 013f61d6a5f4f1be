"""Per-instance export statistics, kept by the master for alerting.

When an export ends, whoever started it (gnt-backup, the backup runner,
RAPI, a remote export), ``LUBackupExport`` records its outcome here: the
last success (when, how long, how many bytes) and the failures since.  The
instance query fields ``export.*`` and RAPI's ``/metrics`` read it, so an
operator can alert on "no backup in 26 hours" (doc/metrics.md).

One small JSON file next to the export index, keyed by instance uuid (a
rename keeps the history, a new instance of an old name starts afresh).
Writes are atomic renames; the previous version is kept as ``.prev``, so a
damaged file costs at most the last change; a record that does not validate
is dropped alone, the others are kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ganeti import pathutils
from ganeti.fileutils import atomic_write

LOG = logging.getLogger(__name__)

STATS_NAME = "export-stats.json"
FORMAT_VERSION = 1
# an error text is kept this long (the job log has the whole story)
ERROR_MAX = 500

_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
# per file, under its lock: (st_ino, st_mtime_ns, st_size) when last parsed, and the
# records, so a scrape every few seconds parses the file only after a change
_CACHE: dict[Path, tuple[tuple[int, int, int], dict[str, ExportRecord]]] = {}


class ExportRecord(BaseModel):
    """One instance's export history, as far as alerting needs it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(description="Instance name at the last recorded export")
    last_success: float | None = Field(
        None, description="When the last successful export was committed (epoch seconds)")
    duration: float | None = Field(
        None, ge=0, description="Seconds the last successful export took (Exec to commit)")
    wire_bytes: int | None = Field(
        None, ge=0, description="Bytes the last successful export sent over the network:"
        " compressed, with the stream's framing; an incremental export sends only changes")
    data_bytes: int | None = Field(
        None, ge=0, description="Data bytes the last successful export copied, before"
        " compression (changed blocks only when incremental)")
    disk_bytes: int | None = Field(
        None, ge=0, description="Total size of the disks the last successful export holds")
    target: str | None = Field(None, description="Where the last successful export went")
    failures: int = Field(0, ge=0, description="Failed exports since the last success")
    last_failure: float | None = Field(None, description="When the last export failed")
    last_error: str | None = Field(None, description="Why the last export failed")


class ExportStats:
    """The store; one per data dir.  Thread-safe, and safe across processes (flock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prev_path = path.with_name(path.name + ".prev")
        self.lock_path = path.with_name(path.name + ".lock")
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(path, threading.Lock())

    @classmethod
    def for_paths(cls, paths: pathutils.Paths) -> ExportStats:
        return cls(paths.data_dir / STATS_NAME)

    # --- reading -----------------------------------------------------------------

    @staticmethod
    def _parse(raw: bytes, origin: Path) -> dict[str, ExportRecord]:
        """Records of one file; ValueError if the file as a whole is unusable."""
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("instances"), dict):
            raise ValueError("not an export statistics document")
        records: dict[str, ExportRecord] = {}
        for uuid, entry in data["instances"].items():
            try:
                records[str(uuid)] = ExportRecord.model_validate(entry)
            except ValidationError as err:
                LOG.warning("%s: dropping the unreadable record of instance %s: %s",
                            origin, uuid, err.errors()[0]["msg"])
        return records

    def _read_file(self, path: Path) -> dict[str, ExportRecord] | None:
        """None when the file is missing or damaged as a whole."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self._parse(raw, path)
        except (ValueError, RecursionError) as err:
            LOG.warning("%s is damaged (%s)", path, err)
            return None

    def _load(self) -> tuple[dict[str, ExportRecord], bool]:
        """The records, and whether they come from a sound main file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        key = (st.st_ino, st.st_mtime_ns, st.st_size) if st is not None else None
        cached = _CACHE.get(self.path)
        if key is not None and cached is not None and cached[0] == key:
            return dict(cached[1]), True
        records = self._read_file(self.path) if st is not None else None
        if records is not None and key is not None:
            _CACHE[self.path] = (key, records)
            return dict(records), True
        # missing (no export yet) or damaged: the previous version, if any
        fallback = self._read_file(self.prev_path) or {}
        if st is not None:
            LOG.warning("Export statistics: using %s (%d records) instead of the damaged %s",
                        self.prev_path, len(fallback), self.path)
        return fallback, False

    def all(self) -> dict[str, ExportRecord]:
        """Every record, by instance uuid."""
        with self._lock:
            return self._load()[0]

    def get(self, uuid: str) -> ExportRecord | None:
        return self.all().get(uuid)

    # --- writing -----------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _save(self, records: dict[str, ExportRecord], main_sound: bool) -> None:
        doc = {"version": FORMAT_VERSION,
               "instances": {uuid: rec.model_dump(mode="json")
                             for uuid, rec in sorted(records.items())}}
        # the current file becomes .prev only when it is sound: a damaged one never
        # replaces a good fallback
        if main_sound:
            with contextlib.suppress(FileNotFoundError):
                self.prev_path.unlink()
            os.link(self.path, self.prev_path)
        st = atomic_write(self.path, json.dumps(doc, separators=(",", ":")), 0o600)
        _CACHE[self.path] = ((st.st_ino, st.st_mtime_ns, st.st_size), dict(records))

    def _update(self, uuid: str, change: Callable[[ExportRecord | None], ExportRecord],
                known: Callable[[], Collection[str]] | None) -> ExportRecord:
        with self._locked():
            records, main_sound = self._load()
            record = records[uuid] = change(records.get(uuid))
            if known is not None:
                alive = set(known()) | {uuid}
                records = {u: r for u, r in records.items() if u in alive}
            self._save(records, main_sound)
            return record

    def record_success(self, uuid: str, name: str, *, finished: float, duration: float,
                       wire_bytes: int, data_bytes: int, disk_bytes: int, target: str,
                       known: Callable[[], Collection[str]] | None = None) -> ExportRecord:
        """A committed export: it becomes the last success, failures start again at 0.

        ``known()`` (the configuration's instance uuids, read under the store's
        lock) drops the records of removed instances.
        """
        def change(old: ExportRecord | None) -> ExportRecord:
            base = old.model_dump() if old is not None else {}
            return ExportRecord.model_validate({
                **base, "name": name, "last_success": finished, "duration": max(0.0, duration),
                "wire_bytes": wire_bytes, "data_bytes": data_bytes, "disk_bytes": disk_bytes,
                "target": target, "failures": 0})
        return self._update(uuid, change, known)

    def record_failure(self, uuid: str, name: str, *, when: float, error: str,
                       known: Callable[[], Collection[str]] | None = None) -> ExportRecord:
        """A failed export: one more consecutive failure; the last success stays."""
        def change(old: ExportRecord | None) -> ExportRecord:
            base: dict[str, Any] = old.model_dump() if old is not None else {}
            return ExportRecord.model_validate({
                **base, "name": name, "failures": base.get("failures", 0) + 1,
                "last_failure": when, "last_error": error[:ERROR_MAX]})
        return self._update(uuid, change, known)
