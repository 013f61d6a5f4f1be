"""Durable job storage in sqlite.

One connection, owned by a writer thread.  Callers hand it small closures and
block until the transaction holding their change has committed; changes that
arrive while a commit is in flight are committed together (group commit), so
many threads pay for one fsync.  WAL with ``synchronous=FULL`` makes each
commit durable before the caller is released.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from ganeti import errors
from ganeti.jqueue.job import LogEntry, QueuedJob, QueuedOpCode

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    received_us INTEGER,
    start_us INTEGER,
    end_us INTEGER,
    archived INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs(id) WHERE archived = 0;
CREATE TABLE IF NOT EXISTS opcodes (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    idx INTEGER NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    priority INTEGER NOT NULL,
    start_us INTEGER,
    exec_us INTEGER,
    end_us INTEGER,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    serial INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    ts_us INTEGER NOT NULL,
    type TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (job_id, serial)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_JobRow = tuple[str, int | None, int | None, int | None, int]
_OpRow = tuple[str, int | None, int, int | None, int | None, int | None, int, int]


class JobStore(Protocol):
    """What the queue needs from persistence; every write returns once durable."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def load_jobs(self) -> list[QueuedJob]: ...
    def next_job_id(self) -> int: ...
    def insert_jobs(self, jobs: list[QueuedJob]) -> None: ...
    def save_job(self, job: QueuedJob) -> None: ...
    def append_log(self, job_id: int, entry: LogEntry) -> None: ...
    def archive_jobs(self, job_ids: list[int]) -> None: ...
    def archived_status(self, job_id: int) -> str | None: ...
    def load_archived_jobs(self, with_log: bool = True) -> list[QueuedJob]: ...
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


class _Request:
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


def _job_row(job: QueuedJob) -> tuple[Any, ...]:
    return (job.calc_status(), job.received_ts, job.start_ts, job.end_ts, job.id)


def _op_rows(job: QueuedJob) -> list[tuple[Any, ...]]:
    return [(op.status, None if op.result is None else json.dumps(op.result), op.priority,
             op.start_ts, op.exec_ts, op.end_ts, job.id, idx)
            for idx, op in enumerate(job.ops)]


class SqliteJobStore:
    """:class:`JobStore` on one sqlite file (WAL, synchronous=FULL)."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None

    # --- lifecycle -----------------------------------------------------------

    def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        self._conn = conn
        self._closing = False
        self._thread = threading.Thread(target=self._writer_loop, name="jqueue-store",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Commit what is pending, then stop; later calls raise JobQueueError."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # --- writer thread -------------------------------------------------------

    def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        req = _Request(fn)
        with self._cond:
            if self._closing or self._thread is None:
                raise errors.JobQueueError("Job store is closed")
            self._pending.append(req)
            self._cond.notify()
        req.done.wait()
        if req.error is not None:
            raise req.error
        return cast(_T, req.result)

    def _writer_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                batch, self._pending = self._pending, []
                if not batch:
                    return
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            for req in batch:
                conn.execute("SAVEPOINT req")
                try:
                    req.result = req.fn(conn)
                except Exception as err:
                    conn.execute("ROLLBACK TO req")
                    req.error = err
                conn.execute("RELEASE req")
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            _log.error("Job store commit failed: %s", err)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for req in batch:
                req.error = errors.JobQueueError(f"Job store commit failed: {err}")
        for req in batch:
            req.done.set()

    # --- operations ----------------------------------------------------------

    def next_job_id(self) -> int:
        def fn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
            return (int(row[0]) if row else 0) + 1
        return self._call(fn)

    def insert_jobs(self, jobs: list[QueuedJob]) -> None:
        job_rows = [(job.id, *_job_row(job)[:-1]) for job in jobs]
        op_rows = [(job.id, idx, json.dumps(op.input), op.status, op.priority)
                   for job in jobs for idx, op in enumerate(job.ops)]

        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO jobs (id, status, received_us, start_us, end_us)"
                             " VALUES (?, ?, ?, ?, ?)", job_rows)
            conn.executemany("INSERT INTO opcodes (job_id, idx, input, status, priority)"
                             " VALUES (?, ?, ?, ?, ?)", op_rows)
        self._call(fn)

    def save_job(self, job: QueuedJob) -> None:
        job_row = _job_row(job)
        op_rows = _op_rows(job)

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE jobs SET status = ?, received_us = ?, start_us = ?,"
                         " end_us = ? WHERE id = ?", job_row)
            conn.executemany("UPDATE opcodes SET status = ?, result = ?, priority = ?,"
                             " start_us = ?, exec_us = ?, end_us = ?"
                             " WHERE job_id = ? AND idx = ?", op_rows)
        self._call(fn)

    def append_log(self, job_id: int, entry: LogEntry) -> None:
        row = (job_id, entry.serial, entry.op_index, entry.ts_us, entry.log_type,
               json.dumps(entry.message))

        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO log (job_id, serial, idx, ts_us, type, message)"
                         " VALUES (?, ?, ?, ?, ?, ?)", row)
        self._call(fn)

    def archive_jobs(self, job_ids: list[int]) -> None:
        rows = [(job_id,) for job_id in job_ids]

        def fn(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE jobs SET archived = 1 WHERE id = ?", rows)
        self._call(fn)

    def archived_status(self, job_id: int) -> str | None:
        def fn(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM jobs WHERE id = ? AND archived = 1",
                               (job_id,)).fetchone()
            return None if row is None else str(row[0])
        return self._call(fn)

    def get_meta(self, key: str) -> str | None:
        def fn(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])
        return self._call(fn)

    def set_meta(self, key: str, value: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)"
                         " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         (key, value))
        self._call(fn)

    def load_jobs(self) -> list[QueuedJob]:
        return self._call(lambda conn: _load_jobs(conn, archived=False, with_log=True))

    def load_archived_jobs(self, with_log: bool = True) -> list[QueuedJob]:
        """The archived jobs (queries that ask for them); ``with_log`` False skips their
        logs, the bulk of an old job, when the query does not show them.

        Read on a connection of its own: WAL lets it run beside the writer thread,
        so a long read of a big archive does not hold up job commits.
        """
        with self._cond:
            if self._closing or self._thread is None:
                raise errors.JobQueueError("Job store is closed")
        conn = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("BEGIN")
            return _load_jobs(conn, archived=True, with_log=with_log)
        except sqlite3.Error as err:
            raise errors.JobQueueError(f"Reading the job archive failed: {err}") from err
        finally:
            conn.close()


def _load_jobs(conn: sqlite3.Connection, archived: bool, with_log: bool) -> list[QueuedJob]:
    # a literal, not a parameter: sqlite uses the partial index jobs_live only then
    flag = 1 if archived else 0
    ops: dict[int, list[QueuedOpCode]] = {}
    for (job_id, inp, status, result, prio, start, exe, end) in conn.execute(
            "SELECT o.job_id, o.input, o.status, o.result, o.priority, o.start_us,"
            " o.exec_us, o.end_us FROM opcodes o JOIN jobs j ON j.id = o.job_id"
            f" WHERE j.archived = {flag} ORDER BY o.job_id, o.idx"):
        ops.setdefault(job_id, []).append(QueuedOpCode(
            input=json.loads(inp), status=status,
            result=None if result is None else json.loads(result), priority=prio,
            start_ts=start, exec_ts=exe, end_ts=end))
    log_rows = conn.execute(
        "SELECT l.job_id, l.serial, l.idx, l.ts_us, l.type, l.message FROM log l"
        f" JOIN jobs j ON j.id = l.job_id WHERE j.archived = {flag}"
        " ORDER BY l.job_id, l.serial") if with_log else ()
    for (job_id, serial, idx, ts_us, log_type, message) in log_rows:
        job_ops = ops.get(job_id)
        if job_ops is not None and 0 <= idx < len(job_ops):
            job_ops[idx].log.append(LogEntry(serial, idx, ts_us, log_type, json.loads(message)))
    jobs = []
    for (job_id, received, start, end) in conn.execute(
            f"SELECT id, received_us, start_us, end_us FROM jobs WHERE archived = {flag}"
            " ORDER BY id"):
        jobs.append(QueuedJob(id=job_id, ops=ops.get(job_id, []), received_ts=received,
                              start_ts=start, end_ts=end, archived=archived))
    return jobs
