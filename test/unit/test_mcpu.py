"""The processor: phase order, locking, retries, dry run, result checks."""

from __future__ import annotations

import itertools
import threading
from typing import Any, ClassVar

import pytest

from ganeti import constants, errors, locking, opcodes
from ganeti.cmdlib.base import LogicalUnit, NoHooksLU, ResultWithJobs
from ganeti.mcpu import Processor, lock_attempt_timeouts


class OpUnittestRecord(opcodes.OpCode):
    OP_DSC_FIELD = "instance_name"
    instance_name: str = "inst1"
    result: Any = True
    fail_assert: bool = False
    OP_RESULT: ClassVar[Any] = bool


class FakeCfg:
    def __init__(self) -> None:
        self.instances = {"inst1": ["node1", "node2"], "inst2": ["node2", "node3"]}

    def expand_instance_name(self, name: str) -> str | None:
        return name if name in self.instances else None

    def get_instance_info(self, uuid: str) -> Any:
        return type("Inst", (), {"name": uuid})()


class FakeHooks:
    def __init__(self, events: list[str], abort: bool) -> None:
        self.events = events
        self.abort = abort

    def run_phase(self, phase: str) -> dict[str, Any]:
        self.events.append(f"hooks-{phase}")
        if phase == constants.HOOKS_PHASE_PRE and self.abort:
            raise errors.HooksAbort("pre hook failed", [("node1", "x", "out")])
        return {}


class FakeContext:
    def __init__(self, abort_hooks: bool = False) -> None:
        self.cfg = FakeCfg()
        self.glm = locking.GanetiLockManager(
            nodes=["node1", "node2", "node3"], nodegroups=["default"],
            instances=["inst1", "inst2"], networks=[])
        self.rpc = None
        self.events: list[str] = []
        self.abort_hooks = abort_hooks
        self.bgl_exclusive: bool | None = None

    def build_hooks_master(self, lu: LogicalUnit) -> FakeHooks | None:
        if lu.HPATH is None:
            return None
        return FakeHooks(self.events, self.abort_hooks)


class Callbacks:
    def __init__(self, priority: int = 0) -> None:
        self.priority = priority
        self.started = threading.Event()
        self.log: list[tuple[str, Any]] = []
        self.cancel_checks = 0
        self.bumps = 0
        self.cancel = False

    def notify_start(self) -> None:
        self.started.set()

    def feedback(self, log_type: str, message: Any) -> None:
        self.log.append((log_type, message))

    def current_priority(self) -> int:
        return self.priority

    def bump_priority(self) -> None:
        self.bumps += 1
        self.priority -= 1

    def check_cancel(self) -> None:
        self.cancel_checks += 1
        if self.cancel:
            raise errors.JobCanceled("canceled")

    def submit_many_jobs(self, jobs: list[Any]) -> list[tuple[bool, Any]]:
        raise NotImplementedError


class LUUnittestRecord(LogicalUnit):
    HPATH = "unittest"
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    op: OpUnittestRecord
    context: Any

    def _ev(self, name: str) -> None:
        self.context.events.append(name)

    def CheckArguments(self) -> None:
        self._ev("CheckArguments")

    def ExpandNames(self) -> None:
        self._ev("ExpandNames")
        self.expand_and_lock_instance()
        assert self.needed_locks is not None
        self.needed_locks[locking.LEVEL_NODE] = []
        self.recalculate_locks[locking.LEVEL_NODE] = "replace"

    def DeclareLocks(self, level: int) -> None:
        self._ev(f"DeclareLocks-{locking.LEVEL_NAMES[level]}")
        if level == locking.LEVEL_NODE:
            names = set()
            for inst in self.glm.owned(locking.LEVEL_INSTANCE):
                names.update(self.context.cfg.instances[inst])
            assert self.needed_locks is not None
            self.needed_locks[level] = sorted(names)
            del self.recalculate_locks[level]

    def CheckPrereq(self) -> None:
        self._ev("CheckPrereq")

    def BuildHooksEnv(self) -> dict[str, Any]:
        return {}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        return [], []

    def Exec(self, feedback_fn: Any) -> Any:
        self._ev("Exec")
        self.context.exec_locks = {
            level: self.glm.owned(level) for level in locking.LEVELS}
        self.context.bgl_shared = self.glm.check_owned(locking.LEVEL_CLUSTER, locking.BGL,
                                                       shared=1)
        feedback_fn("hello from Exec")
        assert not self.op.fail_assert, "deliberate"
        return self.op.result


class LUUnittestExclusive(NoHooksLU):
    REQ_BGL = True
    context: Any

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def Exec(self, feedback_fn: Any) -> Any:
        self.context.bgl_exclusive = self.glm.check_owned(
            locking.LEVEL_CLUSTER, locking.BGL, shared=0)
        return True


class OpUnittestExclusive(opcodes.OpCode):
    pass


LUS = {"OpUnittestRecord": LUUnittestRecord, "OpUnittestExclusive": LUUnittestExclusive}


def make_processor(ctx: FakeContext, timeouts: list[float] | None = None) -> Processor:
    def lookup(name: str) -> type[LogicalUnit]:
        try:
            return LUS[name]
        except KeyError:
            raise errors.OpCodeUnknown(name) from None
    return Processor(ctx, timeouts or [0.05, 0.1], lu_lookup=lookup,  # type: ignore[arg-type]
                     hooks=ctx.build_hooks_master)


def test_phase_order_locks_and_release() -> None:
    ctx = FakeContext()
    cbs = Callbacks()
    result = make_processor(ctx).execute_opcode(OpUnittestRecord(), cbs)
    assert result is True
    assert ctx.events == [
        "CheckArguments", "ExpandNames", "DeclareLocks-instance", "DeclareLocks-nodegroup",
        "DeclareLocks-node", "DeclareLocks-node-res", "DeclareLocks-network",
        "CheckPrereq", "hooks-pre", "Exec", "hooks-post"]
    held: Any = ctx.exec_locks  # type: ignore[attr-defined]
    assert held[locking.LEVEL_CLUSTER] == {locking.BGL}
    assert held[locking.LEVEL_INSTANCE] == {"inst1"}
    assert held[locking.LEVEL_NODE] == {"node1", "node2"}
    assert ctx.bgl_shared  # type: ignore[attr-defined]
    assert cbs.started.is_set()
    assert cbs.log == [("message", "hello from Exec")]
    for level in locking.LEVELS:
        assert not ctx.glm.is_owned(level)


def test_req_bgl_takes_bgl_exclusively() -> None:
    ctx = FakeContext()
    assert make_processor(ctx).execute_opcode(OpUnittestExclusive(), Callbacks())
    assert ctx.bgl_exclusive


def test_dry_run_stops_after_pre_hooks() -> None:
    ctx = FakeContext()
    result = make_processor(ctx).execute_opcode(OpUnittestRecord(dry_run=True), Callbacks())
    assert result is None
    assert "hooks-pre" in ctx.events
    assert "Exec" not in ctx.events


def test_pre_hook_abort_prevents_exec_and_releases_locks() -> None:
    ctx = FakeContext(abort_hooks=True)
    with pytest.raises(errors.HooksAbort):
        make_processor(ctx).execute_opcode(OpUnittestRecord(), Callbacks())
    assert "Exec" not in ctx.events
    assert not ctx.glm.is_owned(locking.LEVEL_CLUSTER)


def test_wrong_result_type_is_reported() -> None:
    ctx = FakeContext()
    with pytest.raises(errors.OpResultError, match="wrong type"):
        make_processor(ctx).execute_opcode(OpUnittestRecord(result="yes"), Callbacks())
    with pytest.raises(errors.OpResultError, match="JSON"):
        make_processor(ctx).execute_opcode(OpUnittestRecord(result={1, 2}), Callbacks())


def test_assertion_becomes_internal_error() -> None:
    ctx = FakeContext()
    with pytest.raises(errors.OpExecError, match=r"Internal error in LUUnittestRecord.*deliberate"):
        make_processor(ctx).execute_opcode(OpUnittestRecord(fail_assert=True), Callbacks())
    assert not ctx.glm.is_owned(locking.LEVEL_INSTANCE)


def test_unknown_opcode() -> None:
    with pytest.raises(errors.OpCodeUnknown):
        make_processor(FakeContext()).execute_opcode(opcodes.OpClusterDestroy(), Callbacks())


def _hold(glm: locking.GanetiLockManager, instance: str, release: threading.Event,
          holding: threading.Event) -> threading.Thread:
    def run() -> None:
        glm.acquire(locking.LEVEL_CLUSTER, locking.BGL, shared=True)
        glm.acquire(locking.LEVEL_INSTANCE, [instance])
        holding.set()
        release.wait(30)
        glm.release(locking.LEVEL_INSTANCE)
        glm.release(locking.LEVEL_CLUSTER)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_lock_timeouts_retry_then_bump_priority_then_succeed() -> None:
    ctx = FakeContext()
    release, holding = threading.Event(), threading.Event()
    holder = _hold(ctx.glm, "inst1", release, holding)
    assert holding.wait(10)
    cbs = Callbacks()
    result: list[Any] = []

    def run() -> None:
        result.append(make_processor(ctx, [0.01, 0.02]).execute_opcode(OpUnittestRecord(), cbs))

    worker = threading.Thread(target=run)
    worker.start()
    # two rounds of timeouts: the priority has been raised at least twice
    deadline = threading.Event()
    for _ in range(500):
        if cbs.bumps >= 2:
            break
        deadline.wait(0.01)
    assert cbs.bumps >= 2
    assert not cbs.started.is_set()          # still waiting, never ran
    assert "Exec" not in ctx.events
    assert cbs.cancel_checks >= 4            # checked after each failed attempt
    release.set()
    worker.join(30)
    holder.join(30)
    assert result == [True]
    assert cbs.priority < 0


def test_cancel_while_waiting_for_locks() -> None:
    ctx = FakeContext()
    release, holding = threading.Event(), threading.Event()
    holder = _hold(ctx.glm, "inst1", release, holding)
    assert holding.wait(10)
    cbs = Callbacks()
    cbs.cancel = True
    with pytest.raises(errors.JobCanceled):
        make_processor(ctx).execute_opcode(OpUnittestRecord(), cbs)
    assert cbs.cancel_checks == 1
    assert "Exec" not in ctx.events
    for level in locking.LEVELS:
        assert not ctx.glm.is_owned(level)
    release.set()
    holder.join(30)


def test_highest_priority_waits_without_timeout() -> None:
    ctx = FakeContext()
    release, holding = threading.Event(), threading.Event()
    holder = _hold(ctx.glm, "inst1", release, holding)
    assert holding.wait(10)
    cbs = Callbacks(priority=constants.OP_PRIO_HIGHEST)
    worker = threading.Thread(
        target=lambda: make_processor(ctx, [0.01]).execute_opcode(OpUnittestRecord(), cbs))
    worker.start()
    # after its one timed round it blocks: no bumps, no further cancel checks
    for _ in range(300):
        if cbs.cancel_checks >= 1:
            break
        threading.Event().wait(0.01)
    threading.Event().wait(0.2)
    assert cbs.bumps == 0
    assert cbs.cancel_checks == 1
    release.set()
    worker.join(30)
    holder.join(30)
    assert cbs.started.is_set()


def test_lock_attempt_timeouts_grow_to_fifteen_seconds() -> None:
    timeouts = lock_attempt_timeouts()
    assert timeouts[0] == 1.0
    assert timeouts[-1] == 15.0
    assert all(a < b for a, b in itertools.pairwise(timeouts))


class OpUnittestCreate(opcodes.OpCode):
    instance_name: str
    fail: bool = False


class LUUnittestCreate(NoHooksLU):
    REQ_BGL = False
    op: OpUnittestCreate

    def ExpandNames(self) -> None:
        self.needed_locks = {locking.LEVEL_NODE: ["node1"]}
        self.add_locks[locking.LEVEL_INSTANCE] = [self.op.instance_name]

    def Exec(self, feedback_fn: Any) -> Any:
        self.context.held_new = self.glm.check_owned(  # type: ignore[attr-defined]
            locking.LEVEL_INSTANCE, self.op.instance_name, shared=0)
        if self.op.fail:
            raise errors.OpExecError("creation failed")
        return True


LUS["OpUnittestCreate"] = LUUnittestCreate


def test_add_locks_are_added_in_level_order_and_kept_on_success() -> None:
    ctx = FakeContext()
    proc = make_processor(ctx)
    assert proc.execute_opcode(OpUnittestCreate(instance_name="new1"), Callbacks())
    assert ctx.held_new  # type: ignore[attr-defined]
    assert "new1" in ctx.glm.names(locking.LEVEL_INSTANCE)
    assert not ctx.glm.is_owned(locking.LEVEL_INSTANCE)
    with pytest.raises(errors.OpPrereqError, match="Cannot create instance new1") as err:
        proc.execute_opcode(OpUnittestCreate(instance_name="new1"), Callbacks())
    assert err.value.ecode == errors.ECODE_EXISTS


def test_add_locks_are_removed_when_the_lu_fails() -> None:
    ctx = FakeContext()
    with pytest.raises(errors.OpExecError):
        make_processor(ctx).execute_opcode(
            OpUnittestCreate(instance_name="new2", fail=True), Callbacks())
    assert "new2" not in ctx.glm.names(locking.LEVEL_INSTANCE)
    for level in locking.LEVELS:
        assert not ctx.glm.is_owned(level)


def test_add_locks_are_removed_after_a_dry_run() -> None:
    ctx = FakeContext()
    proc = make_processor(ctx)
    proc.execute_opcode(OpUnittestCreate(instance_name="dry1", dry_run=True), Callbacks())
    # a dry run creates nothing, so the name stays free for the real run
    assert "dry1" not in ctx.glm.names(locking.LEVEL_INSTANCE)
    assert proc.execute_opcode(OpUnittestCreate(instance_name="dry1"), Callbacks())
    assert "dry1" in ctx.glm.names(locking.LEVEL_INSTANCE)


class OpUnittestFollowUp(opcodes.OpCode):
    OP_RESULT: ClassVar[Any] = dict[str, Any]


class LUUnittestFollowUp(NoHooksLU):
    """Returns follow-up jobs, as Ganeti's cluster verify does."""

    REQ_BGL = False

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def Exec(self, feedback_fn: Any) -> Any:
        return ResultWithJobs([[OpUnittestExclusive()], [OpUnittestExclusive(),
                                                          OpUnittestExclusive()]],
                              note="two jobs")


class SubmittingCallbacks(Callbacks):
    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Any] = []

    def submit_many_jobs(self, jobs: list[Any]) -> list[tuple[bool, Any]]:
        self.jobs.extend(jobs)
        return [(True, 7), (False, "queue full")]


def test_result_with_jobs_submits_them_and_returns_the_job_ids() -> None:
    LUS["OpUnittestFollowUp"] = LUUnittestFollowUp
    cbs = SubmittingCallbacks()
    try:
        result = make_processor(FakeContext()).execute_opcode(OpUnittestFollowUp(), cbs)
    finally:
        del LUS["OpUnittestFollowUp"]
    # Ganeti's job-submitted shape: "jobs" holds (success, job id or error) pairs
    assert result == {"note": "two jobs", "jobs": [[True, 7], [False, "queue full"]]}
    assert [[type(op).__name__ for op in job] for job in cbs.jobs] == [
        ["OpUnittestExclusive"], ["OpUnittestExclusive", "OpUnittestExclusive"]]

