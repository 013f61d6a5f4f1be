"""Job queue building blocks: the store, dependency tracking, the worker pool, the model."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from support.jqueue_fakes import WAIT, op

from ganeti import constants, errors
from ganeti.jqueue import (
    DependencyTracker,
    LogEntry,
    QueuedJob,
    QueuedOpCode,
    SqliteJobStore,
    WorkerPool,
)
from ganeti.jqueue.job import check_fields, split_ts

Q = constants.OP_STATUS_QUEUED
S = constants.OP_STATUS_SUCCESS
E = constants.OP_STATUS_ERROR


def _job(job_id: int, *statuses: str) -> QueuedJob:
    return QueuedJob(id=job_id, ops=[QueuedOpCode(input=op(f"o{i}").to_dict(), status=s)
                                     for i, s in enumerate(statuses)])


# --- model ---------------------------------------------------------------------


@pytest.mark.parametrize(("statuses", "expected"), [
    ((Q, Q), Q),
    ((S, Q), Q),
    ((S, S), S),
    ((S, constants.OP_STATUS_WAITING), constants.OP_STATUS_WAITING),
    ((S, constants.OP_STATUS_RUNNING, Q), constants.OP_STATUS_RUNNING),
    ((constants.OP_STATUS_CANCELING, Q), constants.OP_STATUS_CANCELING),
    ((S, E, E), E),
    ((constants.OP_STATUS_CANCELED, constants.OP_STATUS_CANCELED), constants.OP_STATUS_CANCELED),
])
def test_job_status_derivation(statuses: tuple[str, ...], expected: str) -> None:
    assert _job(1, *statuses).calc_status() == expected


def test_job_priority_is_most_urgent_pending() -> None:
    job = _job(1, S, Q, Q)
    job.ops[0].priority, job.ops[1].priority, job.ops[2].priority = -20, 5, 3
    assert job.calc_priority() == 3
    assert _job(2, S).calc_priority() == constants.OP_PRIO_NORMAL


def test_timestamps_and_fields() -> None:
    assert split_ts(1_700_000_000_123_456) == [1_700_000_000, 123_456]
    assert split_ts(None) is None
    check_fields(["id", "oplog"])
    with pytest.raises(errors.OpPrereqError, match="nope"):
        check_fields(["id", "nope"])


# --- store -----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    st = SqliteJobStore(tmp_path / "sub" / "jobs.db")
    st.open()
    yield st
    st.close()


def test_store_round_trip(store: SqliteJobStore, tmp_path: Path) -> None:
    assert store.next_job_id() == 1
    job = _job(1, Q, Q)
    job.received_ts = 10
    store.insert_jobs([job])
    job.ops[0].status, job.ops[0].result, job.ops[0].priority = S, {"a": [1]}, -3
    job.ops[0].start_ts, job.ops[0].exec_ts, job.ops[0].end_ts = 11, 12, 13
    job.ops[1].status, job.ops[1].result = E, ["OpExecError", ["x"]]
    job.start_ts, job.end_ts = 11, 14
    store.save_job(job)
    store.append_log(1, LogEntry(1, 0, 12, "message", "hi"))
    store.append_log(1, LogEntry(2, 1, 13, "remote-import", {"k": 1}))
    (loaded,) = store.load_jobs()
    assert loaded.id == 1 and (loaded.received_ts, loaded.start_ts, loaded.end_ts) == (10, 11, 14)
    assert [(o.status, o.result, o.priority) for o in loaded.ops] == \
        [(S, {"a": [1]}, -3), (E, ["OpExecError", ["x"]], 0)]
    assert (loaded.ops[0].start_ts, loaded.ops[0].exec_ts, loaded.ops[0].end_ts) == (11, 12, 13)
    assert loaded.log_since(0) == [[1, [0, 12], "message", "hi"],
                                   [2, [0, 13], "remote-import", {"k": 1}]]
    assert loaded.log_serial == 2
    assert loaded.get_field("summary") == ["TEST_DELAY(0.0)"] * 2
    assert store.next_job_id() == 2


def test_store_archive_and_meta(store: SqliteJobStore) -> None:
    store.insert_jobs([_job(1, S), _job(2, Q)])
    assert store.archived_status(1) is None
    store.archive_jobs([1])
    assert store.archived_status(1) == S
    assert [j.id for j in store.load_jobs()] == [2]
    assert store.get_meta("drain") is None
    store.set_meta("drain", "1")
    store.set_meta("drain", "0")
    assert store.get_meta("drain") == "0"


def test_store_failed_write_does_not_affect_others(store: SqliteJobStore) -> None:
    store.insert_jobs([_job(1, Q)])
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_jobs([_job(1, Q)])
    store.insert_jobs([_job(2, Q)])
    assert [j.id for j in store.load_jobs()] == [1, 2]


def test_store_uses_wal_with_full_sync(store: SqliteJobStore, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "sub" / "jobs.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_closed_store_refuses(tmp_path: Path) -> None:
    st = SqliteJobStore(tmp_path / "jobs.db")
    st.open()
    st.close()
    with pytest.raises(errors.JobQueueError):
        st.get_meta("x")


def test_store_concurrent_writers_all_commit(store: SqliteJobStore) -> None:
    store.insert_jobs([_job(1, Q)])
    barrier = threading.Barrier(8)

    def writer(num: int) -> None:
        barrier.wait(WAIT)
        for serial in range(num * 25 + 1, num * 25 + 26):
            store.append_log(1, LogEntry(serial, 0, serial, "message", serial))
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    (job,) = store.load_jobs()
    assert [e.serial for e in job.ops[0].log] == list(range(1, 201))


# --- dependencies -------------------------------------------------------------------


def test_dependency_tracker() -> None:
    archived = {7: S}
    deps = DependencyTracker(archived.get)
    deps.add_final(1, S)
    deps.add_live([2])
    assert deps.check(10, [(1, [S])]).ready
    assert deps.check(10, [(1, [])]).ready
    assert deps.check(10, [(7, [S])]).ready
    verdict = deps.check(10, [(1, [E, "canceled"])])
    assert verdict.error == ("Dependency job 1 ended with status success,"
                             " not in ['canceled', 'error']")
    assert deps.check(10, [(99, [S])]).error == "Dependency job 99 not found"
    assert deps.check(10, [(1, [S]), (2, [S])]).wait_for == 2
    assert deps.check(11, [(2, [S])]).wait_for == 2
    deps.unpark(11)
    assert deps.finalized(2, E) == [10]
    assert deps.finalized(2, E) == []
    assert deps.check(10, [(2, [S])]).error is not None
    deps.archived([2])
    assert deps.check(10, [(2, [S])]).error == "Dependency job 2 not found"


def test_dependency_on_job_that_was_never_stored() -> None:
    deps = DependencyTracker(lambda _job_id: None)
    deps.add_live([5])
    assert deps.check(6, [(5, [S])]).wait_for == 5
    assert deps.forget_live([5]) == [6]
    assert deps.check(6, [(5, [S])]).error == "Dependency job 5 not found"


# --- worker pool ----------------------------------------------------------------------


def test_pool_orders_by_priority_then_fifo() -> None:
    started = threading.Event()
    release = threading.Event()
    order: list[str] = []
    done = threading.Semaphore(0)

    def process(item: str) -> None:
        if item == "block":
            started.set()
            assert release.wait(WAIT)
        order.append(item)
        done.release()
    pool: WorkerPool[str] = WorkerPool(1, process)
    pool.start()
    try:
        pool.add(0, 0, "block")
        assert started.wait(WAIT)
        pool.add(1, 0, "n1")
        pool.add(2, 5, "low")
        pool.add(3, 0, "n2")
        pool.add(4, -10, "high")
        pool.add(5, 0, "gone")
        pool.add(6, 0, "moved")
        pool.discard(5)
        assert pool.reprioritize(6, -20)
        assert not pool.reprioritize(42, 0)
        assert pool.queued() == 5
        release.set()
        for _ in range(6):
            assert done.acquire(timeout=WAIT)
    finally:
        pool.stop()
        assert pool.join(WAIT)
    assert order == ["block", "moved", "high", "n1", "n2", "low"]


def test_pool_survives_failing_item() -> None:
    done = threading.Event()

    def process(item: int) -> None:
        if item == 1:
            raise RuntimeError("boom")
        done.set()
    pool: WorkerPool[int] = WorkerPool(1, process)
    pool.start()
    pool.add(1, 0, 1)
    pool.add(2, 0, 2)
    assert done.wait(WAIT)
    pool.stop()
    assert pool.join(WAIT)
    with pytest.raises(ValueError):
        WorkerPool(0, process)
