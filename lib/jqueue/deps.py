"""Job dependencies: who waits for whom, and what a finished job ended as.

A job whose opcode depends on an unfinished job is parked here instead of
holding a worker; when that job finalises the parked jobs are handed back to
the queue, so waiting never polls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of a dependency check: go ahead, wait for ``wait_for``, or fail."""

    wait_for: int | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.wait_for is None and self.error is None


READY = Verdict()


class DependencyTracker:
    """Final statuses of jobs and the jobs parked on unfinished ones.

    ``archived_status`` answers for jobs no longer in memory (None: unknown).
    """

    def __init__(self, archived_status: Callable[[int], str | None]) -> None:
        self._archived_status = archived_status
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._final: dict[int, str] = {}
        self._waiters: dict[int, set[int]] = {}
        self._parked_on: dict[int, int] = {}

    def add_live(self, job_ids: Iterable[int]) -> None:
        with self._lock:
            self._live.update(job_ids)

    def add_final(self, job_id: int, status: str) -> None:
        with self._lock:
            self._final[job_id] = status

    def check(self, job_id: int, deps: list[tuple[int, list[str]]]) -> Verdict:
        """Check ``job_id``'s dependencies; parks the job on the first unfinished one."""
        for dep_id, accepted in deps:
            with self._lock:
                status = self._final.get(dep_id)
                if status is None and dep_id in self._live:
                    self._waiters.setdefault(dep_id, set()).add(job_id)
                    self._parked_on[job_id] = dep_id
                    return Verdict(wait_for=dep_id)
            if status is None:
                status = self._archived_status(dep_id)
            if status is None:
                return Verdict(error=f"Dependency job {dep_id} not found")
            if accepted and status not in accepted:
                return Verdict(error=f"Dependency job {dep_id} ended with status {status},"
                                     f" not in {sorted(accepted)}")
        return READY

    def unpark(self, job_id: int) -> None:
        """Forget that ``job_id`` waits (it was canceled or finished)."""
        with self._lock:
            dep_id = self._parked_on.pop(job_id, None)
            if dep_id is not None:
                self._waiters.get(dep_id, set()).discard(job_id)

    def finalized(self, job_id: int, status: str) -> list[int]:
        """Record a final status; returns the jobs that were waiting for it."""
        with self._lock:
            self._live.discard(job_id)
            self._final[job_id] = status
            waiters = sorted(self._waiters.pop(job_id, ()))
            for waiter in waiters:
                self._parked_on.pop(waiter, None)
            dep_id = self._parked_on.pop(job_id, None)
            if dep_id is not None:
                self._waiters.get(dep_id, set()).discard(job_id)
            return waiters

    def archived(self, job_ids: Iterable[int]) -> None:
        """Archived jobs are answered by ``archived_status`` from now on."""
        with self._lock:
            for job_id in job_ids:
                self._final.pop(job_id, None)

    def forget_live(self, job_ids: Iterable[int]) -> list[int]:
        """Ids allocated for jobs that never got stored; returns jobs parked on them."""
        released: list[int] = []
        with self._lock:
            for job_id in job_ids:
                self._live.discard(job_id)
                for waiter in self._waiters.pop(job_id, ()):
                    self._parked_on.pop(waiter, None)
                    released.append(waiter)
        return sorted(released)
