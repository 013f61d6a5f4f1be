"""Token buckets that cap the wire bytes per second of transfer streams.

A bucket refills at ``rate`` bytes/s (monotonic clock) up to ``burst`` bytes
of credit.  :meth:`TokenBucket.reserve` spends bytes before they are sent,
going into debt if need be, and says how long to wait first: several streams
sharing a bucket then get the rate in turn, in the order they asked.  Waits
happen on the stream's abort event, so an abort still stops a throttled
stream at once, and nothing ever polls.

The node daemon keeps two kinds of bucket: one per export (``group``, shared
by the export's disk streams, the per-export ``--bwlimit``) and one for the
whole node (``Node.backup_bwlimit``), which every stream the node sends or
receives draws from.  Unlimited streams get no :class:`Limiter` at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ganeti.transfer import TransferAborted

KIB = 1024
# Credit a bucket keeps while idle, and the bytes per reservation: 100 ms worth
# of the rate, so a limited stream sends in small steps rather than in bursts
SLICE = 0.1
# Smallest step: below that the per-send overhead grows (TLS records are 16 KiB)
MIN_CHUNK = 4 * KIB
Clock = Callable[[], float]


class TokenBucket:
    """``rate`` bytes/s (0: unlimited); thread-safe."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Clock = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._fixed_burst = burst
        self._rate = 0.0
        self._burst = 0.0
        self._stamp = clock()
        self._set(rate)
        self._tokens = self._burst

    def _set(self, rate: float) -> None:
        self._rate = max(0.0, float(rate))
        self._burst = (self._fixed_burst if self._fixed_burst is not None
                       else max(self._rate * SLICE, MIN_CHUNK))

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the rate; credit (or debt) earned so far counts at the old one."""
        with self._lock:
            self._refill()
            self._set(rate)
            self._tokens = min(self._tokens, self._burst)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate > 0:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def reserve(self, nbytes: int) -> float:
        """Spend ``nbytes``; returns the seconds to wait before sending them."""
        with self._lock:
            if self._rate <= 0:
                return 0.0
            self._refill()
            self._tokens -= nbytes
            return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def chunk(self) -> int:
        """Bytes to send per reservation (None-limit buckets: no bound)."""
        if self._rate <= 0:
            return 1 << 62
        return max(MIN_CHUNK, int(self._rate * SLICE))


class Limiter:
    """The buckets one stream draws from (its export's and its node's)."""

    def __init__(self, buckets: list[TokenBucket], abort: threading.Event) -> None:
        self.buckets = buckets
        self.abort = abort

    def chunk(self) -> int:
        return min(b.chunk() for b in self.buckets)

    def pace(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may go; each bucket accounts them independently."""
        delay = max(b.reserve(nbytes) for b in self.buckets)
        if delay > 0 and self.abort.wait(delay):
            raise TransferAborted("Transfer aborted")

    def sendall(self, send: Callable[[memoryview], None], data: memoryview) -> None:
        """``send`` ``data`` in rate-sized steps."""
        pos, size = 0, len(data)
        while pos < size:
            step = min(self.chunk(), size - pos)
            self.pace(step)
            send(data[pos:pos + step])
            pos += step

    def recv_into(self, recv: Callable[[memoryview], int]) -> Callable[[memoryview], int]:
        """A ``recv_into`` that reads at most a step and then waits for its credit."""
        def limited(view: memoryview) -> int:
            got = recv(view[:self.chunk()])
            if got:
                self.pace(got)
            return got
        return limited


# --- the node daemon's buckets --------------------------------------------------------

_LOCK = threading.Lock()
# Node.backup_bwlimit: one bucket for the process, its rate the latest one the
# master sent (a changed node limit applies to running streams too)
_NODE = TokenBucket(0)
_GROUPS: dict[str, tuple[TokenBucket, int]] = {}


def node_bucket(rate: float) -> TokenBucket:
    _NODE.set_rate(rate)
    return _NODE


@contextmanager
def group_bucket(group: str | None, rate: float) -> Iterator[TokenBucket]:
    """The bucket shared by the streams of one export (``group``) while they run."""
    if group is None:
        yield TokenBucket(rate)
        return
    with _LOCK:
        bucket, users = _GROUPS.get(group, (None, 0))
        if bucket is None:
            bucket = TokenBucket(rate)
        _GROUPS[group] = (bucket, users + 1)
    try:
        yield bucket
    finally:
        with _LOCK:
            bucket, users = _GROUPS[group]
            if users <= 1:
                del _GROUPS[group]
            else:
                _GROUPS[group] = (bucket, users - 1)


def active_groups() -> list[str]:
    with _LOCK:
        return sorted(_GROUPS)
