"""The job and lock query resources: the master's own state, no node asked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ganeti import query

JOB_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("id", "ID", query.QFT_NUMBER, "Job ID"),
    ("status", "Status", query.QFT_TEXT, "Job status"),
    ("priority", "Prio", query.QFT_NUMBER, "Current job priority"),
    ("summary", "Summary", query.QFT_OTHER, "Summary of each opcode"),
    ("ops", "OpCodes", query.QFT_OTHER, "List of all opcodes"),
    ("opresult", "OpCode_result", query.QFT_OTHER, "List of opcode results"),
    ("opstatus", "OpCode_status", query.QFT_OTHER, "List of opcode statuses"),
    ("oplog", "OpCode_log", query.QFT_OTHER, "List of opcode logs"),
    ("opstart", "OpCode_start", query.QFT_OTHER, "Start time of each opcode"),
    ("opexec", "OpCode_exec", query.QFT_OTHER, "Execution start time of each opcode"),
    ("opend", "OpCode_end", query.QFT_OTHER, "End time of each opcode"),
    ("oppriority", "OpCode_prio", query.QFT_OTHER, "Priority of each opcode"),
    ("received_ts", "Received", query.QFT_OTHER, "Timestamp of job submission"),
    ("start_ts", "Start", query.QFT_OTHER, "Timestamp of job start"),
    ("end_ts", "End", query.QFT_OTHER, "Timestamp of job end"),
    ("archived", "Archived", query.QFT_BOOL,
     "Whether the job is archived (asking for this field lists archived jobs too)"),
)
JOB_FIELD_NAMES = tuple(f[0] for f in JOB_FIELDS)
# Selecting (or filtering on) this field brings in the archive, as in Ganeti 3.0
# (its gnt-job list --archived adds the field to the query)
ARCHIVED_FIELD = "archived"

LOCK_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("name", "Name", query.QFT_TEXT, "Lock name"),
    ("mode", "Mode", query.QFT_OTHER, "Mode in which the lock is currently acquired"),
    ("owner", "Owner", query.QFT_OTHER, "Current lock owner(s)"),
    ("pending", "Pending", query.QFT_OTHER, "Threads waiting for the lock"),
)


def _job_value(name: str) -> query.Getter:
    def get(_source: Any, item: dict[str, Any]) -> Any:
        value = item[name]
        if value is None and name in ("start_ts", "end_ts"):
            return query.NODATA
        return value
    return get


def _job_rows(source: Any, needed: frozenset[str]) -> Iterable[dict[str, Any]]:
    # only the needed fields: logs and opcodes of thousands of jobs are not cheap
    names = sorted(needed | {"id"})
    rows = {row[names.index("id")]: row
            for row in source.queue.query_jobs(None, names) if row is not None}
    if ARCHIVED_FIELD in needed:
        # after the live ones: a job archived in between is then listed once, archived
        rows.update((row[names.index("id")], row)
                    for row in source.queue.query_archived_jobs(names))
    for job_id in sorted(rows):
        yield dict(zip(names, rows[job_id], strict=True))


def _lock_rows(source: Any) -> Iterable[Sequence[Any]]:
    return sorted(source.context.glm.query_locks(), key=lambda row: str(row[0]))


def register() -> None:
    query.register(query.RESOURCE_JOB,
                   [query.FieldDef(n, t, k, d, _job_value(n)) for n, t, k, d in JOB_FIELDS],
                   _job_rows, wants_fields=True)
    query.register(query.RESOURCE_LOCK,
                   [query.FieldDef(n, t, k, d, query.item_getter(i))
                    for i, (n, t, k, d) in enumerate(LOCK_FIELDS)],
                   _lock_rows)
