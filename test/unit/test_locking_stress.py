"""Random concurrent use of the lock manager: mutual exclusion and no deadlock."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ganeti import errors, locking
from ganeti.locking import BGL, LEVEL_CLUSTER, LEVEL_INSTANCE, GanetiLockManager

JOIN_BOUND = 20.0  # seconds every thread gets to finish; far above real needs
# no shrinking: with a deadlock every shrink step would wait out JOIN_BOUND
PHASES = [Phase.explicit, Phase.reuse, Phase.generate]

MEMBERS = {
    locking.LEVEL_INSTANCE: ["i1", "i2", "i3"],
    locking.LEVEL_NODEGROUP: ["g1", "g2"],
    locking.LEVEL_NODE: ["n1", "n2", "n3"],
    locking.LEVEL_NODE_RES: ["n1", "n2", "n3"],
    locking.LEVEL_NETWORK: ["net1", "net2"],
}
TIMEOUTS = [None, None, 0.0, 0.001, 0.01]


@dataclass
class Step:
    level: int
    names: list[str] | None
    shared: bool
    timeout: float | None
    opportunistic: bool
    hold: float  # seconds to keep the locks, creating contention (not synchronisation)


@dataclass
class Transaction:
    bgl_shared: bool
    priority: int
    steps: list[Step] = field(default_factory=list)
    churn: bool = False  # add and remove a private instance lock instead


@st.composite
def steps(draw: st.DrawFn, level: int) -> Step:
    names = draw(st.one_of(
        st.none(), st.permutations(MEMBERS[level]),
        st.lists(st.sampled_from(MEMBERS[level]), min_size=1, unique=True)))
    return Step(level, names, draw(st.booleans()), draw(st.sampled_from(TIMEOUTS)),
                draw(st.booleans()) and draw(st.booleans()),
                draw(st.sampled_from([0.0, 0.001, 0.002])))


@st.composite
def transactions(draw: st.DrawFn) -> Transaction:
    levels = draw(st.lists(st.sampled_from(sorted(MEMBERS)), unique=True, max_size=4))
    return Transaction(
        bgl_shared=draw(st.integers(0, 5)) > 0,
        priority=draw(st.sampled_from([-20, -10, 0, 0, 10, 19])),
        steps=[draw(steps(level)) for level in sorted(levels)],
        churn=draw(st.integers(0, 7)) == 0,
    )


class Tracker:
    """Independent book of who holds what, filled between acquire and release."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, dict[str, bool]] = {}  # lock -> thread -> shared
        self.violations: list[str] = []

    def took(self, lock: str, shared: bool) -> None:
        me = threading.current_thread().name
        with self._lock:
            holders = self._holders.setdefault(lock, {})
            others = {name: mode for name, mode in holders.items() if name != me}
            if others and (not shared or not all(others.values())):
                self.violations.append(
                    f"{me} got {lock} {'shared' if shared else 'exclusive'}"
                    f" while held by {others}")
            holders[me] = shared

    def dropping(self, lock: str) -> None:
        me = threading.current_thread().name
        with self._lock:
            self._holders.get(lock, {}).pop(me, None)


def run_transaction(glm: GanetiLockManager, tracker: Tracker, tx: Transaction,
                    serial: int) -> None:
    me = threading.current_thread().name
    if not glm.acquire(LEVEL_CLUSTER, [BGL], shared=tx.bgl_shared, timeout=None,
                       priority=tx.priority):
        raise AssertionError("BGL acquire without timeout returned None")
    tracker.took(f"cluster/{BGL}", tx.bgl_shared)
    held: list[tuple[int, set[str], bool]] = []
    try:
        if tx.churn:
            name = f"tmp-{me}-{serial}"
            glm.add(LEVEL_INSTANCE, [name])
            assert glm.remove(LEVEL_INSTANCE, [name]) == [name]
            return
        for step in tx.steps:
            got = glm.acquire(step.level, step.names, timeout=step.timeout,
                              shared=step.shared, priority=tx.priority,
                              opportunistic=step.opportunistic)
            if got is None:
                assert not glm.is_owned(step.level)
                break
            level_name = locking.LEVEL_NAMES[step.level]
            for name in got:
                tracker.took(f"{level_name}/{name}", step.shared)
            held.append((step.level, got, step.shared))
            assert glm.owned(step.level) == got
            assert glm.check_owned(step.level, got, shared=1 if step.shared else 0)
            if step.names is not None and not step.opportunistic:
                assert got == set(step.names)
            if step.hold:
                time.sleep(step.hold)
    finally:
        for level, names, _shared in reversed(held):
            for name in names:
                tracker.dropping(f"{locking.LEVEL_NAMES[level]}/{name}")
            glm.release(level)
        tracker.dropping(f"cluster/{BGL}")
        glm.release(LEVEL_CLUSTER)
        for level in locking.LEVELS:
            assert not glm.is_owned(level)


@settings(max_examples=30, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow])
@given(plans=st.lists(st.lists(transactions(), min_size=1, max_size=8),
                      min_size=3, max_size=4))
def test_random_concurrent_use(plans: list[list[Transaction]]) -> None:
    glm = GanetiLockManager(nodes=MEMBERS[locking.LEVEL_NODE],
                            nodegroups=MEMBERS[locking.LEVEL_NODEGROUP],
                            instances=MEMBERS[locking.LEVEL_INSTANCE],
                            networks=MEMBERS[locking.LEVEL_NETWORK])
    tracker = Tracker()
    failures: list[BaseException] = []
    start = threading.Barrier(len(plans))

    def body(plan: list[Transaction]) -> None:
        try:
            start.wait(JOIN_BOUND)
            for serial, tx in enumerate(plan):
                run_transaction(glm, tracker, tx, serial)
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=body, args=(plan,), name=f"t{i}", daemon=True)
               for i, plan in enumerate(plans)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_BOUND)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads did not finish (deadlock?): {stuck}; {glm.query_locks()}"
    assert not failures, failures
    assert not tracker.violations, tracker.violations
    # nothing leaked: every lock is free and nobody is queued
    for name, mode, owners, pending in glm.query_locks():
        assert (mode, owners, pending) == (None, [], []), name
    assert glm.names(LEVEL_INSTANCE) == set(MEMBERS[LEVEL_INSTANCE])


NODES = ["n1", "n2", "n3", "n4"]


@settings(max_examples=10, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow])
@given(orders=st.lists(st.permutations(NODES), min_size=3, max_size=5),
       shared=st.lists(st.booleans(), min_size=5, max_size=5))
def test_no_deadlock_whatever_order_names_come_in(orders: list[list[str]],
                                                   shared: list[bool]) -> None:
    """Waiting without timeouts for the same names listed in different orders."""
    glm = GanetiLockManager(nodes=NODES, nodegroups=[], instances=[], networks=[])
    tracker = Tracker()
    failures: list[BaseException] = []
    start = threading.Barrier(len(orders))

    def body(order: list[str], mode: bool) -> None:
        try:
            start.wait(JOIN_BOUND)
            for serial in range(15):
                tx = Transaction(bgl_shared=True, priority=0, steps=[
                    Step(locking.LEVEL_NODE, order, mode and serial % 2 == 0, None, False,
                         0.0005)])
                run_transaction(glm, tracker, tx, serial)
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=body, args=(order, mode), name=f"p{i}", daemon=True)
               for i, (order, mode) in enumerate(zip(orders, shared, strict=False))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_BOUND)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"threads did not finish (deadlock?): {stuck}; {glm.query_locks()}"
    assert not failures, failures
    assert not tracker.violations, tracker.violations


def test_tracker_detects_overlap() -> None:
    """The instrumentation itself must be able to fail."""
    tracker = Tracker()
    tracker.took("x", shared=True)
    worker = threading.Thread(target=tracker.took, args=("x", False), name="other")
    worker.start()
    worker.join(JOIN_BOUND)
    assert tracker.violations and "other" in tracker.violations[0]


def test_lock_errors_are_not_swallowed() -> None:
    glm = GanetiLockManager([], [], [], [])
    tx = Transaction(bgl_shared=True, priority=0,
                     steps=[Step(LEVEL_INSTANCE, ["missing"], False, None, False, 0.0)])
    try:
        run_transaction(glm, Tracker(), tx, 0)
    except errors.LockError:
        pass
    else:
        raise AssertionError("acquiring an unknown lock did not fail")
    assert not glm.is_owned(LEVEL_CLUSTER)
