"""Threaded behaviour matrix of ganeti.locking."""

from __future__ import annotations

import functools
import gc
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ganeti import errors, locking
from ganeti.locking import (
    ALL_SET,
    BGL,
    LEVEL_CLUSTER,
    LEVEL_INSTANCE,
    LEVEL_NETWORK,
    LEVEL_NODE,
    LEVEL_NODE_RES,
    LEVEL_NODEGROUP,
    GanetiLockManager,
    LockMonitor,
    LockSet,
    SharedLock,
)

WAIT = 30.0  # generous: other test runs share the two cores


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition that has no event of its own (queue state seen via info())."""
    end = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.001)


class Worker(threading.Thread):
    """Runs one call in a named thread, keeping its result or exception."""

    def __init__(self, name: str, func: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self._func = func
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._func()
        except BaseException as err:
            self.error = err

    def finish(self) -> Any:
        self.join(WAIT)
        assert not self.is_alive(), f"{self.name} did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def pending_names(lock: SharedLock) -> list[str]:
    return [owner for _mode, owners in lock.info()[3] for owner in owners]


def owners(lock: SharedLock) -> list[str]:
    return lock.info()[2]


def start_waiter(lock: SharedLock, name: str, func: Callable[[], Any]) -> Worker:
    """Start a thread and return once it is visibly queued on ``lock``."""
    worker = Worker(name, func)
    worker.start()
    wait_until(lambda: name in pending_names(lock), f"{name} pending on {lock.name}")
    return worker


def hold_until(lock: SharedLock, shared: bool, gate: threading.Event,
               order: list[str] | None = None, priority: int = 0) -> Callable[[], bool]:
    """A worker body: acquire, note the order, hold until ``gate``, release."""
    def body() -> bool:
        assert lock.acquire(shared=shared, priority=priority)
        if order is not None:
            order.append(threading.current_thread().name)
        gate.wait(WAIT)
        lock.release()
        return True
    return body


# --- SharedLock --------------------------------------------------------------------


class TestSharedLockModes:
    def test_sharers_coexist(self) -> None:
        lock = SharedLock("l")
        assert lock.acquire(shared=True)
        other = Worker("sharer", lambda: lock.acquire(shared=True, timeout=0))
        other.start()
        assert other.finish() is True
        name, mode, holders, pending = lock.info()
        assert (name, mode, pending) == ("l", "shared", [])
        assert sorted(holders) == sorted(["sharer", threading.current_thread().name])
        assert lock.is_owned(shared=1) and not lock.is_owned(shared=0)

    @pytest.mark.parametrize("shared", [True, False])
    def test_exclusive_blocks_everyone(self, shared: bool) -> None:
        lock = SharedLock("l")
        assert lock.acquire()
        now = Worker("now", lambda: lock.acquire(shared=shared, timeout=0))
        now.start()
        assert now.finish() is False
        later = Worker("later", lambda: lock.acquire(shared=shared, timeout=0.05))
        later.start()
        assert later.finish() is False
        assert lock.info()[1:] == ("exclusive", [threading.current_thread().name], [])
        lock.release()
        after = Worker("after", lambda: lock.acquire(shared=shared, timeout=0))
        after.start()
        assert after.finish() is True

    def test_sharer_blocks_exclusive(self) -> None:
        lock = SharedLock("l")
        assert lock.acquire(shared=True)
        other = Worker("x", lambda: lock.acquire(timeout=0))
        other.start()
        assert other.finish() is False

    def test_pending_exclusive_blocks_new_sharers(self) -> None:
        lock = SharedLock("l")
        assert lock.acquire(shared=True)
        gate = threading.Event()
        order: list[str] = []
        excl = start_waiter(lock, "excl", hold_until(lock, False, gate, order))
        late = Worker("late", lambda: lock.acquire(shared=True, timeout=0))
        late.start()
        assert late.finish() is False
        sharer = start_waiter(lock, "sharer", hold_until(lock, True, gate, order))
        assert lock.info()[3] == [("exclusive", ["excl"]), ("shared", ["sharer"])]
        lock.release()
        wait_until(lambda: owners(lock) == ["excl"], "excl owns the lock")
        assert pending_names(lock) == ["sharer"]
        gate.set()
        excl.finish()
        sharer.finish()
        assert order == ["excl", "sharer"]

    def test_is_owned_modes(self) -> None:
        lock = SharedLock("l")
        assert not lock.is_owned()
        lock.acquire()
        assert lock.is_owned() and lock.is_owned(0) and not lock.is_owned(1)
        lock.release()
        lock.acquire(shared=True)
        assert lock.is_owned() and lock.is_owned(1) and not lock.is_owned(0)
        other = Worker("o", lambda: lock.is_owned())
        other.start()
        assert other.finish() is False


class TestSharedLockQueue:
    def _run_order(self, specs: list[tuple[str, bool, int]]) -> list[str]:
        """Queue waiters one by one behind an exclusive hold, then record who ran."""
        lock = SharedLock("l")
        assert lock.acquire()
        order: list[str] = []
        gate = threading.Event()
        gate.set()  # each waiter releases right after noting its turn
        workers = [start_waiter(lock, name, hold_until(lock, shared, gate, order, prio))
                   for name, shared, prio in specs]
        lock.release()
        for worker in workers:
            worker.finish()
        return order

    def test_fifo_within_one_priority(self) -> None:
        names = [f"w{i}" for i in range(6)]
        assert self._run_order([(n, False, 0) for n in names]) == names

    def test_priority_order_across_priorities(self) -> None:
        specs = [("a", False, 5), ("b", False, -5), ("c", False, 0), ("d", False, 19),
                 ("e", False, -20), ("f", False, 0), ("g", False, -5)]
        expected = [name for name, _s, _p in
                    sorted(specs, key=lambda s: s[2])]  # stable sort keeps FIFO
        assert expected == ["e", "b", "g", "c", "f", "a", "d"]
        assert self._run_order(specs) == expected

    def test_pending_listed_in_queue_order(self) -> None:
        lock = SharedLock("l")
        lock.acquire()
        gate = threading.Event()
        workers = [
            start_waiter(lock, "s1", hold_until(lock, True, gate)),
            start_waiter(lock, "x1", hold_until(lock, False, gate)),
            start_waiter(lock, "s2", hold_until(lock, True, gate)),
            start_waiter(lock, "s3", hold_until(lock, True, gate)),
            start_waiter(lock, "hi", hold_until(lock, False, gate, priority=-10)),
        ]
        assert lock.info()[3] == [("exclusive", ["hi"]), ("shared", ["s1"]),
                                  ("exclusive", ["x1"]), ("shared", ["s2", "s3"])]
        gate.set()
        lock.release()
        for worker in workers:
            worker.finish()
        assert lock.info()[1:] == (None, [], [])

    def test_consecutive_sharers_woken_together(self) -> None:
        lock = SharedLock("l")
        lock.acquire()
        gate = threading.Event()
        workers = [
            start_waiter(lock, "s1", hold_until(lock, True, gate)),
            start_waiter(lock, "s2", hold_until(lock, True, gate)),
            start_waiter(lock, "x", hold_until(lock, False, gate)),
            start_waiter(lock, "s3", hold_until(lock, True, gate)),
        ]
        lock.release()
        wait_until(lambda: owners(lock) == ["s1", "s2"], "s1 and s2 share the lock")
        assert lock.info()[1] == "shared"
        assert lock.info()[3] == [("exclusive", ["x"]), ("shared", ["s3"])]
        gate.set()
        for worker in workers:
            worker.finish()

    def test_downgrade_wakes_sharers(self) -> None:
        lock = SharedLock("l")
        lock.acquire()
        gate = threading.Event()
        workers = [start_waiter(lock, "s1", hold_until(lock, True, gate)),
                   start_waiter(lock, "s2", hold_until(lock, True, gate))]
        tail = start_waiter(lock, "x", hold_until(lock, False, gate))
        assert lock.downgrade() is True
        me = threading.current_thread().name
        wait_until(lambda: sorted(owners(lock)) == sorted([me, "s1", "s2"]),
                   "sharers joined after downgrade")
        assert lock.is_owned(shared=1)
        assert lock.info()[3] == [("exclusive", ["x"])]
        assert lock.downgrade() is True  # already shared: a no-op
        gate.set()
        lock.release()
        for worker in [*workers, tail]:
            worker.finish()
        assert lock.info()[1] is None

    def test_higher_priority_sharer_overtakes_queued_exclusive(self) -> None:
        lock = SharedLock("l")
        lock.acquire(shared=True)
        gate = threading.Event()
        got = threading.Event()
        excl = start_waiter(lock, "x", hold_until(lock, False, gate))

        def urgent() -> bool:
            ok = lock.acquire(shared=True, timeout=0, priority=-10)
            got.set()
            gate.wait(WAIT)
            if ok:
                lock.release()
            return ok

        worker = Worker("urgent", urgent)
        worker.start()
        assert got.wait(WAIT)
        me = threading.current_thread().name
        assert sorted(owners(lock)) == sorted([me, "urgent"])
        lock.release()
        assert pending_names(lock) == ["x"]  # "urgent" still shares the lock
        gate.set()
        assert worker.finish() is True
        excl.finish()
        assert lock.info()[1:] == (None, [], [])


class TestTimeouts:
    def test_zero_timeout_is_immediate_and_leaves_no_waiter(self) -> None:
        lock = SharedLock("l")
        lock.acquire()
        for shared in (True, False):
            worker = Worker("t0", functools.partial(lock.acquire, shared=shared, timeout=0))
            worker.start()
            assert worker.finish() is False
        assert lock.info()[3] == []

    def test_timeout_while_queued_lets_the_queue_proceed(self) -> None:
        lock = SharedLock("l")
        lock.acquire(shared=True)
        gate = threading.Event()
        expired = threading.Event()

        def impatient() -> bool:
            try:
                return lock.acquire(timeout=0.3)
            finally:
                expired.set()

        first = start_waiter(lock, "impatient", impatient)
        # the sharer queues behind the pending exclusive, although the lock is shared
        sharer = start_waiter(lock, "sharer", hold_until(lock, True, gate))
        assert first.finish() is False
        assert expired.is_set()
        me = threading.current_thread().name
        wait_until(lambda: sorted(owners(lock)) == sorted([me, "sharer"]),
                   "sharer proceeds once the exclusive waiter gave up")
        assert lock.info()[3] == []
        gate.set()
        sharer.finish()
        lock.release()
        assert lock.acquire(timeout=0)

    def test_timeout_of_head_exclusive_wakes_exclusive_behind(self) -> None:
        lock = SharedLock("l")
        other_gate = threading.Event()
        holder = Worker("holder", hold_until(lock, True, other_gate))
        holder.start()
        wait_until(lambda: owners(lock) == ["holder"], "holder holds")
        first = start_waiter(lock, "first", lambda: lock.acquire(timeout=0.2))
        second = start_waiter(lock, "second", lambda: lock.acquire(timeout=WAIT))
        assert first.finish() is False
        assert pending_names(lock) == ["second"]
        other_gate.set()
        holder.finish()
        assert second.finish() is True
        assert owners(lock) == ["second"]


class TestDelete:
    def test_delete_wakes_waiters_and_fails_later_acquires(self) -> None:
        monitor = LockMonitor()
        lock = SharedLock("doomed", monitor)
        lock.acquire()
        waiters = [start_waiter(lock, f"w{i}", functools.partial(lock.acquire, shared=bool(i % 2)))
                   for i in range(4)]
        assert [row[0] for row in monitor.query_locks()] == ["doomed"]
        assert lock.delete() is True
        for worker in waiters:
            with pytest.raises(errors.LockDeletedError):
                worker.finish()
        with pytest.raises(errors.LockDeletedError):
            lock.acquire(timeout=0)
        with pytest.raises(errors.LockDeletedError):
            lock.delete()
        with pytest.raises(errors.LockError):
            lock.release()
        assert lock.deleted and not lock.is_owned()
        assert monitor.query_locks() == []

    def test_delete_acquires_first(self) -> None:
        lock = SharedLock("l")
        gate = threading.Event()
        holder = Worker("holder", hold_until(lock, True, gate))
        holder.start()
        wait_until(lambda: owners(lock) == ["holder"], "holder holds")
        assert lock.delete(timeout=0.05) is False
        assert not lock.deleted and lock.info()[3] == []
        deleter = start_waiter(lock, "deleter", lambda: lock.delete())
        gate.set()
        holder.finish()
        assert deleter.finish() is True
        assert lock.deleted

    def test_delete_while_shared_refused(self) -> None:
        lock = SharedLock("l")
        lock.acquire(shared=True)
        with pytest.raises(errors.LockError):
            lock.delete()
        assert not lock.deleted


class TestMisuse:
    @pytest.mark.parametrize("first,second", [(False, False), (False, True),
                                              (True, False), (True, True)])
    def test_double_acquire(self, first: bool, second: bool) -> None:
        lock = SharedLock("l")
        lock.acquire(shared=first)
        with pytest.raises(errors.LockError):
            lock.acquire(shared=second)
        assert lock.is_owned(1 if first else 0)

    def test_release_not_owned(self) -> None:
        lock = SharedLock("l")
        with pytest.raises(errors.LockError):
            lock.release()
        gate = threading.Event()
        holder = Worker("holder", hold_until(lock, False, gate))
        holder.start()
        wait_until(lambda: owners(lock) == ["holder"], "holder holds")
        with pytest.raises(errors.LockError):
            lock.release()
        with pytest.raises(errors.LockError):
            lock.downgrade()
        gate.set()
        holder.finish()

    def test_lock_deleted_error_is_a_lock_error(self) -> None:
        assert issubclass(errors.LockDeletedError, errors.LockError)


# --- LockSet -----------------------------------------------------------------------


def member(lockset: LockSet, name: str, monitor: LockMonitor) -> tuple[Any, ...]:
    """(mode, owners, pending) of one member lock as the monitor reports it."""
    for row in monitor.query_locks():
        if row[0] == f"{lockset.name}/{name}":
            return row[1:]
    raise AssertionError(f"{name} not in monitor")


def pending_on(lockset: LockSet, name: str, monitor: LockMonitor) -> list[str]:
    return [owner for _mode, names in member(lockset, name, monitor)[2] for owner in names]


class SetHolder:
    """A thread holding LockSet locks until told to let go."""

    def __init__(self, lockset: LockSet, names: Any, shared: bool = False) -> None:
        self.gate = threading.Event()
        self.acquired = threading.Event()

        def body() -> set[str] | None:
            got = lockset.acquire(names, shared=shared)
            self.acquired.set()
            self.gate.wait(WAIT)
            lockset.release()
            return got

        self.worker = Worker("setholder", body)
        self.worker.start()
        assert self.acquired.wait(WAIT)

    def finish(self) -> Any:
        self.gate.set()
        return self.worker.finish()


@pytest.fixture
def monitor() -> LockMonitor:
    return LockMonitor()


@pytest.fixture
def lockset(monitor: LockMonitor) -> LockSet:
    return LockSet(["a", "b", "c", "d"], "set", monitor)


class TestLockSetBasics:
    def test_acquire_release_and_ownership(self, lockset: LockSet) -> None:
        assert lockset.acquire(["c", "a"]) == {"a", "c"}
        assert lockset.owned() == {"a", "c"}
        assert lockset.is_owned() and not lockset.owning_all()
        assert lockset.check_owned(["a", "c"]) and lockset.check_owned("a", shared=0)
        assert not lockset.check_owned("a", shared=1) and not lockset.check_owned("b")
        lockset.release("a")
        assert lockset.owned() == {"c"}
        lockset.release()
        assert lockset.owned() == set() and not lockset.is_owned()

    def test_single_name_string(self, lockset: LockSet) -> None:
        assert lockset.acquire("b", shared=True) == {"b"}
        assert lockset.check_owned("b", shared=1)

    def test_unknown_name(self, lockset: LockSet) -> None:
        with pytest.raises(errors.LockError, match="zz"):
            lockset.acquire(["a", "zz"])
        assert lockset.owned() == set()

    def test_second_acquire_in_same_set_refused(self, lockset: LockSet) -> None:
        lockset.acquire(["a"])
        with pytest.raises(errors.LockError):
            lockset.acquire(["b"])

    def test_release_not_owned(self, lockset: LockSet) -> None:
        lockset.acquire(["a"])
        with pytest.raises(errors.LockError, match="b"):
            lockset.release(["b"])
        assert lockset.owned() == {"a"}

    def test_sorted_acquisition(self, lockset: LockSet, monitor: LockMonitor) -> None:
        holder = SetHolder(lockset, ["c"])
        worker = Worker("taker", lambda: lockset.acquire(["d", "c", "b", "a"]))
        worker.start()
        wait_until(lambda: pending_on(lockset, "c", monitor) == ["taker"], "taker waits on c")
        # everything before "c" is held, nothing after it was touched
        assert member(lockset, "a", monitor)[:2] == ("exclusive", ["taker"])
        assert member(lockset, "b", monitor)[:2] == ("exclusive", ["taker"])
        assert member(lockset, "d", monitor) == (None, [], [])
        holder.finish()
        assert worker.finish() == {"a", "b", "c", "d"}

    def test_names(self, lockset: LockSet) -> None:
        assert lockset.names() == {"a", "b", "c", "d"}

    def test_downgrade(self, lockset: LockSet) -> None:
        lockset.acquire(ALL_SET)
        assert lockset.downgrade(["a"])
        assert lockset.check_owned("a", shared=1) and lockset.check_owned("b", shared=0)
        assert lockset._set_lock.is_owned(shared=0)
        assert lockset.downgrade()
        assert lockset.check_owned(["a", "b", "c", "d"], shared=1)
        assert lockset._set_lock.is_owned(shared=1)
        with pytest.raises(errors.LockError):
            lockset.downgrade(["zz"])


class TestLockSetAll:
    def test_all_set_takes_set_lock_and_members(self, lockset: LockSet) -> None:
        assert lockset.acquire(ALL_SET, shared=True) == {"a", "b", "c", "d"}
        assert lockset.owning_all()
        assert lockset.check_owned(["a", "b", "c", "d"], shared=1)
        lockset.release(["a"])  # owning part of the set is no longer owning all
        assert not lockset.owning_all() and lockset.owned() == {"b", "c", "d"}
        lockset.release()
        assert not lockset.is_owned()

    @pytest.mark.parametrize("shared", [True, False])
    def test_add_blocks_while_all_set_held(self, lockset: LockSet, monitor: LockMonitor,
                                           shared: bool) -> None:
        holder = SetHolder(lockset, ALL_SET, shared=shared)
        adder = Worker("adder", lambda: lockset.add(["e"]))
        adder.start()
        wait_until(lambda: pending_on(lockset, "[lockset]", monitor) == ["adder"],
                   "adder waits for the set lock")
        assert lockset.names() == {"a", "b", "c", "d"}
        assert holder.finish() == {"a", "b", "c", "d"}
        adder.finish()
        assert lockset.names() == {"a", "b", "c", "d", "e"}

    def test_remove_blocks_while_all_set_held(self, lockset: LockSet,
                                              monitor: LockMonitor) -> None:
        holder = SetHolder(lockset, ALL_SET, shared=True)
        remover = Worker("remover", lambda: lockset.remove(["b"]))
        remover.start()
        wait_until(lambda: pending_on(lockset, "b", monitor) == ["remover"],
                   "remover waits for b")
        assert "b" in lockset.names()
        holder.finish()
        assert remover.finish() == ["b"]
        assert lockset.names() == {"a", "c", "d"}

    def test_all_set_skips_members_removed_while_waiting(self, lockset: LockSet,
                                                         monitor: LockMonitor) -> None:
        lockset.acquire(["c"])
        taker = Worker("taker", lambda: lockset.acquire(ALL_SET))
        taker.start()
        wait_until(lambda: pending_on(lockset, "c", monitor) == ["taker"], "taker waits on c")
        assert lockset.remove(["c"]) == ["c"]
        assert taker.finish() == {"a", "b", "d"}

    def test_add_by_exclusive_set_owner(self, lockset: LockSet) -> None:
        lockset.acquire(ALL_SET)
        lockset.add(["e"], acquired=True)
        assert lockset.owned() == {"a", "b", "c", "d", "e"}
        lockset.add("f")
        assert "f" in lockset.names() and "f" not in lockset.owned()
        with pytest.raises(errors.LockError, match="a"):
            lockset.add(["a", "g"])
        assert "g" not in lockset.names()
        lockset.release()
        assert not lockset.is_owned()

    def test_add_acquired_shared(self, lockset: LockSet) -> None:
        lockset.add(["x", "y"], acquired=True, shared=True)
        assert lockset.check_owned(["x", "y"], shared=1)
        assert not lockset._set_lock.is_owned()

    def test_add_refused_while_holding_members(self, lockset: LockSet) -> None:
        lockset.acquire(["a"])
        with pytest.raises(errors.LockError):
            lockset.add(["e"])
        lockset.release()
        lockset.acquire(ALL_SET, shared=True)
        with pytest.raises(errors.LockError):
            lockset.add(["e"])
        assert "e" not in lockset.names()


class TestLockSetRemove:
    def test_remove_owned_and_unowned(self, lockset: LockSet) -> None:
        lockset.acquire(["a"])
        assert lockset.remove(["a", "b", "zz"]) == ["a", "b"]
        assert lockset.names() == {"c", "d"}
        assert lockset.owned() == set()
        with pytest.raises(errors.LockError, match="a"):
            lockset.acquire(["a"])

    def test_remove_shared_refused(self, lockset: LockSet) -> None:
        lockset.acquire(["a"], shared=True)
        with pytest.raises(errors.LockError):
            lockset.remove(["a"])
        assert "a" in lockset.names()

    def test_removal_while_another_waits(self, lockset: LockSet,
                                         monitor: LockMonitor) -> None:
        lockset.acquire(["b"])
        waiter = Worker("waiter", lambda: lockset.acquire(["a", "b", "c"]))
        waiter.start()
        wait_until(lambda: pending_on(lockset, "b", monitor) == ["waiter"], "waiter on b")
        assert lockset.remove(["b"]) == ["b"]
        with pytest.raises(errors.LockError, match="b"):
            waiter.finish()
        # the waiter let go of "a" again
        assert lockset.acquire(["a", "c"], timeout=0) == {"a", "c"}


class TestLockSetTimeoutAndOpportunistic:
    def test_timeout_releases_partial_acquisition(self, lockset: LockSet,
                                                  monitor: LockMonitor) -> None:
        holder = SetHolder(lockset, ["c"])
        worker = Worker("taker", lambda: (lockset.acquire(["a", "b", "c", "d"], timeout=0.1),
                                          lockset.owned()))
        worker.start()
        assert worker.finish() == (None, set())
        for name in "abd":
            assert member(lockset, name, monitor) == (None, [], [])
        holder.finish()

    def test_all_set_timeout_releases_set_lock(self, lockset: LockSet,
                                               monitor: LockMonitor) -> None:
        holder = SetHolder(lockset, ["d"])
        worker = Worker("taker", lambda: lockset.acquire(ALL_SET, timeout=0.1))
        worker.start()
        assert worker.finish() is None
        assert member(lockset, "[lockset]", monitor) == (None, [], [])
        assert member(lockset, "a", monitor) == (None, [], [])
        holder.finish()

    def test_opportunistic_takes_only_free(self, lockset: LockSet) -> None:
        holder = SetHolder(lockset, ["b", "d"])
        assert lockset.acquire(["a", "b", "c", "d"], opportunistic=True) == {"a", "c"}
        assert lockset.owned() == {"a", "c"}
        lockset.release()
        assert lockset.acquire(ALL_SET, opportunistic=True) == {"a", "c"}
        assert lockset.owning_all()
        lockset.release()
        holder.finish()

    def test_opportunistic_nothing_free(self, lockset: LockSet) -> None:
        holder = SetHolder(lockset, ["a", "b"])
        assert lockset.acquire(["a", "b"], opportunistic=True, shared=True) == set()
        holder.finish()


# --- GanetiLockManager -------------------------------------------------------------


@pytest.fixture
def glm() -> GanetiLockManager:
    return GanetiLockManager(nodes=["node1", "node2"], nodegroups=["default"],
                             instances=["inst1", "inst2"], networks=["net1"])


class TestManager:
    def test_levels(self) -> None:
        assert locking.LEVELS == [LEVEL_CLUSTER, LEVEL_INSTANCE, LEVEL_NODEGROUP, LEVEL_NODE,
                                  LEVEL_NODE_RES, LEVEL_NETWORK] == [0, 1, 2, 3, 4, 5]
        assert locking.LEVEL_NAMES == {0: "cluster", 1: "instance", 2: "nodegroup",
                                       3: "node", 4: "node-res", 5: "network"}
        assert ALL_SET is None and BGL == "BGL"

    def test_node_levels_share_names(self, glm: GanetiLockManager) -> None:
        assert glm.names(LEVEL_NODE) == glm.names(LEVEL_NODE_RES) == {"node1", "node2"}
        assert glm.names(LEVEL_CLUSTER) == {BGL}

    def test_bgl_required(self, glm: GanetiLockManager) -> None:
        for level in locking.LEVELS[1:]:
            with pytest.raises(errors.LockError, match="BGL"):
                glm.acquire(level, ALL_SET)
        assert glm.acquire(LEVEL_CLUSTER, [BGL], shared=True) == {BGL}
        assert glm.acquire(LEVEL_NODE, ["node1"]) == {"node1"}

    def test_level_order(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, [BGL])
        glm.acquire(LEVEL_NODE, ["node2"])
        for level in (LEVEL_INSTANCE, LEVEL_NODEGROUP):
            with pytest.raises(errors.LockError, match="node"):
                glm.acquire(level, ALL_SET)
        assert not glm.is_owned(LEVEL_INSTANCE)
        with pytest.raises(errors.LockError):
            glm.acquire(LEVEL_NODE, ["node1"])  # same level twice
        assert glm.acquire(LEVEL_NODE_RES, ["node2"]) == {"node2"}
        assert glm.acquire(LEVEL_NETWORK, ALL_SET, shared=True) == {"net1"}
        assert glm.owned(LEVEL_NODE) == {"node2"} and glm.owning_all(LEVEL_NETWORK)
        assert glm.check_owned(LEVEL_NETWORK, "net1", shared=1)
        assert not glm.check_owned(LEVEL_NODE, ["node1"])

    def test_bgl_release_rule(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, [BGL])
        glm.acquire(LEVEL_INSTANCE, ["inst1"])
        with pytest.raises(errors.LockError, match="BGL"):
            glm.release(LEVEL_CLUSTER)
        assert glm.is_owned(LEVEL_CLUSTER)
        glm.release(LEVEL_INSTANCE)
        glm.release(LEVEL_CLUSTER)
        assert not glm.is_owned(LEVEL_CLUSTER)

    def test_cluster_level_immutable(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, [BGL])
        with pytest.raises(errors.LockError):
            glm.add(LEVEL_CLUSTER, ["other"])
        with pytest.raises(errors.LockError):
            glm.remove(LEVEL_CLUSTER, [BGL])
        assert glm.names(LEVEL_CLUSTER) == {BGL}

    def test_unknown_level(self, glm: GanetiLockManager) -> None:
        with pytest.raises(errors.LockError):
            glm.owned(42)

    def test_add_and_remove(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, [BGL], shared=True)
        glm.acquire(LEVEL_NODE, ["node1"])
        # registering a new instance while holding node locks is allowed
        glm.add(LEVEL_INSTANCE, ["inst3"])
        assert "inst3" in glm.names(LEVEL_INSTANCE)
        # removing an unheld earlier-level lock would have to wait out of order
        with pytest.raises(errors.LockError, match="node"):
            glm.remove(LEVEL_INSTANCE, ["inst3"])
        glm.release(LEVEL_NODE)
        assert glm.remove(LEVEL_INSTANCE, ["inst3"]) == ["inst3"]
        glm.acquire(LEVEL_NODE, ["node2"])
        assert glm.remove(LEVEL_NODE, ["node2"]) == ["node2"]
        assert glm.names(LEVEL_NODE) == {"node1"} and glm.owned(LEVEL_NODE) == set()

    def test_downgrade(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, [BGL])
        glm.acquire(LEVEL_INSTANCE, ["inst1", "inst2"])
        glm.downgrade(LEVEL_INSTANCE, ["inst2"])
        assert glm.check_owned(LEVEL_INSTANCE, "inst2", shared=1)
        assert glm.check_owned(LEVEL_INSTANCE, "inst1", shared=0)

    def test_query_locks(self, glm: GanetiLockManager) -> None:
        me = threading.current_thread().name
        glm.acquire(LEVEL_CLUSTER, [BGL], shared=True)
        glm.acquire(LEVEL_INSTANCE, ALL_SET)
        glm.acquire(LEVEL_NODEGROUP, ["default"], shared=True)
        glm.acquire(LEVEL_NODE, ["node1"])
        waiter = Worker("waiter", lambda: (glm.acquire(LEVEL_CLUSTER, [BGL], shared=True),
                                           glm.acquire(LEVEL_NODE, ["node1"], shared=True)))
        waiter.start()
        wait_until(lambda: next(r for r in glm.query_locks()
                                if r[0] == "node/node1")[3] == [("shared", ["waiter"])],
                   "waiter pending on node1")
        rows = {row[0]: row[1:] for row in glm.query_locks()}
        names = [row[0] for row in glm.query_locks()]
        assert names == sorted(names)
        assert set(rows) == {
            "cluster/BGL", "cluster/[lockset]", "instance/[lockset]", "instance/inst1",
            "instance/inst2", "nodegroup/[lockset]", "nodegroup/default", "node/[lockset]",
            "node/node1", "node/node2", "node-res/[lockset]", "node-res/node1",
            "node-res/node2", "network/[lockset]", "network/net1"}
        assert rows["cluster/BGL"] == ("shared", sorted([me, "waiter"]), [])
        assert rows["instance/[lockset]"] == ("exclusive", [me], [])
        assert rows["instance/inst2"] == ("exclusive", [me], [])
        assert rows["nodegroup/default"] == ("shared", [me], [])
        assert rows["nodegroup/[lockset]"] == (None, [], [])
        assert rows["node/node1"] == ("exclusive", [me], [("shared", ["waiter"])])
        assert rows["node/node2"] == (None, [], [])
        glm.release(LEVEL_NODE)
        waiter.finish()

    def test_shared_monitor_and_weak_registry(self, monitor: LockMonitor) -> None:
        glm = GanetiLockManager([], [], ["i1"], [], monitor=monitor)
        assert glm.monitor is monitor
        extra = SharedLock("aaa/extra", monitor)
        assert glm.query_locks()[0][0] == "aaa/extra"
        del extra
        gc.collect()
        assert "aaa/extra" not in [row[0] for row in monitor.query_locks()]
        glm.acquire(LEVEL_CLUSTER, BGL)
        glm.remove(LEVEL_INSTANCE, "i1")
        assert "instance/i1" not in [row[0] for row in monitor.query_locks()]

    def test_threads_serialised_by_bgl(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, [BGL])
        worker = Worker("w", lambda: glm.acquire(LEVEL_CLUSTER, [BGL], shared=True,
                                                 timeout=0.05))
        worker.start()
        assert worker.finish() is None


# --- Removal keeps the acquisition order (doc/locking.md, "Removal") ---------------


class _SetOps:
    """One lock set driven directly or through the manager, for the same scenario."""

    def __init__(self, monitor: LockMonitor, via_manager: bool) -> None:
        self.monitor = monitor
        self.via_manager = via_manager
        # one of the two, so the monitor shows a single "instance/<name>" per name
        if via_manager:
            self.glm = GanetiLockManager([], [], ["1", "2", "3"], [], monitor=monitor)
        else:
            self.lockset = LockSet(["1", "2", "3"], "instance", monitor)

    def acquire(self, names: list[str]) -> set[str] | None:
        if not self.via_manager:
            return self.lockset.acquire(names)
        self.glm.acquire(LEVEL_CLUSTER, BGL, shared=True)
        return self.glm.acquire(LEVEL_INSTANCE, names)

    def release(self) -> None:
        if not self.via_manager:
            self.lockset.release()
            return
        self.glm.release(LEVEL_INSTANCE)
        self.glm.release(LEVEL_CLUSTER)

    def remove(self, names: list[str]) -> list[str]:
        if self.via_manager:
            return self.glm.remove(LEVEL_INSTANCE, names)
        return self.lockset.remove(names)

    def names(self) -> set[str]:
        return self.glm.names(LEVEL_INSTANCE) if self.via_manager else self.lockset.names()

    def pending(self, name: str) -> list[str]:
        row = next(row for row in self.monitor.query_locks() if row[0] == f"instance/{name}")
        return [owner for _mode, owners in row[3] for owner in owners]


@pytest.mark.parametrize("via_manager", [False, True], ids=["lockset", "manager"])
class TestRemoveOrder:
    def test_out_of_order_removal_refused(self, monitor: LockMonitor,
                                          via_manager: bool) -> None:
        """A holds 1 and 3; B holds 2 and waits for 3; A removes 2.

        Waiting for 2 while holding 3 would deadlock with B: the removal is
        refused before anything is deleted, and both threads finish.
        """
        ops = _SetOps(monitor, via_manager)
        taken = threading.Event()
        removed = threading.Event()

        def thread_a() -> BaseException | None:
            assert ops.acquire(["1", "3"]) == {"1", "3"}
            taken.set()
            wait_until(lambda: ops.pending("3") == ["B"], "B waits for 3")
            try:
                ops.remove(["1", "2"])
            except errors.LockError as err:
                return err
            finally:
                removed.set()
                ops.release()
            return None

        def thread_b() -> set[str] | None:
            assert taken.wait(WAIT)
            got = ops.acquire(["2", "3"])
            ops.release()
            return got

        a, b = Worker("A", thread_a), Worker("B", thread_b)
        a.start()
        b.start()
        # a regression deadlocks both threads: fail after WAIT instead of hanging
        assert removed.wait(WAIT), "A's remove of 2 deadlocked with B"
        error = a.finish()
        assert isinstance(error, errors.LockError) and "lock order" in str(error)
        assert "2" in str(error)
        assert b.finish() == {"2", "3"}
        assert ops.names() == {"1", "2", "3"}  # refused as a whole: 1 is still there

    def test_in_order_removal_waits(self, monitor: LockMonitor, via_manager: bool) -> None:
        """Names sorting after every held one are taken in order, waiting if need be."""
        ops = _SetOps(monitor, via_manager)
        gate, holding = threading.Event(), threading.Event()

        def holder() -> None:
            assert ops.acquire(["3"]) == {"3"}
            holding.set()
            gate.wait(WAIT)
            ops.release()

        def remover() -> list[str]:
            assert ops.acquire(["1"]) == {"1"}
            try:
                return ops.remove(["1", "2", "3"])
            finally:
                ops.release()

        other = Worker("holder", holder)
        other.start()
        assert holding.wait(WAIT)
        worker = Worker("remover", remover)
        worker.start()
        wait_until(lambda: ops.pending("3") == ["remover"], "remover waits for 3")
        assert ops.names() == {"3"}  # 1 (held) and 2 (free) went first, in order
        gate.set()
        assert worker.finish() == ["1", "2", "3"]
        other.finish()
        assert ops.names() == set()


# --- Rules of doc/locking.md not covered above -------------------------------------


class TestDocumentedRules:
    def test_downgrade_leaves_sharers_behind_an_exclusive_waiter(self) -> None:
        lock = SharedLock("l")
        lock.acquire()
        gate = threading.Event()
        order: list[str] = []
        workers = [start_waiter(lock, "s1", hold_until(lock, True, gate, order)),
                   start_waiter(lock, "x", hold_until(lock, False, gate, order)),
                   start_waiter(lock, "s2", hold_until(lock, True, gate, order))]
        assert lock.downgrade() is True
        me = threading.current_thread().name
        wait_until(lambda: sorted(owners(lock)) == sorted([me, "s1"]), "s1 joined")
        # s2 is a sharer too, but queued behind x: it keeps waiting for x
        assert lock.info()[3] == [("exclusive", ["x"]), ("shared", ["s2"])]
        lock.release()
        gate.set()
        for worker in workers:
            worker.finish()
        assert order == ["s1", "x", "s2"]

    def test_opportunistic_skips_unknown_names(self, lockset: LockSet) -> None:
        assert lockset.acquire(["a", "zz", "c"], opportunistic=True) == {"a", "c"}
        assert lockset.owned() == {"a", "c"}
        lockset.release()
        assert lockset.acquire(["zz"], opportunistic=True, shared=True) == set()
        assert not lockset.is_owned()
        # explicit (non-opportunistic) acquisitions still refuse them
        with pytest.raises(errors.LockError, match="zz"):
            lockset.acquire(["a", "zz"])
        assert not lockset.is_owned()

    def test_opportunistic_unknown_names_through_manager(self, glm: GanetiLockManager) -> None:
        glm.acquire(LEVEL_CLUSTER, BGL, shared=True)
        got = glm.acquire(LEVEL_INSTANCE, ["inst1", "gone"], shared=True, opportunistic=True)
        assert got == {"inst1"} and glm.owned(LEVEL_INSTANCE) == {"inst1"}

    def test_check_owned_is_a_subset_test(self, lockset: LockSet,
                                          glm: GanetiLockManager) -> None:
        # nothing asked, nothing missing: True even when nothing is held
        assert lockset.check_owned([]) and lockset.check_owned([], shared=0)
        lockset.acquire(["a"], shared=True)
        assert lockset.check_owned([]) and lockset.check_owned(["a"], shared=1)
        assert not lockset.check_owned(["a", "b"])
        assert glm.check_owned(LEVEL_NODE, [])

    def test_remove_of_a_shared_hold_removes_nothing(self, lockset: LockSet) -> None:
        lockset.acquire(["a", "b"])
        lockset.downgrade(["b"])
        with pytest.raises(errors.LockError, match=r"exclusively.*: b$"):
            lockset.remove(["a", "b"])
        assert lockset.names() == {"a", "b", "c", "d"}
        assert lockset.check_owned("a", shared=0) and lockset.check_owned("b", shared=1)


def test_doc_cites_existing_tests() -> None:
    """Every test doc/locking.md names for a rule exists here (the doc stays honest)."""
    doc = (Path(__file__).resolve().parents[2] / "doc" / "locking.md").read_text()
    cited = re.findall(r"`((?:Test\w+::)?(?:test_\w+|\*))`", doc)
    assert len(cited) > 20
    module = sys.modules[__name__]
    classes = {name: obj for name, obj in vars(module).items() if isinstance(obj, type)}
    functions = {name for obj in [module, *classes.values()] for name in vars(obj)
                 if name.startswith("test_")}
    for ref in cited:
        cls, _, func = ref.rpartition("::")
        if cls:
            assert cls in classes, f"doc/locking.md cites missing class {cls}"
            assert func == "*" or func in vars(classes[cls]), f"missing test {ref}"
        else:
            assert func in functions, f"doc/locking.md cites missing test {func}"
