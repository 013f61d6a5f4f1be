"""Thread-based lock manager: shared locks, lock sets and the leveled manager.

Every opcode runs in a worker thread and holds real locks while it runs, so the
owner of a lock is always the calling thread.  Deadlock freedom comes from a
fixed acquisition order: levels in increasing order, names within one level in
sorted order.

Waiters are queued by priority (lower number first) and FIFO within one
priority, sharers included: a sharer queued behind an exclusive waiter waits
for it, so writers are never starved by a stream of readers.  Releasing hands
the lock over directly to the next waiter(s), so a woken thread never has to
compete again and the queue order is exactly the order in which the lock is
granted.  doc/locking.md states every rule and where it differs from Ganeti.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Final

from ganeti import errors

EXCLUSIVE: Final = "exclusive"
SHARED: Final = "shared"

# (name, mode, owners, pending) as shown by "gnt-debug locks"
LockInfo = tuple[str, str | None, list[str], list[tuple[str, list[str]]]]

# Owners are Thread objects (not idents): cheap to hash, never reused, and
# their names stay readable for the monitor even after the thread has ended.
_current_thread = threading.current_thread
_allocate_lock = threading.Lock


class LockMonitor:
    """Weak registry of locks, so listing them never keeps a deleted lock alive."""

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._locks: weakref.WeakSet[SharedLock] = weakref.WeakSet()

    def register(self, lock: SharedLock) -> None:
        with self._lock:
            self._locks.add(lock)

    def unregister(self, lock: SharedLock) -> None:
        with self._lock:
            self._locks.discard(lock)

    def query_locks(self) -> list[LockInfo]:
        with self._lock:
            locks = list(self._locks)
        return sorted((lock.info() for lock in locks), key=lambda row: row[0])


class _Waiter:
    """One queued acquire; its private lock is the wake-up signal."""

    __slots__ = ("deleted", "granted", "owner", "priority", "seq", "shared", "wake")

    def __init__(self, owner: threading.Thread, shared: bool, priority: int,
                 seq: int) -> None:
        self.owner = owner
        self.shared = shared
        self.priority = priority
        self.seq = seq
        self.granted = False
        self.deleted = False
        self.wake = _allocate_lock()
        self.wake.acquire()


def _queue_key(waiter: _Waiter) -> tuple[int, int]:
    return (waiter.priority, waiter.seq)


class SharedLock:
    """A lock held by one exclusive owner or by any number of sharers."""

    __slots__ = ("__weakref__", "_deleted", "_exclusive", "_lock", "_monitor", "_name",
                 "_queue", "_seq", "_sharers")

    def __init__(self, name: str, monitor: LockMonitor | None = None) -> None:
        self._name = name
        self._lock = _allocate_lock()
        self._exclusive: threading.Thread | None = None
        self._sharers: set[threading.Thread] = set()
        # sorted by (priority, seq); at rest its head is never grantable
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()
        self._deleted = False
        self._monitor = monitor
        if monitor is not None:
            monitor.register(self)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<SharedLock {self._name!r}>"

    def acquire(self, shared: bool = False, timeout: float | None = None,
                priority: int = 0) -> bool:
        """Take the lock; False if ``timeout`` seconds pass first."""
        me = _current_thread()
        with self._lock:
            if self._deleted:
                raise errors.LockDeletedError(f"Lock {self._name} has been deleted")
            if me == self._exclusive or me in self._sharers:
                raise errors.LockError(f"Lock {self._name} is already owned by this thread")
            if not self._queue and self._exclusive is None:
                if shared:
                    self._sharers.add(me)
                    return True
                if not self._sharers:
                    self._exclusive = me
                    return True
            waiter = _Waiter(me, shared, priority, next(self._seq))
            bisect.insort(self._queue, waiter, key=_queue_key)
            self._grant()
            if waiter.granted:
                return True
            if timeout is not None and timeout <= 0:
                self._queue.remove(waiter)
                self._grant()
                return False
        try:
            woken = waiter.wake.acquire(True, -1 if timeout is None else timeout)
        except BaseException:
            self._abandon(waiter)
            raise
        if woken and waiter.granted:
            return True
        with self._lock:
            if waiter.granted:
                return True
            if waiter.deleted:
                raise errors.LockDeletedError(f"Lock {self._name} has been deleted")
            self._queue.remove(waiter)
            self._grant()
            return False

    def _abandon(self, waiter: _Waiter) -> None:
        """Undo a wait interrupted by an exception, whatever state it reached."""
        with self._lock:
            if waiter.granted:
                if self._exclusive == waiter.owner:
                    self._exclusive = None
                self._sharers.discard(waiter.owner)
            elif not waiter.deleted:
                self._queue.remove(waiter)
            self._grant()

    def _grant(self) -> None:
        """Hand the lock to the head of the queue if it can run now (lock held)."""
        queue = self._queue
        if not queue or self._exclusive is not None:
            return
        head = queue[0]
        if not head.shared:
            if self._sharers:
                return
            del queue[0]
            self._exclusive = head.owner
            head.granted = True
            head.wake.release()
            return
        count = 1
        while count < len(queue) and queue[count].shared:
            count += 1
        woken = queue[:count]
        del queue[:count]
        for waiter in woken:
            self._sharers.add(waiter.owner)
            waiter.granted = True
            waiter.wake.release()

    def release(self) -> None:
        me = _current_thread()
        with self._lock:
            if me == self._exclusive:
                self._exclusive = None
            elif me in self._sharers:
                self._sharers.remove(me)
            else:
                raise errors.LockError(f"Lock {self._name} is not owned by this thread")
            if self._queue:
                self._grant()

    def downgrade(self) -> bool:
        """Turn an exclusive hold into a shared one (a shared hold stays as it is).

        Only the sharers at the head of the queue join, up to the first exclusive
        waiter: those queued behind it keep waiting for it (Ganeti lets them jump
        ahead; FIFO protects the writer).
        """
        me = _current_thread()
        with self._lock:
            if me in self._sharers:
                return True
            if me != self._exclusive:
                raise errors.LockError(f"Lock {self._name} is not owned by this thread")
            self._exclusive = None
            self._sharers.add(me)
            self._grant()
            return True

    def delete(self, timeout: float | None = None, priority: int = 0) -> bool:
        """Delete the lock (taking it exclusively first); False on timeout."""
        me = _current_thread()
        with self._lock:
            if self._deleted:
                raise errors.LockDeletedError(f"Lock {self._name} has been deleted")
            if me in self._sharers:
                raise errors.LockError(f"Lock {self._name} must be owned exclusively to delete")
            owned = me == self._exclusive
        if not owned and not self.acquire(False, timeout, priority):
            return False
        with self._lock:
            self._deleted = True
            self._exclusive = None
            waiters, self._queue = self._queue, []
            for waiter in waiters:
                waiter.deleted = True
                waiter.wake.release()
        if self._monitor is not None:
            self._monitor.unregister(self)
        return True

    def is_owned(self, shared: int = -1) -> bool:
        """Whether this thread holds the lock (-1 any mode, 0 exclusive, 1 shared)."""
        me = _current_thread()
        with self._lock:
            if shared < 0:
                return me == self._exclusive or me in self._sharers
            if shared == 0:
                return me == self._exclusive
            return me in self._sharers

    @property
    def deleted(self) -> bool:
        return self._deleted

    def info(self) -> LockInfo:
        with self._lock:
            if self._exclusive is not None:
                mode: str | None = EXCLUSIVE
                owners = [self._exclusive.name]
            elif self._sharers:
                mode = SHARED
                owners = sorted(thread.name for thread in self._sharers)
            else:
                mode, owners = None, []
            pending: list[tuple[str, list[str]]] = []
            for waiter in self._queue:
                if waiter.shared and pending and pending[-1][0] == SHARED:
                    pending[-1][1].append(waiter.owner.name)
                else:
                    pending.append((SHARED if waiter.shared else EXCLUSIVE,
                                    [waiter.owner.name]))
        return (self._name, mode, owners, pending)


ALL_SET: Final = None
_SET_LOCK_NAME: Final = "[lockset]"


def _as_names(names: str | Iterable[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


class _Deadline:
    __slots__ = ("_end",)

    def __init__(self, timeout: float | None) -> None:
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())


class LockSet:
    """Named shared locks plus a set-level lock that freezes the membership.

    Holding the set lock (any mode) blocks :meth:`add`, so whoever acquired
    ``ALL_SET`` keeps owning every member.
    """

    def __init__(self, members: Iterable[str], name: str,
                 monitor: LockMonitor | None = None) -> None:
        self._name = name
        self._monitor = monitor
        self._lock = _allocate_lock()
        self._set_lock = SharedLock(self._lock_name(_SET_LOCK_NAME), monitor)
        self._members: dict[str, SharedLock] = {
            member: SharedLock(self._lock_name(member), monitor) for member in members}
        self._local = threading.local()

    @property
    def name(self) -> str:
        return self._name

    def _lock_name(self, member: str) -> str:
        return f"{self._name}/{member}"

    def _owned_set(self) -> set[str]:
        try:
            owned: set[str] = self._local.owned
        except AttributeError:
            owned = self._local.owned = set()
        return owned

    def names(self) -> set[str]:
        with self._lock:
            return set(self._members)

    def exists(self, name: str) -> bool:
        """Whether ``name`` is a member (without copying 10,000 names as names() does)."""
        with self._lock:
            return name in self._members

    def owned(self) -> set[str]:
        return set(self._owned_set())

    def is_owned(self) -> bool:
        return bool(self._owned_set()) or self._set_lock.is_owned()

    def owning_all(self) -> bool:
        return self._set_lock.is_owned()

    def check_owned(self, names: str | Iterable[str], shared: int = -1) -> bool:
        """Whether this thread holds every one of ``names`` (in mode ``shared``).

        A subset test, so no names gives True (Ganeti 2.x said False): it agrees
        with ``set(names) <= owned()`` and ``LogicalUnit.check_locks_owned``, and
        an assertion over a legitimately empty list (an LU needing no locks at a
        level) holds.
        """
        wanted = _as_names(names)
        owned = self._owned_set()
        if not all(name in owned for name in wanted):
            return False
        with self._lock:
            locks = [self._members.get(name) for name in wanted]
        return all(lock is not None and lock.is_owned(shared) for lock in locks)

    def _lookup(self, names: Iterable[str],
                skip_missing: bool = False) -> list[tuple[str, SharedLock]]:
        members = self._members
        with self._lock:
            if skip_missing:
                return [(name, members[name]) for name in sorted(names) if name in members]
            missing = sorted(name for name in names if name not in members)
            if missing:
                raise errors.LockError(
                    f"Non-existing locks in set {self._name}: {', '.join(missing)}")
            return [(name, members[name]) for name in sorted(names)]

    def acquire(self, names: str | Iterable[str] | None, timeout: float | None = None,
                shared: bool = False, priority: int = 0,
                opportunistic: bool = False) -> set[str] | None:
        """Take the named locks (``ALL_SET``: every member) in sorted order.

        Returns the names taken, or None on timeout, in which case nothing taken
        by this call is kept.  Opportunistic mode never waits for members and
        returns whatever was free, skipping names that are not members, as
        Ganeti does (with ``ALL_SET`` it still takes the set lock, shared, so the
        membership it looked at stays put).
        """
        if self.is_owned():
            raise errors.LockError(f"Locks in set {self._name} are already owned")
        deadline = _Deadline(timeout)
        if names is ALL_SET:
            set_shared = shared or opportunistic
            if not self._set_lock.acquire(set_shared, deadline.remaining(), priority):
                return None
            with self._lock:
                targets = sorted(self._members.items())
        else:
            targets = self._lookup(set(_as_names(names)), skip_missing=opportunistic)
        owned = self._owned_set()
        # a member removed while we wait is simply gone for ALL_SET and
        # opportunistic callers; explicit callers must learn about it
        skip_deleted = names is ALL_SET or opportunistic
        try:
            for name, lock in targets:
                wait = 0.0 if opportunistic else deadline.remaining()
                try:
                    got = lock.acquire(shared, wait, priority)
                except errors.LockDeletedError:
                    if skip_deleted:
                        continue
                    raise errors.LockError(
                        f"Lock {name} was removed from set {self._name} while waiting")
                if got:
                    owned.add(name)
                elif not opportunistic:
                    self.release()
                    return None
        except BaseException:
            self.release()
            raise
        return set(owned)

    def release(self, names: str | Iterable[str] | None = None) -> None:
        """Release the given names, or everything held here (incl. the set lock).

        Any partial release also drops the set lock; owning nothing is a no-op.
        """
        owned = self._owned_set()
        if names is None:
            targets = sorted(owned)
        else:
            targets = sorted(set(_as_names(names)))
            foreign = [name for name in targets if name not in owned]
            if foreign:
                raise errors.LockError(
                    f"Locks not owned in set {self._name}: {', '.join(foreign)}")
        with self._lock:
            locks = [(name, self._members[name]) for name in targets]
        # partial release: the set lock would otherwise claim "owning all"
        if self._set_lock.is_owned():
            self._set_lock.release()
        for name, lock in locks:
            owned.discard(name)
            lock.release()

    def downgrade(self, names: str | Iterable[str] | None = None) -> bool:
        owned = self._owned_set()
        targets = sorted(owned) if names is None else sorted(set(_as_names(names)))
        foreign = [name for name in targets if name not in owned]
        if foreign:
            raise errors.LockError(f"Locks not owned in set {self._name}: {', '.join(foreign)}")
        with self._lock:
            locks = [self._members[name] for name in targets]
        for lock in locks:
            lock.downgrade()
        if self._set_lock.is_owned(shared=0) and (
                names is None or self.check_owned(owned, shared=1)):
            self._set_lock.downgrade()
        return True

    def add(self, names: str | Iterable[str], acquired: bool = False,
            shared: bool = False) -> None:
        """Create new members, optionally already held by the caller.

        Waits for the set lock unless the caller holds it exclusively, so it
        never slips new members past an ``ALL_SET`` holder.  Refused while the
        caller holds the set lock shared or some members without it: an
        ``ALL_SET`` acquirer queued on those would never let go of the set lock.
        """
        new = sorted(set(_as_names(names)))
        take_set_lock = not self._set_lock.is_owned(shared=0)
        if take_set_lock:
            if self._set_lock.is_owned() or self._owned_set():
                # an ALL_SET acquirer holding the set lock may be queued on our
                # members: waiting for the set lock could deadlock
                raise errors.LockError(
                    f"Cannot add to set {self._name} while holding some of its locks"
                    " but not the set lock exclusively")
            self._set_lock.acquire(shared=False)
        try:
            with self._lock:
                existing = [name for name in new if name in self._members]
                if existing:
                    raise errors.LockError(
                        f"Locks already exist in set {self._name}: {', '.join(existing)}")
                locks = {name: SharedLock(self._lock_name(name), self._monitor)
                         for name in new}
                if acquired:
                    for lock in locks.values():
                        lock.acquire(shared)
                    self._owned_set().update(locks)
                self._members.update(locks)
        finally:
            if take_set_lock:
                self._set_lock.release()

    def remove(self, names: str | Iterable[str],
               check_wait: Callable[[], None] | None = None) -> list[str]:
        """Delete members: those held must be held exclusively, the others are taken first.

        Taking a lock this thread does not hold keeps the acquisition order: every
        such name must sort after every member the caller holds (the set lock
        alone is fine, it comes first).  Otherwise the call is refused before
        anything is deleted, as waiting could deadlock with a holder of that name
        queued on one of ours.  ``check_wait`` runs before any waiting and may
        refuse by raising.  Names that are not (or no longer) members are skipped;
        the names actually removed are returned.
        """
        owned = self._owned_set()
        with self._lock:
            locks = [(name, self._members[name]) for name in sorted(set(_as_names(names)))
                     if name in self._members]
        shared = [name for name, lock in locks if name in owned and not lock.is_owned(shared=0)]
        if shared:
            raise errors.LockError(
                f"Locks in set {self._name} must be owned exclusively to remove them:"
                f" {', '.join(shared)}")
        unowned = [name for name, _lock in locks if name not in owned]
        if unowned and owned:
            highest = max(owned)
            early = [name for name in unowned if name < highest]
            if early:
                raise errors.LockError(
                    f"Cannot remove {', '.join(early)} from set {self._name} without"
                    f" holding them: waiting for them while holding {highest} would break"
                    " the lock order")
        if unowned and check_wait is not None:
            check_wait()
        removed: list[str] = []
        for name, lock in locks:
            try:
                lock.delete()
            except errors.LockDeletedError:
                continue
            owned.discard(name)
            with self._lock:
                if self._members.get(name) is lock:
                    del self._members[name]
            removed.append(name)
        return removed


LEVEL_CLUSTER: Final = 0
LEVEL_INSTANCE: Final = 1
LEVEL_NODEGROUP: Final = 2
LEVEL_NODE: Final = 3
LEVEL_NODE_RES: Final = 4
LEVEL_NETWORK: Final = 5

LEVELS: Final = [LEVEL_CLUSTER, LEVEL_INSTANCE, LEVEL_NODEGROUP, LEVEL_NODE,
                 LEVEL_NODE_RES, LEVEL_NETWORK]
# levels whose members come and go with the configuration
LEVELS_MOD: Final = frozenset(LEVELS) - {LEVEL_CLUSTER}
LEVEL_NAMES: Final = {
    LEVEL_CLUSTER: "cluster",
    LEVEL_INSTANCE: "instance",
    LEVEL_NODEGROUP: "nodegroup",
    LEVEL_NODE: "node",
    LEVEL_NODE_RES: "node-res",
    LEVEL_NETWORK: "network",
}
BGL: Final = "BGL"


class GanetiLockManager:
    """One lock set per level, enforcing the global acquisition order."""

    def __init__(self, nodes: Iterable[str], nodegroups: Iterable[str],
                 instances: Iterable[str], networks: Iterable[str],
                 monitor: LockMonitor | None = None) -> None:
        self._monitor = LockMonitor() if monitor is None else monitor
        node_names = list(nodes)
        members: dict[int, Iterable[str]] = {
            LEVEL_CLUSTER: [BGL],
            LEVEL_INSTANCE: instances,
            LEVEL_NODEGROUP: nodegroups,
            LEVEL_NODE: node_names,
            LEVEL_NODE_RES: node_names,
            LEVEL_NETWORK: networks,
        }
        self._sets = {level: LockSet(members[level], LEVEL_NAMES[level], self._monitor)
                      for level in LEVELS}

    @property
    def monitor(self) -> LockMonitor:
        return self._monitor

    def _set(self, level: int) -> LockSet:
        try:
            return self._sets[level]
        except KeyError:
            raise errors.LockError(f"Unknown lock level {level!r}") from None

    def _later_owned(self, level: int) -> list[int]:
        return [other for other in LEVELS if other > level and self._sets[other].is_owned()]

    def _check_can_wait(self, level: int, action: str) -> None:
        """Refuse anything that could wait for locks out of the global order."""
        if level != LEVEL_CLUSTER and not self._sets[LEVEL_CLUSTER].is_owned():
            raise errors.LockError(f"Cannot {action} at level {LEVEL_NAMES[level]}"
                                   " without holding the BGL")
        later = self._later_owned(level)
        if later:
            raise errors.LockError(
                f"Cannot {action} at level {LEVEL_NAMES[level]} while holding locks at"
                f" level(s) {', '.join(LEVEL_NAMES[other] for other in later)}")

    def acquire(self, level: int, names: str | Iterable[str] | None,
                timeout: float | None = None, shared: bool = False, priority: int = 0,
                opportunistic: bool = False) -> set[str] | None:
        lockset = self._set(level)
        self._check_can_wait(level, "acquire locks")
        return lockset.acquire(names, timeout=timeout, shared=shared, priority=priority,
                               opportunistic=opportunistic)

    def release(self, level: int, names: str | Iterable[str] | None = None) -> None:
        lockset = self._set(level)
        if level == LEVEL_CLUSTER and self._later_owned(level):
            raise errors.LockError("Cannot release the BGL while holding other locks")
        lockset.release(names)

    def downgrade(self, level: int, names: str | Iterable[str] | None = None) -> bool:
        return self._set(level).downgrade(names)

    def _check_mod_level(self, level: int) -> LockSet:
        lockset = self._set(level)
        if level not in LEVELS_MOD:
            raise errors.LockError(f"Cannot add or remove locks at level {LEVEL_NAMES[level]}")
        return lockset

    def add(self, level: int, names: str | Iterable[str], acquired: bool = False,
            shared: bool = False) -> None:
        """Create locks; waits only for holders of the level's set lock.

        Unlike acquire this is allowed while holding later levels (a logical
        unit registers the instance it created while holding node locks), so an
        ``ALL_SET`` holder at this level must not wait for those later locks
        without a timeout.
        """
        self._check_mod_level(level).add(names, acquired=acquired, shared=shared)

    def remove(self, level: int, names: str | Iterable[str]) -> list[str]:
        """Delete locks; those not held are acquired first, in the global order.

        Names not held may only be waited for as an acquire could: holding the
        BGL, no locks at later levels and, within the level, none sorting after
        them (see :meth:`LockSet.remove`).
        """
        return self._check_mod_level(level).remove(
            names, check_wait=lambda: self._check_can_wait(level, "remove locks"))

    def owned(self, level: int) -> set[str]:
        return self._set(level).owned()

    def is_owned(self, level: int) -> bool:
        return self._set(level).is_owned()

    def check_owned(self, level: int, names: str | Iterable[str], shared: int = -1) -> bool:
        return self._set(level).check_owned(names, shared)

    def owning_all(self, level: int) -> bool:
        return self._set(level).owning_all()

    def names(self, level: int) -> set[str]:
        return self._set(level).names()

    def exists(self, level: int, name: str) -> bool:
        return self._set(level).exists(name)

    def query_locks(self) -> list[LockInfo]:
        return self._monitor.query_locks()
