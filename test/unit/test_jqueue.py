"""Job queue behaviour: execution, cancel, dependencies, priorities, long polls."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from support.jqueue_fakes import WAIT, FakeExecutor, field, op, running_queue, wait_status

from ganeti import constants, errors, opcodes
from ganeti.jqueue import MSG_CANCELED, JobQueue, OpExecCallbacks

SUCCESS = constants.OP_STATUS_SUCCESS
ERROR = constants.OP_STATUS_ERROR
CANCELED = constants.OP_STATUS_CANCELED
WAITING = frozenset({constants.OP_STATUS_WAITING})
RUNNING = frozenset({constants.OP_STATUS_RUNNING})


@pytest.fixture
def executor() -> FakeExecutor:
    return FakeExecutor()


@pytest.fixture
def queue(tmp_path: Path, executor: FakeExecutor):
    with running_queue(tmp_path / "queue.db", executor, workers=4) as q:
        yield q


@pytest.fixture
def single(tmp_path: Path, executor: FakeExecutor):
    """A queue with one worker, so tests can see ordering."""
    with running_queue(tmp_path / "queue.db", executor, workers=1) as q:
        yield q


# --- execution ---------------------------------------------------------------


def test_success_records_result_and_timestamps(queue: JobQueue) -> None:
    job_id = queue.submit_job([op("a")])
    assert wait_status(queue, job_id) == SUCCESS
    (row,) = queue.query_jobs([job_id], ["id", "status", "opresult", "opstatus", "summary",
                                         "received_ts", "start_ts", "end_ts", "opstart",
                                         "opexec", "opend", "ops"])
    assert row is not None
    jid, status, result, opstatus, summary, received, start, end, opstart, opexec, opend, ops \
        = row
    assert (jid, status, result, opstatus) == (job_id, SUCCESS, [{"done": "a"}], [SUCCESS])
    assert summary == ["TEST_DELAY(0.0)"]
    assert received <= start <= opexec[0] <= opend[0] == end
    assert opstart[0] == start
    assert opcodes.from_dict(ops[0]).comment == "a"


def test_multi_opcode_job_runs_in_order(queue: JobQueue, executor: FakeExecutor) -> None:
    job_id = queue.submit_job([op("first"), op("second"), op("third")])
    assert wait_status(queue, job_id) == SUCCESS
    assert executor.calls == ["first", "second", "third"]
    assert field(queue, job_id, "opresult") == [{"done": k} for k in ("first", "second", "third")]


def test_failing_opcode_fails_the_rest(queue: JobQueue, executor: FakeExecutor) -> None:
    def boom(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        raise errors.OpExecError("boom")
    executor.scripts["bad"] = boom
    job_id = queue.submit_job([op("good"), op("bad"), op("never")])
    assert wait_status(queue, job_id) == ERROR
    assert field(queue, job_id, "opstatus") == [SUCCESS, ERROR, ERROR]
    results = field(queue, job_id, "opresult")
    assert results[1] == ["OpExecError", ["boom"]]
    assert results[2] == ["OpExecError", ["Error in previous opcode"]]
    assert errors.decode(results[1]).args == ("boom",)
    assert "never" not in executor.calls


def test_result_that_is_not_json_is_an_error(queue: JobQueue, executor: FakeExecutor) -> None:
    executor.scripts["obj"] = lambda _op, _cbs: object()
    job_id = queue.submit_job([op("obj")])
    assert wait_status(queue, job_id) == ERROR
    assert field(queue, job_id, "opresult")[0][0] == "OpResultError"


def test_unexpected_exception_is_encoded(queue: JobQueue, executor: FakeExecutor) -> None:
    def crash(_op: opcodes.OpCode, _cbs: OpExecCallbacks) -> Any:
        raise KeyError("x")
    executor.scripts["crash"] = crash
    job_id = queue.submit_job([op("crash")])
    assert wait_status(queue, job_id) == ERROR
    name, args = field(queue, job_id, "opresult")[0]
    assert name == "GenericError" and "KeyError" in args[0]


def test_bad_submissions_are_refused(queue: JobQueue) -> None:
    with pytest.raises(errors.OpPrereqError):
        queue.submit_job([])
    with pytest.raises(errors.OpPrereqError):
        queue.submit_job(["not an opcode"])  # type: ignore[list-item]
    with pytest.raises(errors.OpPrereqError, match="relative"):
        queue.submit_job([op("x", depends=[(-1, [SUCCESS])])])
    with pytest.raises(errors.OpPrereqError, match="earlier"):
        queue.submit_job([op("x", depends=[(10_000, [SUCCESS])])])
    with pytest.raises(errors.OpPrereqError, match="bogus"):
        queue.query_jobs(None, ["id", "bogus"])
    assert queue.query_jobs(None, ["id"]) == []


def test_unknown_jobs(queue: JobQueue) -> None:
    assert queue.query_jobs([42], ["id"]) == [None]
    assert queue.wait_for_job_change(42, ["status"], None, None, 1.0) is None
    assert queue.cancel_job(42)[0] is False
    assert queue.change_job_priority(42, 0)[0] is False
    assert queue.archive_job(42) is False


def test_executor_can_submit_jobs(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("unused")

    def spawn(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        gate.pass_through()
        return cbs.submit_many_jobs([[op("child")], [op("child2", depends=[(-1, [SUCCESS])])]])
    executor.scripts["parent"] = spawn
    job_id = queue.submit_job([op("parent")])
    gate.wait_entered()
    queue.set_drain_flag(True)  # follow-up jobs belong to work already accepted
    gate.release.set()
    assert wait_status(queue, job_id) == SUCCESS
    (ok1, child1), (ok2, child2) = field(queue, job_id, "opresult")[0]
    assert ok1 and ok2 and child2 == child1 + 1
    assert wait_status(queue, child2) == SUCCESS
    assert field(queue, child2, "ops")[0]["depends"] == [[child1, [SUCCESS]]]


# --- cancel --------------------------------------------------------------------


def test_cancel_queued_job(single: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("blocker")
    blocker = single.submit_job([op("blocker")])
    gate.wait_entered()
    victim = single.submit_job([op("victim"), op("victim2")])
    assert field(single, victim, "status") == constants.OP_STATUS_QUEUED
    ok, msg = single.cancel_job(victim)
    assert ok, msg
    assert field(single, victim, "status") == CANCELED
    assert field(single, victim, "opresult") == [MSG_CANCELED, MSG_CANCELED]
    gate.release.set()
    assert wait_status(single, blocker) == SUCCESS
    # the single worker has moved past the canceled job: a new job runs next
    assert wait_status(single, single.submit_job([op("after")])) == SUCCESS
    assert "victim" not in executor.calls


def test_cancel_job_waiting_on_dependency(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("dep")
    dep = queue.submit_job([op("dep")])
    job_id = queue.submit_job([op("child", depends=[(dep, [SUCCESS])])])
    assert wait_status(queue, job_id, WAITING) == constants.OP_STATUS_WAITING
    assert queue.cancel_job(job_id)[0] is True
    assert field(queue, job_id, "status") == CANCELED
    gate.release.set()
    assert wait_status(queue, dep) == SUCCESS
    assert "child" not in executor.calls


def test_cancel_job_waiting_in_executor(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_waiting("locks")
    job_id = queue.submit_job([op("locks"), op("later")])
    gate.wait_entered()
    assert field(queue, job_id, "status") == constants.OP_STATUS_WAITING
    ok, msg = queue.cancel_job(job_id)
    assert ok and "will be canceled" in msg
    assert field(queue, job_id, "status") == constants.OP_STATUS_CANCELING
    assert queue.cancel_job(job_id)[0] is True
    gate.release.set()
    assert wait_status(queue, job_id) == CANCELED
    assert field(queue, job_id, "opstatus") == [CANCELED, CANCELED]
    assert field(queue, job_id, "opexec") == [None, None]


def test_cancel_running_and_finished_are_refused(queue: JobQueue, executor: FakeExecutor
                                                 ) -> None:
    gate = executor.hold_running("run")
    job_id = queue.submit_job([op("run")])
    wait_status(queue, job_id, RUNNING)
    ok, msg = queue.cancel_job(job_id)
    assert not ok and "running" in msg
    gate.release.set()
    assert wait_status(queue, job_id) == SUCCESS
    ok, msg = queue.cancel_job(job_id)
    assert not ok and "finished" in msg


# --- dependencies ----------------------------------------------------------------


def test_dependency_waits_for_success(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("dep")
    dep = queue.submit_job([op("dep")])
    job_id = queue.submit_job([op("child", depends=[(dep, [SUCCESS])])])
    assert wait_status(queue, job_id, WAITING) == constants.OP_STATUS_WAITING
    assert "child" not in executor.calls
    gate.release.set()
    assert wait_status(queue, job_id) == SUCCESS
    assert field(queue, job_id, "opexec")[0] >= field(queue, dep, "end_ts")


def test_failed_dependency_fails_the_job(queue: JobQueue, executor: FakeExecutor) -> None:
    def fail(_op: opcodes.OpCode, _cbs: OpExecCallbacks) -> Any:
        raise errors.OpExecError("nope")
    executor.scripts["dep"] = fail
    dep = queue.submit_job([op("dep")])
    job_id = queue.submit_job([op("child", depends=[(dep, [SUCCESS])]), op("child2")])
    assert wait_status(queue, job_id) == ERROR
    name, (msg,) = field(queue, job_id, "opresult")[0]
    assert name == "OpExecError"
    assert msg == f"Dependency job {dep} ended with status error, not in ['success']"
    assert field(queue, job_id, "opstatus") == [ERROR, ERROR]
    # accepting "error" lets a cleanup job run after a failure
    cleanup = queue.submit_job([op("cleanup", depends=[(dep, [ERROR, SUCCESS])])])
    assert wait_status(queue, cleanup) == SUCCESS


def test_dependency_on_archived_job(queue: JobQueue) -> None:
    dep = queue.submit_job([op("dep")])
    wait_status(queue, dep)
    assert queue.archive_job(dep)
    job_id = queue.submit_job([op("child", depends=[(dep, [SUCCESS])])])
    assert wait_status(queue, job_id) == SUCCESS
    bad = queue.submit_job([op("child", depends=[(dep, [CANCELED])])])
    assert wait_status(queue, bad) == ERROR


def test_relative_dependencies(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("one")
    results = queue.submit_many_jobs([
        [op("one")],
        [op("two", depends=[(-1, [SUCCESS])])],
        [op("three", depends=[(-2, [SUCCESS]), (-1, [SUCCESS])])],
    ])
    assert all(ok for ok, _ in results)
    one, two, three = (int(r[1]) for r in results)
    assert field(queue, two, "ops")[0]["depends"] == [[one, [SUCCESS]]]
    assert field(queue, three, "ops")[0]["depends"] == [[one, [SUCCESS]], [two, [SUCCESS]]]
    assert wait_status(queue, three, WAITING)
    gate.release.set()
    assert wait_status(queue, three) == SUCCESS
    assert executor.calls.index("two") < executor.calls.index("three")


def test_relative_dependency_out_of_range(queue: JobQueue) -> None:
    results = queue.submit_many_jobs([
        [op("a", depends=[(-1, [SUCCESS])])],
        [op("b")],
        [op("c", depends=[(-2, [SUCCESS])])],   # refers to the refused job
        [op("d", depends=[(-2, [SUCCESS])])],   # refers to "b"
    ])
    assert [ok for ok, _ in results] == [False, True, False, True]
    assert "out of range" in str(results[0][1])
    assert wait_status(queue, int(results[3][1])) == SUCCESS


# --- priorities ------------------------------------------------------------------


def test_high_priority_job_runs_first(single: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("blocker")
    single.submit_job([op("blocker")])
    gate.wait_entered()
    normal1 = single.submit_job([op("normal1")])
    normal2 = single.submit_job([op("normal2")])
    urgent = single.submit_job([op("urgent", priority=constants.OP_PRIO_HIGH)])
    low = single.submit_job([op("low", priority=constants.OP_PRIO_LOW)])
    assert field(single, urgent, "priority") == constants.OP_PRIO_HIGH
    gate.release.set()
    for job_id in (normal1, normal2, urgent, low):
        wait_status(single, job_id)
    assert executor.calls == ["blocker", "urgent", "normal1", "normal2", "low"]


def test_change_priority_reorders_queued_jobs(single: JobQueue, executor: FakeExecutor
                                              ) -> None:
    gate = executor.hold_running("blocker")
    single.submit_job([op("blocker")])
    gate.wait_entered()
    first = single.submit_job([op("first")])
    second = single.submit_job([op("second"), op("second2")])
    ok, _msg = single.change_job_priority(second, -5)
    assert ok
    assert field(single, second, "oppriority") == [-5, -5]
    with pytest.raises(errors.OpPrereqError):
        single.change_job_priority(first, 20)
    gate.release.set()
    wait_status(single, first)
    wait_status(single, second)
    assert executor.calls == ["blocker", "second", "second2", "first"]
    assert single.change_job_priority(first, 3)[0] is False


def test_priority_change_seen_by_waiting_opcode(queue: JobQueue, executor: FakeExecutor
                                                ) -> None:
    gate = executor.hold_waiting("w")
    seen: list[int] = []

    def script(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        gate.pass_through()
        seen.append(cbs.current_priority())
        cbs.notify_start()
        return None
    executor.scripts["w"] = script
    job_id = queue.submit_job([op("w")])
    gate.wait_entered()
    assert queue.change_job_priority(job_id, 7)[0]
    gate.release.set()
    assert wait_status(queue, job_id) == SUCCESS
    assert seen == [7]


def test_bump_priority_is_persisted(tmp_path: Path, executor: FakeExecutor) -> None:
    def starving(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.bump_priority()
        cbs.bump_priority()
        cbs.notify_start()
        return cbs.current_priority()

    def at_top(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.bump_priority()
        return cbs.current_priority()
    executor.scripts["starving"] = starving
    executor.scripts["top"] = at_top
    with running_queue(tmp_path / "q.db", executor) as queue:
        job_id = queue.submit_job([op("starving", priority=3)])
        top = queue.submit_job([op("top", priority=constants.OP_PRIO_HIGHEST)])
        wait_status(queue, job_id)
        wait_status(queue, top)
        assert field(queue, job_id, "opresult") == [1]
        assert field(queue, top, "opresult") == [constants.OP_PRIO_HIGHEST]
    with running_queue(tmp_path / "q.db", executor) as queue:
        assert field(queue, job_id, "oppriority") == [1]


# --- wait_for_job_change -------------------------------------------------------------


def test_wait_returns_at_once_on_difference(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("x")
    job_id = queue.submit_job([op("x")])
    wait_status(queue, job_id, RUNNING)
    res = queue.wait_for_job_change(job_id, ["status"], ["queued"], 0, WAIT)
    assert res == (["running"], [])
    assert queue.wait_for_job_change(job_id, ["status"], ["running"], 0, 0.05) == "nochange"
    gate.release.set()
    wait_status(queue, job_id)
    # finished jobs answer at once even without a change
    assert queue.wait_for_job_change(job_id, ["status"], ["success"], 0, WAIT) == \
        (["success"], [])


def test_wait_returns_only_new_log_entries(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("x")
    second = threading.Event()

    def chatty(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        cbs.feedback(constants.ELOG_MESSAGE, "one")
        cbs.feedback(constants.ELOG_MESSAGE, "two")
        gate.pass_through()
        cbs.feedback(constants.ELOG_REMOTE_IMPORT, {"disks": [1, 2]})
        second.set()
        return None
    executor.scripts["x"] = chatty
    job_id = queue.submit_job([op("x")])
    gate.wait_entered()
    res = queue.wait_for_job_change(job_id, ["status"], ["running"], 1, WAIT)
    assert res != "nochange" and res is not None
    info, entries = res
    assert info == ["running"]
    assert [(e[0], e[2], e[3]) for e in entries] == [(2, "message", "two")]
    sec, usec = entries[0][1]
    assert sec > 0 and 0 <= usec < 1_000_000
    gate.release.set()
    assert second.wait(WAIT)
    res = queue.wait_for_job_change(job_id, ["status"], ["success"], 2, WAIT)
    assert res != "nochange" and res is not None
    assert [(e[0], e[3]) for e in res[1]] == [(3, {"disks": [1, 2]})]
    oplog = field(queue, job_id, "oplog")
    assert [e[0] for e in oplog[0]] == [1, 2, 3]


def test_wait_wakes_up_on_feedback(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("x")
    proceed = threading.Event()

    def later(_op: opcodes.OpCode, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        gate.pass_through()
        assert proceed.wait(WAIT)
        cbs.feedback(constants.ELOG_MESSAGE, "hello")
        return None
    executor.scripts["x"] = later
    job_id = queue.submit_job([op("x")])
    gate.wait_entered()
    gate.release.set()
    answer: list[Any] = []
    waiter = threading.Thread(target=lambda: answer.append(
        queue.wait_for_job_change(job_id, ["status"], ["running"], 0, WAIT)))
    waiter.start()
    proceed.set()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    (res,) = answer
    assert res != "nochange"
    entries = res[1]
    assert entries and entries[0][3] == "hello"


# --- drain, full, archive ----------------------------------------------------------


def test_drain_flag_is_persistent(tmp_path: Path, executor: FakeExecutor) -> None:
    with running_queue(tmp_path / "q.db", executor) as queue:
        assert queue.get_drain_flag() is False
        queue.set_drain_flag(True)
        with pytest.raises(errors.JobQueueDrainError):
            queue.submit_job([op("x")])
        with pytest.raises(errors.JobQueueDrainError):
            queue.submit_many_jobs([[op("x")]])
        # the explicit bypass still works while drained
        assert wait_status(queue, queue.submit_job_to_drained_queue([op("y")])) == SUCCESS
    with running_queue(tmp_path / "q.db", executor) as queue:
        assert queue.get_drain_flag() is True
        queue.set_drain_flag(False)
        assert wait_status(queue, queue.submit_job([op("x")])) == SUCCESS


def test_queue_full(tmp_path: Path, executor: FakeExecutor) -> None:
    with running_queue(tmp_path / "q.db", executor, max_jobs=2) as queue:
        first = queue.submit_job([op("a")])
        queue.submit_job([op("b")])
        with pytest.raises(errors.JobQueueFull):
            queue.submit_job([op("c")])
        wait_status(queue, first)
        assert queue.archive_job(first)
        third = queue.submit_job([op("c")])
        assert third == first + 2


def test_archive_and_auto_archive(queue: JobQueue, executor: FakeExecutor) -> None:
    gate = executor.hold_running("busy")
    done = [queue.submit_job([op("x")]) for _ in range(3)]
    busy = queue.submit_job([op("busy")])
    for job_id in done:
        wait_status(queue, job_id)
    wait_status(queue, busy, RUNNING)
    assert queue.archive_job(busy) is False
    assert queue.archive_job(done[0]) is True
    assert queue.archive_job(done[0]) is False
    assert queue.query_jobs([done[0]], ["id"]) == [None]
    assert queue.auto_archive_jobs(3600, WAIT) == (0, 0)
    assert queue.auto_archive_jobs(-1, WAIT) == (2, 0)
    assert queue.query_jobs(None, ["id"]) == [[busy]]
    gate.release.set()
    wait_status(queue, busy)
    assert queue.auto_archive_jobs(0, WAIT) == (1, 0)
    assert queue.query_jobs(None, ["id"]) == []


def test_concurrent_submitters_with_dependency_chains(queue: JobQueue,
                                                      executor: FakeExecutor) -> None:
    chains: list[list[int]] = []
    lock = threading.Lock()

    def submitter(num: int) -> None:
        jobs = [[op(f"c{num}-0")]] + [[op(f"c{num}-{n}", depends=[(-1, [SUCCESS])])]
                                      for n in range(1, 8)]
        results = queue.submit_many_jobs(jobs)
        with lock:
            chains.append([int(job_id) for ok, job_id in results if ok])
    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert sorted(len(chain) for chain in chains) == [8, 8, 8, 8]
    for chain in chains:
        for job_id in chain:
            assert wait_status(queue, job_id) == SUCCESS
        ends = [field(queue, job_id, "end_ts") for job_id in chain]
        starts = [field(queue, job_id, "opexec")[0] for job_id in chain]
        assert all(end <= start for end, start in zip(ends, starts[1:], strict=False))
    assert len(executor.calls) == 32
