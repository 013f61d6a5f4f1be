"""The contract between the job queue and whoever executes opcodes."""

from __future__ import annotations

from typing import Any, Protocol

from ganeti.opcodes import OpCode


class OpExecCallbacks(Protocol):
    """Given by the queue to the executor, one per running opcode."""

    def notify_start(self) -> None:
        """Locks are held: the opcode goes waiting -> running.

        Raises errors.JobCanceled if the job was canceled while waiting.
        """

    def feedback(self, log_type: str, message: Any) -> None:
        """Append a durable job log entry; wakes wait_for_job_change."""

    def current_priority(self) -> int:
        """The opcode's priority now (change_job_priority may move it while waiting)."""
        ...

    def bump_priority(self) -> None:
        """Starving on locks: raise the priority one step (bounded at -20), persisted."""

    def check_cancel(self) -> None:
        """Raise errors.JobCanceled if the job was canceled while waiting."""

    def submit_many_jobs(self, jobs: list[list[OpCode]]) -> list[tuple[bool, Any]]:
        """Submit follow-up jobs (not refused by the drain flag)."""
        ...


class OpExecutor(Protocol):
    """Runs one opcode; returns a JSON-able result or raises."""

    def execute_opcode(self, op: OpCode, cbs: OpExecCallbacks) -> Any: ...
