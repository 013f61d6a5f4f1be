"""In-memory model of jobs and their opcodes.

The queue keeps one :class:`QueuedJob` per non-archived job.  Every field a
client can query lives here; the store only mirrors it.  Timestamps are integer
microseconds so that they survive a round trip through sqlite exactly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ganeti import constants, errors, opcodes

OPS_FINALIZED = constants.JOBS_FINALIZED

# Fields query_jobs and wait_for_job_change understand
JOB_FIELDS = frozenset({
    "id", "status", "priority", "summary", "ops", "opresult", "opstatus", "oplog",
    "opstart", "opexec", "opend", "oppriority", "received_ts", "start_ts", "end_ts",
    "archived",
})

MSG_PREVIOUS_ERROR = "Error in previous opcode"
MSG_CANCELED = "Job canceled by request"
MSG_UNCLEAN_SHUTDOWN = "Unclean master daemon shutdown"


def now_us() -> int:
    return time.time_ns() // 1000


def split_ts(ts_us: int | None) -> list[int] | None:
    """Ganeti's (sec, usec) pair, as a list so it compares equal to its JSON form."""
    if ts_us is None:
        return None
    return [ts_us // 1_000_000, ts_us % 1_000_000]


def to_json_value(value: Any) -> Any:
    """Normalise to what a JSON round trip yields; raises TypeError/ValueError if impossible."""
    return json.loads(json.dumps(value, allow_nan=False))


@dataclass
class LogEntry:
    serial: int
    op_index: int
    ts_us: int
    log_type: str
    message: Any

    def to_wire(self) -> list[Any]:
        return [self.serial, split_ts(self.ts_us), self.log_type, self.message]


@dataclass
class QueuedOpCode:
    """One opcode of a job with its execution state."""

    input: dict[str, Any]
    status: str = constants.OP_STATUS_QUEUED
    result: Any = None
    priority: int = constants.OP_PRIO_NORMAL
    start_ts: int | None = None
    exec_ts: int | None = None
    end_ts: int | None = None
    log: list[LogEntry] = field(default_factory=list)
    # values of OP_SECRET_FIELDS (input holds REDACTED instead); memory only
    secrets: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finalized(self) -> bool:
        return self.status in OPS_FINALIZED

    def summary(self) -> str:
        try:
            return opcodes.from_dict(self.input).Summary()
        except errors.GenericError:
            return str(self.input.get("OP_ID", "OP_UNKNOWN")).removeprefix("OP_")

    def depends(self) -> list[tuple[int, list[str]]]:
        deps = self.input.get("depends") or []
        return [(int(dep[0]), [str(s) for s in dep[1]]) for dep in deps]


@dataclass(eq=False)
class QueuedJob:
    """A job; ``lock`` guards every field, ``changed`` wakes long polls."""

    id: int
    ops: list[QueuedOpCode]
    received_ts: int | None = None
    start_ts: int | None = None
    end_ts: int | None = None
    log_serial: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    changed: threading.Condition = field(init=False, repr=False)
    # scheduling state, guarded by ``lock``: the opcode has been handed to the executor
    in_executor: bool = False
    archived: bool = False
    # made from the opcodes on first use (validating every stored opcode again is the
    # bulk of loading thousands of jobs); the submitter passes them in
    summaries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)
        self.log_serial = max((e.serial for op in self.ops for e in op.log),
                              default=self.log_serial)

    def calc_status(self) -> str:
        status = constants.OP_STATUS_QUEUED
        all_success = True
        for op in self.ops:
            if op.status == constants.OP_STATUS_SUCCESS:
                continue
            all_success = False
            if op.status == constants.OP_STATUS_WAITING:
                status = constants.OP_STATUS_WAITING
            elif op.status == constants.OP_STATUS_RUNNING:
                status = constants.OP_STATUS_RUNNING
            elif op.status in (constants.OP_STATUS_CANCELING, constants.OP_STATUS_ERROR,
                               constants.OP_STATUS_CANCELED):
                return op.status
        return constants.OP_STATUS_SUCCESS if all_success else status

    def calc_priority(self) -> int:
        pending = [op.priority for op in self.ops if not op.finalized]
        return min(pending) if pending else constants.OP_PRIO_NORMAL

    @property
    def finalized(self) -> bool:
        return self.calc_status() in OPS_FINALIZED

    def current_op(self) -> tuple[int, QueuedOpCode] | None:
        for idx, op in enumerate(self.ops):
            if not op.finalized:
                return idx, op
        return None

    def mark_unfinished(self, status: str, result: Any, ts_us: int) -> None:
        """Finalise every opcode not yet finished; first one keeps ``result``."""
        for op in self.ops:
            if op.finalized:
                continue
            op.status = status
            op.result = result
            op.end_ts = ts_us
            if status == constants.OP_STATUS_ERROR:
                result = errors.encode(errors.OpExecError(MSG_PREVIOUS_ERROR))
        self.end_ts = ts_us

    def log_since(self, serial: int) -> list[list[Any]]:
        entries = [e for op in self.ops for e in op.log if e.serial > serial]
        entries.sort(key=lambda e: e.serial)
        return [e.to_wire() for e in entries]

    def get_field(self, name: str) -> Any:
        match name:
            case "id":
                return self.id
            case "status":
                return self.calc_status()
            case "priority":
                return self.calc_priority()
            case "summary":
                if len(self.summaries) != len(self.ops):
                    self.summaries = [op.summary() for op in self.ops]
                return list(self.summaries)
            case "ops":
                return [op.input for op in self.ops]
            case "opresult":
                return [op.result for op in self.ops]
            case "opstatus":
                return [op.status for op in self.ops]
            case "oplog":
                return [[e.to_wire() for e in op.log] for op in self.ops]
            case "opstart":
                return [split_ts(op.start_ts) for op in self.ops]
            case "opexec":
                return [split_ts(op.exec_ts) for op in self.ops]
            case "opend":
                return [split_ts(op.end_ts) for op in self.ops]
            case "oppriority":
                return [op.priority for op in self.ops]
            case "received_ts":
                return split_ts(self.received_ts)
            case "start_ts":
                return split_ts(self.start_ts)
            case "end_ts":
                return split_ts(self.end_ts)
            case "archived":
                return self.archived
        raise errors.OpPrereqError(f"Unknown job field '{name}'", errors.ECODE_INVAL)

    def get_fields(self, names: list[str]) -> list[Any]:
        return [self.get_field(n) for n in names]


def check_fields(names: list[str]) -> None:
    unknown = [n for n in names if n not in JOB_FIELDS]
    if unknown:
        raise errors.OpPrereqError(f"Unknown job field(s): {', '.join(unknown)}",
                                   errors.ECODE_INVAL)
