"""Test doubles for the LUXI server (an in-memory job queue); holds no tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ganeti import constants, errors, opcodes, query_resources
from ganeti.server import luxi_server


class FakeJob:
    def __init__(self, job_id: int, ops: list[opcodes.OpCode]) -> None:
        self.id = job_id
        self.ops = ops
        self.status = constants.OP_STATUS_QUEUED
        self.priority = constants.OP_PRIO_NORMAL
        self.log: list[list[Any]] = []
        self.result: Any = None
        self.received = [int(time.time()), 0]
        self.archived = False

    def field(self, name: str) -> Any:
        values = {
            "id": self.id,
            "status": self.status,
            "priority": self.priority,
            "summary": [op.Summary() for op in self.ops],
            "ops": [op.to_dict() for op in self.ops],
            "opstatus": [self.status for _ in self.ops],
            "opresult": [self.result for _ in self.ops],
            "oplog": [list(self.log) for _ in self.ops],
            "opstart": [None for _ in self.ops],
            "opexec": [None for _ in self.ops],
            "opend": [None for _ in self.ops],
            "oppriority": [self.priority for _ in self.ops],
            "received_ts": self.received,
            "start_ts": None,
            "end_ts": None,
            "archived": self.archived,
        }
        if name not in values:
            raise errors.OpPrereqError(f"Unknown job field '{name}'", errors.ECODE_INVAL)
        return values[name]


class FakeQueue:
    """Just enough of ganeti.jqueue.JobQueue for protocol tests."""

    def __init__(self) -> None:
        self.jobs: dict[int, FakeJob] = {}
        self.archived: dict[int, FakeJob] = {}
        self.cond = threading.Condition()
        self.drained = False
        self.waiters = 0
        self.wait_returned = threading.Event()
        self.queried_fields: list[list[str]] = []
        self.wait_timeouts: list[float] = []

    def submit_job(self, ops: list[opcodes.OpCode]) -> int:
        if self.drained:
            raise errors.JobQueueDrainError("Job queue is drained")
        return self.submit_job_to_drained_queue(ops)

    def submit_job_to_drained_queue(self, ops: list[opcodes.OpCode]) -> int:
        with self.cond:
            job = FakeJob(len(self.jobs) + len(self.archived) + 1, ops)
            self.jobs[job.id] = job
            return job.id

    def submit_many_jobs(self, jobs: list[list[opcodes.OpCode]]) -> list[tuple[bool, Any]]:
        return [(True, self.submit_job(ops)) for ops in jobs]

    def update(self, job_id: int, status: str | None = None, log: str | None = None,
               result: Any = None) -> None:
        with self.cond:
            job = self.jobs[job_id]
            if status is not None:
                job.status = status
            if log is not None:
                job.log.append([len(job.log) + 1, [int(time.time()), 5], "message", log])
            if result is not None:
                job.result = result
            self.cond.notify_all()

    def cancel_job(self, job_id: int, kill: bool = False) -> tuple[bool, str]:
        job = self.jobs.get(job_id)
        if job is None:
            raise errors.OpPrereqError(f"Job {job_id} not found", errors.ECODE_NOENT)
        if job.status != constants.OP_STATUS_QUEUED:
            return False, f"Job {job_id} is no longer waiting in the queue"
        self.update(job_id, constants.OP_STATUS_CANCELED)
        return True, f"Job {job_id} canceled"

    def change_job_priority(self, job_id: int, priority: int) -> tuple[bool, str]:
        self.jobs[job_id].priority = priority
        return True, f"Priority of job {job_id} changed to {priority}"

    def archive_job(self, job_id: int) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.status not in constants.JOBS_FINALIZED:
            return False
        job.archived = True
        self.archived[job_id] = self.jobs.pop(job_id)
        return True

    def auto_archive_jobs(self, age: float, timeout: float) -> tuple[int, int]:
        done = [j for j in self.jobs.values() if j.status in constants.JOBS_FINALIZED]
        for job in done:
            self.archive_job(job.id)
        return len(done), 0

    def query_jobs(self, job_ids: list[int] | None, fields: list[str]) -> list[Any]:
        self.queried_fields.append(list(fields))
        with self.cond:
            ids = sorted(self.jobs) if job_ids is None else job_ids
            return [[self.jobs[i].field(f) for f in fields] if i in self.jobs else None
                    for i in ids]

    def query_archived_jobs(self, fields: list[str]) -> list[Any]:
        with self.cond:
            return [[self.archived[i].field(f) for f in fields] for i in sorted(self.archived)]

    def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: Any,
                            prev_log_serial: Any, timeout: float) -> Any:
        self.wait_timeouts.append(timeout)
        deadline = time.monotonic() + timeout
        serial = prev_log_serial or 0
        with self.cond:
            self.waiters += 1
            self.cond.notify_all()
            try:
                while True:
                    job = self.jobs.get(job_id)
                    if job is None:
                        return None
                    info = [job.field(f) for f in fields]
                    new_log = [e for e in job.log if e[0] > serial]
                    if info != prev_job_info or new_log:
                        return [info, new_log]
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return "nochange"
                    self.cond.wait(left)
            finally:
                self.waiters -= 1
                self.wait_returned.set()

    def set_drain_flag(self, flag: bool) -> None:
        self.drained = flag

    def get_drain_flag(self) -> bool:
        return self.drained


class FakeLockManager:
    def __init__(self, rows: list[tuple[str, Any, Any, Any]]) -> None:
        self.rows = rows

    def query_locks(self) -> list[tuple[str, Any, Any, Any]]:
        return list(self.rows)


class FakeContext:
    def __init__(self, glm: FakeLockManager | None = None) -> None:
        self.glm = glm or FakeLockManager([])
        self.cfg = None


@contextmanager
def running_server(address: Path, queue: FakeQueue | None = None,
                   context: Any = None, max_message: int = constants.LUXI_MAX_MESSAGE
                   ) -> Iterator[luxi_server.LuxiServer]:
    query_resources.register_all()
    backend = luxi_server.MasterBackend(queue or FakeQueue(), context or FakeContext())
    server = luxi_server.LuxiServer(address, luxi_server.build_method_table(backend),
                                    max_message=max_message)
    server.start()
    try:
        yield server
    finally:
        server.stop()
