"""The job queue: submission, scheduling, execution callbacks, queries.

Locking: each job has its own lock, held across a state change *and* its
commit, so whatever a client reads of a job is already durable.  The queue lock
only guards the job table and id allocation and is never held while taking a
job lock (job lock -> queue lock is the only order).  Dependency tracking and
the pool have their own leaf locks.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

from ganeti import constants, errors, opcodes
from ganeti.jqueue.deps import DependencyTracker
from ganeti.jqueue.interfaces import OpExecutor
from ganeti.jqueue.job import (
    MSG_CANCELED,
    MSG_UNCLEAN_SHUTDOWN,
    LogEntry,
    QueuedJob,
    QueuedOpCode,
    check_fields,
    now_us,
    to_json_value,
)
from ganeti.jqueue.pool import WorkerPool
from ganeti.jqueue.store import JobStore, SqliteJobStore

_log = logging.getLogger(__name__)

_META_DRAIN = "drain_flag"
_ARCHIVE_BATCH = 100

SubmitResult = tuple[bool, int | str]


class JobQueue:
    """Persistent queue of jobs run by a pool of worker threads."""

    def __init__(self, db_path: Path, executor: OpExecutor, workers: int = 25,
                 max_jobs: int = 10000, store: JobStore | None = None) -> None:
        self._store: JobStore = store if store is not None else SqliteJobStore(db_path)
        self._executor = executor
        self._max_jobs = max_jobs
        self._lock = threading.Lock()
        self._jobs: dict[int, QueuedJob] = {}
        self._next_id = 1
        self._reserved = 0
        self._accepting = False
        self._drained = False
        self._deps = DependencyTracker(self._archived_status)
        self._pool: WorkerPool[QueuedJob] = WorkerPool(workers, self._run_step)

    # --- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Open the store, recover jobs interrupted by a crash, start the workers."""
        self._store.open()
        self._drained = self._store.get_meta(_META_DRAIN) == "1"
        self._next_id = self._store.next_job_id()
        runnable = []
        for job in self._store.load_jobs():
            self._recover(job)
            self._jobs[job.id] = job
            status = job.calc_status()
            if status in constants.JOBS_FINALIZED:
                self._deps.add_final(job.id, status)
            else:
                self._deps.add_live([job.id])
                runnable.append(job)
        self._next_id = max([self._next_id, *(j + 1 for j in self._jobs)])
        for job in runnable:
            self._pool.add(job.id, job.calc_priority(), job)
        with self._lock:
            self._accepting = True
        self._pool.start()

    def shutdown(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, let running opcodes finish; True if all finished in time.

        Jobs not started stay queued on disk and run after the next start().
        """
        with self._lock:
            self._accepting = False
            self._pool.stop()
        finished = self._pool.join(timeout)
        self._store.close()
        return finished

    def _recover(self, job: QueuedJob) -> None:
        """Requeue waiting opcodes; fail those a crash interrupted."""
        if job.finalized:
            return
        ts = now_us()
        message: str | None = None
        for idx, op in enumerate(job.ops):
            if op.status == constants.OP_STATUS_WAITING:
                op.status = constants.OP_STATUS_QUEUED
                op.start_ts = None
            elif op.status == constants.OP_STATUS_RUNNING:
                job.mark_unfinished(constants.OP_STATUS_ERROR,
                                    errors.encode(errors.OpExecError(MSG_UNCLEAN_SHUTDOWN)),
                                    ts)
                message = f"Opcode {idx} failed: {MSG_UNCLEAN_SHUTDOWN}"
                break
            elif op.status == constants.OP_STATUS_CANCELING:
                job.mark_unfinished(constants.OP_STATUS_CANCELED, MSG_CANCELED, ts)
                message = f"Opcode {idx} canceled: {MSG_UNCLEAN_SHUTDOWN} while canceling"
                break
        self._store.save_job(job)
        if message is not None:
            job.log_serial += 1
            entry = LogEntry(job.log_serial, idx, ts, constants.ELOG_MESSAGE, message)
            self._store.append_log(job.id, entry)
            job.ops[idx].log.append(entry)

    # --- submission ------------------------------------------------------------

    def submit_job(self, ops: list[opcodes.OpCode]) -> int:
        (ok, result), = self._submit([ops], check_drain=True, single=True)
        assert ok and isinstance(result, int)
        return result

    def submit_job_to_drained_queue(self, ops: list[opcodes.OpCode]) -> int:
        """Submit even while drained (the master's own maintenance jobs)."""
        (ok, result), = self._submit([ops], check_drain=False, single=True)
        assert ok and isinstance(result, int)
        return result

    def submit_many_jobs(self, jobs: list[list[opcodes.OpCode]]) -> list[SubmitResult]:
        return self._submit(jobs, check_drain=True, single=False)

    def _submit(self, jobs: list[list[opcodes.OpCode]], check_drain: bool,
                single: bool) -> list[SubmitResult]:
        problems: list[str | None] = []
        for idx, ops in enumerate(jobs):
            problem = _check_job(ops, idx)
            if problem is not None and single:
                raise errors.OpPrereqError(problem, errors.ECODE_INVAL)
            problems.append(problem)
        with self._lock:
            if not self._accepting:
                raise errors.JobQueueError("Job queue is not running")
            if check_drain and self._drained:
                raise errors.JobQueueDrainError("Job queue is drained, refusing job")
            wanted = sum(1 for p in problems if p is None)
            if len(self._jobs) + self._reserved + wanted > self._max_jobs:
                raise errors.JobQueueFull(f"Job queue is full ({self._max_jobs} jobs)")
            ids: dict[int, int] = {}
            for idx, ops in enumerate(jobs):
                if problems[idx] is None:
                    problems[idx] = _check_deps_resolvable(ops, idx, ids, self._next_id)
                if problems[idx] is not None:
                    if single:
                        raise errors.OpPrereqError(str(problems[idx]), errors.ECODE_INVAL)
                    continue
                ids[idx] = self._next_id
                self._next_id += 1
            self._reserved += len(ids)
            self._deps.add_live(ids.values())
        received = now_us()
        new_jobs = [_build_job(ids[idx], jobs[idx], ids, idx, received) for idx in ids]
        try:
            if new_jobs:
                self._store.insert_jobs(new_jobs)
        except BaseException:
            with self._lock:
                self._reserved -= len(ids)
            self._requeue(self._deps.forget_live(ids.values()))
            raise
        with self._lock:
            self._reserved -= len(ids)
            for job in new_jobs:
                self._jobs[job.id] = job
        for job in new_jobs:
            self._pool.add(job.id, job.calc_priority(), job)
        return [(True, ids[idx]) if idx in ids else (False, str(problems[idx]))
                for idx in range(len(jobs))]

    # --- execution -------------------------------------------------------------

    def _run_step(self, job: QueuedJob) -> None:
        """Run the job's next opcode (a worker holds the job only for that long)."""
        with job.lock:
            current = job.current_op()
            if current is None or job.archived:
                return
            idx, qop = current
            if qop.status == constants.OP_STATUS_QUEUED:
                ts = now_us()
                qop.status = constants.OP_STATUS_WAITING
                qop.start_ts = ts
                if job.start_ts is None:
                    job.start_ts = ts
                self._commit(job)
            verdict = self._deps.check(job.id, qop.depends())
            if verdict.wait_for is not None:
                return
            if verdict.error is not None:
                job.mark_unfinished(constants.OP_STATUS_ERROR,
                                    errors.encode(errors.OpExecError(verdict.error)), now_us())
                self._commit(job)
            else:
                job.in_executor = True
        if verdict.error is not None:
            self._job_finalized(job)
            return
        outcome, result = self._execute(job, idx, qop)
        with job.lock:
            job.in_executor = False
            ts = now_us()
            if outcome == constants.OP_STATUS_SUCCESS:
                qop.status = outcome
                qop.result = result
                qop.end_ts = ts
                if job.current_op() is None:
                    job.end_ts = ts
            elif (outcome == constants.OP_STATUS_CANCELED
                  and qop.status == constants.OP_STATUS_CANCELING):
                job.mark_unfinished(constants.OP_STATUS_CANCELED, MSG_CANCELED, ts)
            else:
                job.mark_unfinished(constants.OP_STATUS_ERROR, result, ts)
            self._commit(job)
            finalized = job.finalized
        if finalized:
            self._job_finalized(job)
        else:
            self._pool.add(job.id, job.calc_priority(), job)

    def _execute(self, job: QueuedJob, idx: int, qop: QueuedOpCode) -> tuple[str, Any]:
        try:
            if REDACTED in qop.input.values() and not qop.secrets:
                raise errors.OpExecError("The secrets of this opcode are never stored, so it"
                                         " cannot run after a master restart; resubmit it")
            op = opcodes.from_dict({**qop.input, **qop.secrets})
            op.priority = qop.priority
            result = self._executor.execute_opcode(op, _OpCallbacks(self, job, idx, qop))
        except errors.JobCanceled as err:
            return constants.OP_STATUS_CANCELED, errors.encode(err)
        except Exception as err:
            if not isinstance(err, errors.GenericError):
                _log.exception("Opcode %s of job %s raised", idx, job.id)
            return constants.OP_STATUS_ERROR, errors.encode(err)
        try:
            return constants.OP_STATUS_SUCCESS, to_json_value(result)
        except (TypeError, ValueError) as err:
            return constants.OP_STATUS_ERROR, errors.encode(errors.OpResultError(
                f"Opcode result is not JSON-serializable: {err}"))

    def _commit(self, job: QueuedJob) -> None:
        """Persist the job and wake its watchers; caller holds ``job.lock``."""
        self._store.save_job(job)
        job.changed.notify_all()

    def _job_finalized(self, job: QueuedJob) -> None:
        self._pool.discard(job.id)
        self._requeue(self._deps.finalized(job.id, job.calc_status()))

    def _requeue(self, job_ids: list[int]) -> None:
        with self._lock:
            jobs = [self._jobs[j] for j in job_ids if j in self._jobs]
        for job in jobs:
            self._pool.add(job.id, job.calc_priority(), job)

    def _archived_status(self, job_id: int) -> str | None:
        return self._store.archived_status(job_id)

    def _get(self, job_id: int) -> QueuedJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    # --- client operations -----------------------------------------------------

    def cancel_job(self, job_id: int, kill: bool = False) -> tuple[bool, str]:
        """Cancel a job not yet running; ``kill`` (Ganeti 3.0) cannot stop a running one.

        Our opcodes run in the master's worker threads, not in processes of their
        own, so there is nothing to kill: a running job is refused either way.
        """
        job = self._get(job_id)
        if job is None:
            return False, f"Job {job_id} not found"
        with job.lock:
            status = job.calc_status()
            if status in constants.JOBS_FINALIZED:
                return False, f"Job {job_id} is finished"
            if status == constants.OP_STATUS_RUNNING:
                if kill:
                    return False, (f"Job {job_id} is running and cannot be killed: its"
                                   " opcode runs in a master thread that cannot be"
                                   " interrupted; wait for it to finish")
                return False, f"Job {job_id} is running and cannot be canceled"
            if status == constants.OP_STATUS_CANCELING:
                return True, f"Job {job_id} will be canceled"
            current = job.current_op()
            assert current is not None
            if job.in_executor:
                current[1].status = constants.OP_STATUS_CANCELING
                self._commit(job)
                return True, f"Job {job_id} will be canceled"
            job.mark_unfinished(constants.OP_STATUS_CANCELED, MSG_CANCELED, now_us())
            self._commit(job)
        self._job_finalized(job)
        return True, f"Job {job_id} canceled"

    def change_job_priority(self, job_id: int, priority: int) -> tuple[bool, str]:
        _check_priority(priority)
        job = self._get(job_id)
        if job is None:
            return False, f"Job {job_id} not found"
        with job.lock:
            if job.finalized:
                return False, f"Job {job_id} is finished"
            pending = [op for op in job.ops if op.status in (constants.OP_STATUS_QUEUED,
                                                             constants.OP_STATUS_WAITING)]
            if not pending:
                return False, f"Job {job_id} has no pending opcodes"
            for op in pending:
                op.priority = priority
            self._commit(job)
            new_priority = job.calc_priority()
        self._pool.reprioritize(job_id, new_priority)
        return True, f"Priorities of pending opcodes of job {job_id} changed to {priority}"

    def archive_job(self, job_id: int) -> bool:
        job = self._get(job_id)
        return job is not None and self._archive([job]) == 1

    def auto_archive_jobs(self, age: float, timeout: float) -> tuple[int, int]:
        """Archive finished jobs that ended ``age`` seconds ago (-1: all finished ones)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            jobs = [self._jobs[j] for j in sorted(self._jobs)]
        cutoff = None if age == -1 else now_us() - int(age * 1_000_000)
        archived = 0
        checked = 0
        while checked < len(jobs) and time.monotonic() < deadline:
            batch = jobs[checked:checked + _ARCHIVE_BATCH]
            checked += len(batch)
            archived += self._archive(batch, cutoff)
        return archived, len(jobs) - checked

    def _archive(self, jobs: list[QueuedJob], cutoff: int | None = None) -> int:
        """Archive the finished ones among ``jobs`` (ended before ``cutoff``, if given)."""
        held = []
        try:
            for job in jobs:
                job.lock.acquire()
                held.append(job)
            chosen = [job for job in held
                      if not job.archived and job.finalized
                      and (cutoff is None or (job.end_ts or 0) <= cutoff)]
            if not chosen:
                return 0
            self._store.archive_jobs([job.id for job in chosen])
            for job in chosen:
                job.archived = True
                job.changed.notify_all()
        finally:
            for job in held:
                job.lock.release()
        with self._lock:
            for job in chosen:
                self._jobs.pop(job.id, None)
        self._deps.archived(job.id for job in chosen)
        return len(chosen)

    def query_jobs(self, job_ids: list[int] | None,
                   fields: list[str]) -> list[list[Any] | None]:
        check_fields(fields)
        with self._lock:
            ids = sorted(self._jobs) if job_ids is None else list(job_ids)
            jobs = [self._jobs.get(j) for j in ids]
        result: list[list[Any] | None] = []
        for job in jobs:
            if job is None:
                result.append(None)
                continue
            with job.lock:
                result.append(None if job.archived else job.get_fields(fields))
        return result

    def query_archived_jobs(self, fields: list[str]) -> list[list[Any]]:
        """Field values of every archived job, oldest first (read from the store)."""
        check_fields(fields)
        jobs = self._store.load_archived_jobs(with_log="oplog" in fields)
        return [job.get_fields(fields) for job in jobs]

    def wait_for_job_change(self, job_id: int, fields: list[str], prev_job_info: Any,
                            prev_log_serial: int | None, timeout: float
                            ) -> Literal["nochange"] | tuple[list[Any], list[Any]] | None:
        """Long poll: new field values or log entries, or "nochange" after ``timeout``.

        Returns None for unknown (or archived) jobs.
        """
        check_fields(fields)
        job = self._get(job_id)
        if job is None:
            return None
        serial = -1 if prev_log_serial is None else prev_log_serial
        deadline = time.monotonic() + timeout
        with job.lock:
            while True:
                if job.archived:
                    return None
                info = job.get_fields(fields)
                entries = job.log_since(serial)
                if info != prev_job_info or entries or job.finalized:
                    return info, entries
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "nochange"
                job.changed.wait(remaining)

    def set_drain_flag(self, flag: bool) -> None:
        with self._lock:
            self._store.set_meta(_META_DRAIN, "1" if flag else "0")
            self._drained = flag

    def get_drain_flag(self) -> bool:
        with self._lock:
            return self._drained


class _OpCallbacks:
    """The queue side of one opcode's execution (see interfaces.OpExecCallbacks)."""

    def __init__(self, queue: JobQueue, job: QueuedJob, idx: int, qop: QueuedOpCode) -> None:
        self._queue = queue
        self._job = job
        self._idx = idx
        self._qop = qop

    def _raise_if_canceling(self) -> None:
        if self._qop.status == constants.OP_STATUS_CANCELING:
            raise errors.JobCanceled(f"Job {self._job.id} was canceled")

    def notify_start(self) -> None:
        with self._job.lock:
            self._raise_if_canceling()
            if self._qop.status != constants.OP_STATUS_WAITING:
                return
            self._qop.status = constants.OP_STATUS_RUNNING
            self._qop.exec_ts = now_us()
            self._queue._commit(self._job)

    def feedback(self, log_type: str, message: Any) -> None:
        try:
            message = to_json_value(message)
        except (TypeError, ValueError):
            message = str(message)
        job = self._job
        with job.lock:
            entry = LogEntry(job.log_serial + 1, self._idx, now_us(), str(log_type), message)
            self._queue._store.append_log(job.id, entry)
            job.log_serial = entry.serial
            self._qop.log.append(entry)
            job.changed.notify_all()

    def current_priority(self) -> int:
        with self._job.lock:
            return self._qop.priority

    def bump_priority(self) -> None:
        with self._job.lock:
            if self._qop.priority <= constants.OP_PRIO_HIGHEST:
                return
            self._qop.priority -= 1
            self._queue._commit(self._job)

    def check_cancel(self) -> None:
        with self._job.lock:
            self._raise_if_canceling()

    def submit_many_jobs(self, jobs: list[list[opcodes.OpCode]]) -> list[tuple[bool, Any]]:
        return list(self._queue._submit(jobs, check_drain=False, single=False))


# --- submission checks ---------------------------------------------------------


def _check_priority(priority: Any) -> None:
    if (not isinstance(priority, int) or isinstance(priority, bool)
            or not constants.OP_PRIO_HIGHEST <= priority <= constants.OP_PRIO_LOWEST):
        raise errors.OpPrereqError(
            f"Priority must be an integer between {constants.OP_PRIO_HIGHEST} and"
            f" {constants.OP_PRIO_LOWEST}, got {priority!r}", errors.ECODE_INVAL)


def _check_job(ops: Any, idx: int) -> str | None:
    if not isinstance(ops, list) or not ops:
        return "A job needs a non-empty list of opcodes"
    for num, op in enumerate(ops):
        if not isinstance(op, opcodes.OpCode):
            return f"Opcode {num} is not an opcode ({type(op).__name__})"
        try:
            _check_priority(op.priority)
        except errors.OpPrereqError as err:
            return f"Opcode {num}: {err.args[0]}"
        for dep_id, statuses in op.depends or []:
            if dep_id == 0:
                return f"Opcode {num}: invalid dependency job id 0"
            if dep_id < 0 and idx + dep_id < 0:
                return f"Opcode {num}: relative job dependency {dep_id} is out of range"
            bad = set(statuses) - constants.JOBS_FINALIZED
            if bad:
                return f"Opcode {num}: dependency statuses {sorted(bad)} are not final"
    return None


def _check_deps_resolvable(ops: list[opcodes.OpCode], idx: int, ids: dict[int, int],
                           next_id: int) -> str | None:
    """Relative ids must name a job of this submission that got an id; absolute ones a
    job that exists already."""
    for op in ops:
        for dep_id, _statuses in op.depends or []:
            if dep_id < 0 and idx + dep_id not in ids:
                return f"Relative job dependency {dep_id} refers to a job that was not submitted"
            if dep_id >= next_id:
                return f"Job can only depend on earlier jobs, not on job {dep_id}"
    return None


# stored (and shown) in place of an opcode's secret fields
REDACTED = "<redacted>"


def _build_job(job_id: int, ops: list[opcodes.OpCode], ids: dict[int, int], idx: int,
               received: int) -> QueuedJob:
    qops = []
    for op in ops:
        data = op.to_dict()
        secrets = {name: data[name] for name in op.OP_SECRET_FIELDS
                   if data.get(name) is not None}
        data.update(dict.fromkeys(secrets, REDACTED))
        if op.depends:
            data["depends"] = [[dep_id if dep_id > 0 else ids[idx + dep_id], list(statuses)]
                               for dep_id, statuses in op.depends]
        qops.append(QueuedOpCode(input=data, priority=op.priority, secrets=secrets))
    return QueuedJob(id=job_id, ops=qops, received_ts=received,
                     summaries=[op.Summary() for op in ops])
