"""Job queue durability: restarts, crashes, ids, shutdown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from support.jqueue_fakes import WAIT, FakeExecutor, field, op, running_queue, wait_status

from ganeti import constants, errors
from ganeti.jqueue import (
    MSG_CANCELED,
    MSG_UNCLEAN_SHUTDOWN,
    JobQueue,
    QueuedJob,
    QueuedOpCode,
    SqliteJobStore,
)
from ganeti.jqueue.job import now_us

SUCCESS = constants.OP_STATUS_SUCCESS
ERROR = constants.OP_STATUS_ERROR
CANCELED = constants.OP_STATUS_CANCELED
UNCLEAN = ["OpExecError", [MSG_UNCLEAN_SHUTDOWN]]

_CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from ganeti import opcodes
    from ganeti.jqueue import JobQueue

    class Executor:
        def execute_opcode(self, op, cbs):
            cbs.notify_start()
            if op.comment == "hang":
                cbs.feedback("message", "about to hang")
                threading.Event().wait()
            return None

    def op(key):
        return opcodes.OpTestDelay.create(duration=0.0, comment=key)

    queue = JobQueue(Path(sys.argv[1]), Executor(), workers=1)
    queue.start()
    hung = queue.submit_job([op("hang"), op("after")])
    prev = None
    while prev != ["running"]:
        res = queue.wait_for_job_change(hung, ["status"], prev, 0, 60)
        if res != "nochange":
            prev = res[0]
    queued = [queue.submit_job([op(f"queued{n}")]) for n in range(20)]
    print(hung, *queued, flush=True)
    threading.Event().wait()
""")


def test_crash_while_running(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
    finally:
        child.kill()  # SIGKILL: no chance to clean up
        child.wait(WAIT)
    hung, *queued = (int(x) for x in line.split())
    assert len(queued) == 20
    executor = FakeExecutor()
    with running_queue(db, executor, workers=2) as queue:
        # every job submitted before the crash is there
        assert [row[0] for row in queue.query_jobs(None, ["id"]) if row] == [hung, *queued]
        assert wait_status(queue, hung) == ERROR
        assert field(queue, hung, "opstatus") == [ERROR, ERROR]
        assert field(queue, hung, "opresult")[0] == UNCLEAN
        messages = [entry[3] for entry in field(queue, hung, "oplog")[0]]
        assert messages[0] == "about to hang"
        assert MSG_UNCLEAN_SHUTDOWN in messages[-1]
        for job_id in queued:
            assert wait_status(queue, job_id) == SUCCESS
        assert sorted(executor.calls) == sorted(f"queued{n}" for n in range(20))


def _store_jobs(db: Path, statuses: list[list[str]]) -> list[int]:
    """Write jobs in the given opcode states straight into the store (a crash's leftovers)."""
    store = SqliteJobStore(db)
    store.open()
    try:
        first = store.next_job_id()
        jobs = []
        for num, op_statuses in enumerate(statuses):
            qops = [QueuedOpCode(input=op(f"j{num}o{idx}").to_dict(), status=status,
                                 start_ts=now_us())
                    for idx, status in enumerate(op_statuses)]
            jobs.append(QueuedJob(id=first + num, ops=qops, received_ts=now_us()))
        store.insert_jobs(jobs)
        for job in jobs:
            store.save_job(job)
    finally:
        store.close()
    return [job.id for job in jobs]


def test_recovery_of_each_state(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    queued, waiting, running, canceling, midway = _store_jobs(db, [
        [constants.OP_STATUS_QUEUED],
        [constants.OP_STATUS_WAITING, constants.OP_STATUS_QUEUED],
        [constants.OP_STATUS_RUNNING],
        [constants.OP_STATUS_CANCELING, constants.OP_STATUS_QUEUED],
        [SUCCESS, constants.OP_STATUS_RUNNING, constants.OP_STATUS_QUEUED],
    ])
    executor = FakeExecutor()
    with running_queue(db, executor) as queue:
        assert wait_status(queue, queued) == SUCCESS
        assert wait_status(queue, waiting) == SUCCESS
        assert wait_status(queue, running) == ERROR
        assert field(queue, running, "opresult") == [UNCLEAN]
        assert wait_status(queue, canceling) == CANCELED
        assert field(queue, canceling, "opresult") == [MSG_CANCELED, MSG_CANCELED]
        assert wait_status(queue, midway) == ERROR
        assert field(queue, midway, "opstatus") == [SUCCESS, ERROR, ERROR]
        assert field(queue, midway, "opresult")[1] == UNCLEAN
        log = field(queue, midway, "oplog")[1]
        assert log[-1][2] == constants.ELOG_MESSAGE and MSG_UNCLEAN_SHUTDOWN in log[-1][3]
    assert sorted(executor.calls) == ["j0o0", "j1o0", "j1o1"]


def test_shutdown_keeps_queued_jobs_queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    db = tmp_path / "queue.db"
    executor = FakeExecutor()
    gate = executor.hold_running("block")
    queue = JobQueue(db, executor, workers=1)
    queue.start()
    blocker = queue.submit_job([op("block"), op("next")])
    gate.wait_entered()
    later = queue.submit_job([op("later")])
    stopped = threading.Event()
    pool = queue._pool
    real_stop = pool.stop

    def stop() -> None:
        real_stop()
        stopped.set()
    monkeypatch.setattr(pool, "stop", stop)
    result: list[bool] = []
    closer = threading.Thread(target=lambda: result.append(queue.shutdown(timeout=WAIT)))
    closer.start()
    assert stopped.wait(WAIT)
    with pytest.raises(errors.JobQueueError):
        queue.submit_job([op("refused")])
    gate.release.set()  # the running opcode may finish...
    closer.join(WAIT)
    assert result == [True]
    store = SqliteJobStore(db)
    store.open()
    try:
        jobs = {job.id: job for job in store.load_jobs()}
    finally:
        store.close()
    # ... but nothing new starts: the rest stays queued on disk
    assert [o.status for o in jobs[blocker].ops] == [SUCCESS, constants.OP_STATUS_QUEUED]
    assert jobs[later].ops[0].status == constants.OP_STATUS_QUEUED
    assert executor.calls == ["block"]
    executor = FakeExecutor()
    with running_queue(db, executor) as queue:
        assert wait_status(queue, blocker) == SUCCESS
        assert wait_status(queue, later) == SUCCESS
    assert sorted(executor.calls) == ["later", "next"]


def test_ids_are_never_reused(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    executor = FakeExecutor()
    with running_queue(db, executor) as queue:
        ids = [queue.submit_job([op("x")]) for _ in range(3)]
        for job_id in ids:
            wait_status(queue, job_id)
        assert queue.auto_archive_jobs(-1, WAIT) == (3, 0)
    with running_queue(db, executor) as queue:
        assert queue.query_jobs(None, ["id"]) == []
        assert queue.query_jobs(ids, ["id"]) == [None, None, None]
        assert queue.submit_job([op("y")]) == ids[-1] + 1


def test_finished_jobs_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "queue.db"
    executor = FakeExecutor()
    fields = ["id", "status", "opresult", "oplog", "received_ts", "end_ts", "summary"]
    with running_queue(db, executor) as queue:
        job_id = queue.submit_job([op("x"), op("y")])
        wait_status(queue, job_id)
        before = queue.query_jobs([job_id], fields)
    with running_queue(db, executor) as queue:
        assert queue.query_jobs([job_id], fields) == before
