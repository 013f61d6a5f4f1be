"""A scriptable executor and helpers shared by the job queue tests (no tests here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ganeti import constants, opcodes
from ganeti.jqueue import JobQueue, OpExecCallbacks

WAIT = 60.0  # generous: other suites share the two cores

Script = Callable[[opcodes.OpCode, OpExecCallbacks], Any]


class Gate:
    """Lets a test hold an opcode inside the executor until it says so."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def pass_through(self) -> None:
        self.entered.set()
        if not self.release.wait(WAIT):
            raise RuntimeError("gate was never released")

    def wait_entered(self) -> None:
        assert self.entered.wait(WAIT), "opcode never reached the gate"


class FakeExecutor:
    """Runs opcodes by their ``comment``: a script if one is set, else succeeds."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def execute_opcode(self, op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        key = op.comment or ""
        with self._lock:
            self.calls.append(key)
        script = self.scripts.get(key)
        if script is not None:
            return script(op, cbs)
        cbs.notify_start()
        return {"done": key}

    def hold_running(self, key: str, result: Any = True) -> Gate:
        """The opcode takes its locks (running), then waits at the gate."""
        gate = Gate()

        def script(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
            cbs.notify_start()
            gate.pass_through()
            return result
        self.scripts[key] = script
        return gate

    def hold_waiting(self, key: str) -> Gate:
        """The opcode waits for locks at the gate, checking for cancel afterwards."""
        gate = Gate()

        def script(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
            gate.pass_through()
            cbs.check_cancel()
            cbs.notify_start()
            return "ran"
        self.scripts[key] = script
        return gate


def op(key: str, **fields: Any) -> opcodes.OpCode:
    return opcodes.OpTestDelay.create(duration=0.0, comment=key, **fields)


@contextmanager
def running_queue(path: Path, executor: FakeExecutor, **kwargs: Any) -> Iterator[JobQueue]:
    queue = JobQueue(path, executor, **kwargs)
    queue.start()
    try:
        yield queue
    finally:
        queue.shutdown(timeout=WAIT)


def wait_status(queue: JobQueue, job_id: int,
                wanted: frozenset[str] = constants.JOBS_FINALIZED) -> str:
    """Follow the job with wait_for_job_change until its status is in ``wanted``."""
    deadline = time.monotonic() + WAIT
    prev: Any = None
    serial = 0
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"job {job_id} never reached {sorted(wanted)} (last {prev})"
        res = queue.wait_for_job_change(job_id, ["status"], prev, serial, remaining)
        assert res is not None, f"job {job_id} vanished"
        if res == "nochange":
            continue
        info, entries = res
        if entries:
            serial = entries[-1][0]
        status = info[0]
        if status in wanted:
            return str(status)
        assert status not in constants.JOBS_FINALIZED, f"job {job_id} ended {status}"
        prev = info


def field(queue: JobQueue, job_id: int, name: str) -> Any:
    (row,) = queue.query_jobs([job_id], [name])
    assert row is not None
    return row[0]
