"""Lock manager costs: uncontended SharedLock and 1,000-name LockSet acquisitions.

Run: .venv/bin/python test/bench/bench_locking.py
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from ganeti.locking import ALL_SET, LockMonitor, LockSet, SharedLock

SHARED_LOCK_GOAL_US = 10.0
LOCKSET_GOAL_MS = 10.0


def per_call_us(func: Callable[[], None], calls: int = 2000, rounds: int = 51) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def lockset_ms(names: list[str] | None, size: int = 1000, rounds: int = 31) -> float:
    """Median time of one acquire of ``names`` (None: ALL_SET) in a fresh-ish set."""
    lockset = LockSet([f"inst{i:04d}" for i in range(size)], "instance", LockMonitor())
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        got = lockset.acquire(ALL_SET if names is None else names)
        samples.append((time.perf_counter() - start) * 1e3)
        assert got is not None and len(got) == size
        lockset.release()
    return statistics.median(samples)


def main() -> None:
    raw = threading.Lock()

    def raw_cycle() -> None:
        raw.acquire()
        raw.release()

    lock = SharedLock("bench", LockMonitor())

    def exclusive_cycle() -> None:
        lock.acquire()
        lock.release()

    def shared_cycle() -> None:
        lock.acquire(shared=True)
        lock.release()

    raw_us = per_call_us(raw_cycle)
    excl_us = per_call_us(exclusive_cycle)
    shared_us = per_call_us(shared_cycle)
    names = [f"inst{i:04d}" for i in range(1000)]
    all_ms = lockset_ms(None)
    explicit_ms = lockset_ms(list(reversed(names)))

    def verdict(value: float, goal: float) -> str:
        return "ok" if value < goal else "MISSED"

    print(f"threading.Lock acquire+release:          {raw_us:8.3f} us")
    print(f"SharedLock exclusive acquire+release:    {excl_us:8.3f} us"
          f"  ({excl_us / raw_us:.1f}x raw; goal < {SHARED_LOCK_GOAL_US:g} us:"
          f" {verdict(excl_us, SHARED_LOCK_GOAL_US)})")
    print(f"SharedLock shared acquire+release:       {shared_us:8.3f} us"
          f"  ({shared_us / raw_us:.1f}x raw; goal < {SHARED_LOCK_GOAL_US:g} us:"
          f" {verdict(shared_us, SHARED_LOCK_GOAL_US)})")
    print(f"LockSet 1,000 names ALL_SET acquire:     {all_ms:8.3f} ms"
          f"  (goal < {LOCKSET_GOAL_MS:g} ms: {verdict(all_ms, LOCKSET_GOAL_MS)})")
    print(f"LockSet 1,000 names explicit acquire:    {explicit_ms:8.3f} ms"
          f"  (goal < {LOCKSET_GOAL_MS:g} ms: {verdict(explicit_ms, LOCKSET_GOAL_MS)})")


if __name__ == "__main__":
    main()
