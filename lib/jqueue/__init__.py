"""Persistent job queue: jobs of opcodes, stored in sqlite, run by worker threads.

The master daemon builds one :class:`JobQueue` with an :class:`OpExecutor`;
the LUXI server calls its snake_case methods.
"""

from ganeti.jqueue.deps import DependencyTracker, Verdict
from ganeti.jqueue.interfaces import OpExecCallbacks, OpExecutor
from ganeti.jqueue.job import (
    JOB_FIELDS,
    MSG_CANCELED,
    MSG_PREVIOUS_ERROR,
    MSG_UNCLEAN_SHUTDOWN,
    LogEntry,
    QueuedJob,
    QueuedOpCode,
)
from ganeti.jqueue.pool import WorkerPool
from ganeti.jqueue.queue import JobQueue, SubmitResult
from ganeti.jqueue.store import JobStore, SqliteJobStore

__all__ = [
    "JOB_FIELDS",
    "MSG_CANCELED",
    "MSG_PREVIOUS_ERROR",
    "MSG_UNCLEAN_SHUTDOWN",
    "DependencyTracker",
    "JobQueue",
    "JobStore",
    "LogEntry",
    "OpExecCallbacks",
    "OpExecutor",
    "QueuedJob",
    "QueuedOpCode",
    "SqliteJobStore",
    "SubmitResult",
    "Verdict",
    "WorkerPool",
]
