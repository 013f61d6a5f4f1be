"""The processor: runs one opcode through its logical unit under locks.

Phase order (doc/design.md): resolve Ganeti 3.0's uuid fields
(ganeti.opcodes_compat) -> BGL -> build LU (CheckArguments) -> ExpandNames
-> per level DeclareLocks + acquire -> notify_start -> CheckPrereq -> pre
hooks -> (dry run stops) -> Exec -> post hooks -> submit the follow-up jobs
of a ResultWithJobs -> release.  Locks an LU added (add_locks) stay only
when its Exec ran: a failure or a dry run removes them.

Lock attempts use growing timeouts.  When an attempt times out, every lock
of the opcode is released (so a waiting opcode never sits on locks others
need), cancellation is checked, and the opcode is retried from a fresh LU.
After a whole round of timeouts the priority rises by one step; at the
highest priority the processor finally waits without a timeout.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import TypeAdapter, ValidationError

from ganeti import cmdlib, constants, errors, locking, opcodes_compat
from ganeti.cmdlib.base import JOB_IDS_KEY, LogicalUnit, ResultWithJobs
from ganeti.hooks.master import HooksMaster, hooks_master_for

if TYPE_CHECKING:
    from ganeti.context import MasterContext
    from ganeti.jqueue.interfaces import OpExecCallbacks
    from ganeti.opcodes import OpCode

LOG = logging.getLogger(__name__)


class HooksRunner(Protocol):
    """The part of a hooks master the processor drives."""

    def run_phase(self, phase: str) -> Any: ...


# lu -> its hooks master, or None when the LU has no hooks
HooksFactory = Callable[[LogicalUnit], HooksRunner | None]


def lock_attempt_timeouts(start: float = 1.0, maximum: float = 15.0,
                          factor: float = 1.5) -> list[float]:
    """Per-attempt timeouts of one round: 1 s growing to 15 s (about 47 s in all)."""
    timeouts = [start]
    while timeouts[-1] < maximum:
        timeouts.append(min(maximum, timeouts[-1] * factor))
    return timeouts


class _LockAttemptFailed(Exception):
    """Internal: one lock attempt timed out; all locks were released."""


@cache
def _result_adapter(result_type: Any) -> TypeAdapter[Any]:
    return TypeAdapter(result_type)


class Processor:
    """Executes opcodes; the object the job queue calls as its executor."""

    def __init__(self, context: MasterContext,
                 lock_timeouts: Sequence[float] | None = None,
                 lu_lookup: Callable[[str], type[LogicalUnit]] = cmdlib.get_lu_class,
                 hooks: HooksFactory | None = None) -> None:
        self.context = context
        self.lock_timeouts = list(lock_timeouts or lock_attempt_timeouts())
        self._lu_lookup = lu_lookup
        self._hooks = hooks or self.build_hooks_master

    def build_hooks_master(self, lu: LogicalUnit) -> HooksMaster | None:
        """The hooks master of ``lu`` (None: the LU has no hooks path)."""
        if lu.HPATH is None:
            return None
        return hooks_master_for(lu)

    # --- entry point -----------------------------------------------------------

    def execute_opcode(self, op: OpCode, cbs: OpExecCallbacks) -> Any:
        lu_class = self._lu_lookup(type(op).__name__)
        # Ganeti 3.0's *_uuid fields, checked and turned into names for every LU at once
        opcodes_compat.resolve_uuids(op, self.context.cfg)
        while True:
            for timeout in self.lock_timeouts:
                try:
                    return self._attempt(lu_class, op, cbs, timeout)
                except _LockAttemptFailed:
                    cbs.check_cancel()
            if cbs.current_priority() <= constants.OP_PRIO_HIGHEST:
                # starved at the highest priority: wait as long as it takes
                return self._attempt(lu_class, op, cbs, None)
            cbs.bump_priority()
            LOG.info("Opcode %s starved on locks, priority raised to %d",
                     op.Summary(), cbs.current_priority())

    # --- one attempt -------------------------------------------------------------

    def _attempt(self, lu_class: type[LogicalUnit], op: OpCode, cbs: OpExecCallbacks,
                 timeout: float | None) -> Any:
        glm = self.context.glm
        self._acquire(locking.LEVEL_CLUSTER, [locking.BGL], not lu_class.REQ_BGL,
                      False, timeout, cbs)
        try:
            lu = lu_class(self.context, op, cbs.feedback)
            lu.ExpandNames()
            if lu.needed_locks is None:
                raise errors.ProgrammerError(
                    f"{lu_class.__name__}.ExpandNames did not set needed_locks")
            return self._lock_levels_and_exec(lu, cbs, timeout)
        except AssertionError as err:
            LOG.exception("Assertion failed in %s", lu_class.__name__)
            raise errors.OpExecError(
                f"Internal error in {lu_class.__name__}: assertion failed"
                f"{': ' + str(err) if str(err) else ''}") from err
        finally:
            self._release_all(glm)

    def _lock_levels_and_exec(self, lu: LogicalUnit, cbs: OpExecCallbacks,
                              timeout: float | None) -> Any:
        assert lu.needed_locks is not None
        glm = self.context.glm
        added: list[tuple[int, list[str]]] = []
        created = False
        try:
            for level in locking.LEVELS:
                if level != locking.LEVEL_CLUSTER:
                    self._lock_level(lu, level, cbs, timeout, added)
            cbs.notify_start()
            result = self._exec_lu(lu, cbs)
            # only a real Exec creates the objects the added locks stand for
            created = not lu.op.dry_run
            return result
        finally:
            if not created:
                for level, names in reversed(added):
                    glm.remove(level, names)

    def _lock_level(self, lu: LogicalUnit, level: int, cbs: OpExecCallbacks,
                    timeout: float | None, added: list[tuple[int, list[str]]]) -> None:
        assert lu.needed_locks is not None
        if level in lu.add_locks:
            names = sorted(lu.add_locks[level])
            try:
                self.context.glm.add(level, names, acquired=True)
            except errors.LockError as err:
                # the name exists, or a concurrent opcode is creating it
                raise errors.OpPrereqError(
                    f"Cannot create {locking.LEVEL_NAMES[level]} {', '.join(names)}: {err}",
                    errors.ECODE_EXISTS) from None
            added.append((level, names))
        lu.DeclareLocks(level)
        if level in lu.recalculate_locks:
            raise errors.ProgrammerError(
                f"{type(lu).__name__} left recalculate_locks for level"
                f" {locking.LEVEL_NAMES[level]}")
        if level not in lu.needed_locks:
            return
        names = lu.needed_locks[level]
        if names is not locking.ALL_SET:
            names = sorted(set(names))
            if not names:
                return
        self._acquire(level, names, lu.share_locks.get(level, False),
                      lu.opportunistic_locks.get(level, False), timeout, cbs)

    def _acquire(self, level: int, names: Any, shared: bool, opportunistic: bool,
                 timeout: float | None, cbs: OpExecCallbacks) -> None:
        acquired = self.context.glm.acquire(
            level, names, timeout=None if opportunistic else timeout, shared=shared,
            priority=cbs.current_priority(), opportunistic=opportunistic)
        if acquired is None:
            raise _LockAttemptFailed()

    @staticmethod
    def _release_all(glm: locking.GanetiLockManager) -> None:
        for level in reversed(locking.LEVELS):
            if glm.is_owned(level):
                glm.release(level)

    def _exec_lu(self, lu: LogicalUnit, cbs: OpExecCallbacks) -> Any:
        lu.CheckPrereq()
        hooks = self._hooks(lu)
        if hooks is not None:
            hooks.run_phase(constants.HOOKS_PHASE_PRE)
        if lu.op.dry_run:
            return lu.dry_run_result

        def feedback_fn(message: str) -> None:
            cbs.feedback(constants.ELOG_MESSAGE, message)

        result = lu.Exec(feedback_fn)
        if hooks is not None:
            post_results = hooks.run_phase(constants.HOOKS_PHASE_POST)
            result = lu.HooksCallBack(constants.HOOKS_PHASE_POST, post_results,
                                      feedback_fn, result)
        if isinstance(result, ResultWithJobs):
            submitted = cbs.submit_many_jobs(result.jobs)
            result = {**result.other, JOB_IDS_KEY: [list(entry) for entry in submitted]}
        return self._check_result(lu.op, result)

    @staticmethod
    def _check_result(op: OpCode, result: Any) -> Any:
        if op.OP_RESULT is None:
            return result
        try:
            # JSON mode: the result must survive the job store, and tuples may be lists
            encoded = json.dumps(result)
        except (TypeError, ValueError) as err:
            raise errors.OpResultError(
                f"Result of {op.OP_ID} is not JSON-serialisable: {err}") from None
        try:
            _result_adapter(op.OP_RESULT).validate_json(encoded, strict=True)
        except ValidationError as err:
            raise errors.OpResultError(
                f"Result of {op.OP_ID} has the wrong type: {err.errors()[0]['msg']}"
                f" (got {result!r})") from None
        return result

