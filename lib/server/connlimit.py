"""Defences every server of the project shares against connection abuse.

A server built on these never holds more than ``max_connections`` clients
(more get an error reply and are closed), closes a connection that sends
nothing for ``idle_timeout`` and one whose started request is not complete
within ``request_timeout``, backs off when ``accept`` runs out of file
descriptors, logs floods of such events at most once per interval (with the
count of suppressed lines), and keeps accepting when a thread cannot be
started.  The limits are one table (:data:`OPTIONS`) from which the daemons'
command-line options and their documentation come.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import itertools
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ganeti import errors

# accept() errors that mean "out of a resource", not "this one connection failed"
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
BACKOFF_FIRST = 0.01
BACKOFF_MAX = 1.0
LOG_INTERVAL = 5.0


@dataclass(frozen=True)
class Limits:
    max_connections: int
    idle_timeout: float
    request_timeout: float
    # TLS servers: the whole handshake must finish within this
    handshake_timeout: float = 10.0
    # LUXI: bytes all unfinished requests together may hold (0: no shared budget)
    max_buffered: int = 0


@dataclass(frozen=True)
class LimitOption:
    flag: str
    field: str
    metavar: str
    help: str


# One source for the daemons' options and their man pages
OPTIONS: tuple[LimitOption, ...] = (
    LimitOption("--max-connections", "max_connections", "N",
                "clients served at once; more are refused with an error reply"),
    LimitOption("--idle-timeout", "idle_timeout", "SECONDS",
                "close a connection that starts no request for this long"),
    LimitOption("--request-timeout", "request_timeout", "SECONDS",
                "close a connection whose request is not complete this long after it"
                " started"),
    LimitOption("--handshake-timeout", "handshake_timeout", "SECONDS",
                "close a connection whose TLS handshake takes longer"),
    LimitOption("--max-buffered", "max_buffered", "BYTES",
                "memory all unfinished requests together may hold; beyond it a request"
                " is refused"),
)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value
    parse.__name__ = kind.__name__
    return parse


def add_options(parser: argparse.ArgumentParser, defaults: Limits,
                names: Sequence[str]) -> None:
    """Add the options ``names`` (fields of :class:`Limits`) with the daemon's defaults."""
    kinds = {f.name: f.type for f in fields(Limits)}
    for option in OPTIONS:
        if option.field not in names:
            continue
        kind = int if kinds[option.field] in (int, "int") else float
        parser.add_argument(option.flag, dest=option.field, metavar=option.metavar,
                            type=_positive(kind), default=getattr(defaults, option.field),
                            help=f"{option.help} (default: %(default)s)")


def from_options(opts: argparse.Namespace, defaults: Limits) -> Limits:
    given = {f.name: getattr(opts, f.name) for f in fields(Limits) if hasattr(opts, f.name)}
    return replace(defaults, **given)


class RateLimitedLog:
    """At most one line per ``interval`` for each kind of event; says how many it skipped."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, kind: str, msg: str, *args: Any) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return False
            self._last[kind] = now
            skipped = self._skipped.pop(kind, 0)
        if skipped:
            msg += f" ({skipped} similar message(s) suppressed in the last %.0fs)"
            args = (*args, self.interval)
        self.logger.log(level, msg, *args)
        return True


class AcceptBackoff:
    """Growing pause after accept() fails for lack of descriptors; reset by a success."""

    def __init__(self, first: float = BACKOFF_FIRST, maximum: float = BACKOFF_MAX) -> None:
        self.first = first
        self.maximum = maximum
        self.delay = 0.0

    def failed(self) -> float:
        self.delay = self.first if not self.delay else min(self.delay * 2, self.maximum)
        return self.delay

    def succeeded(self) -> None:
        self.delay = 0.0


@dataclass
class GateStats:
    accepted: int = 0
    refused: int = 0
    evicted: int = 0
    resource_errors: int = 0
    thread_failures: int = 0
    peak: int = 0


class Slot:
    """One admitted connection; ``reading`` while it waits for (or reads) a request."""

    __slots__ = ("evicted", "reading", "released", "since", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.since = time.monotonic()
        self.reading = True
        self.evicted = False
        self.released = False


# How long a newcomer waits for an evicted connection's thread to let go of its slot
EVICT_WAIT = 1.0


class ConnectionGate:
    """The accept side of a server: slots, descriptor backoff, safe thread start.

    At the cap, a newcomer takes the slot of the connection that has waited
    longest for (or in the middle of) a request: a flood of idle or
    half-written connections cannot lock out a client that sends its request
    at once.  Only when every connection is running a request is the
    newcomer refused.
    """

    def __init__(self, name: str, limits: Limits, logger: logging.Logger) -> None:
        self.name = name
        self.limits = limits
        self.log = RateLimitedLog(logger)
        self.stats = GateStats()
        self._backoff = AcceptBackoff()
        self._cond = threading.Condition()
        self._slots: dict[int, Slot] = {}

    @property
    def active(self) -> int:
        return len(self._slots)

    def accept(self, listener: socket.socket,
               pause: Callable[[float], object] = time.sleep) -> tuple[socket.socket, Any] | None:
        """One accepted connection, or None after a failure (paused if out of resources)."""
        try:
            conn, peer = listener.accept()
        except OSError as err:
            if err.errno in RESOURCE_ERRNOS:
                self.stats.resource_errors += 1
                delay = self._backoff.failed()
                self.log.log(logging.ERROR, "accept",
                             "%s: cannot accept connections: %s; retrying in %.2fs",
                             self.name, err.strerror, delay)
                pause(delay)
            elif err.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                self.log.log(logging.WARNING, "accept-other", "%s: accept failed: %s",
                             self.name, err)
            return None
        self._backoff.succeeded()
        return conn, peer

    def admit(self, sock: socket.socket) -> Slot | None:
        """A slot for a new connection, evicting the longest-waiting reader if full."""
        evicted = False
        slot: Slot | None = None
        with self._cond:
            if len(self._slots) >= self.limits.max_connections:
                victim = min((s for s in self._slots.values() if s.reading and not s.evicted),
                             key=lambda s: s.since, default=None)
                if victim is not None:
                    victim.evicted = evicted = True
                    self.stats.evicted += 1
                    force_shutdown(victim.sock)
                    self._cond.wait_for(
                        lambda: len(self._slots) < self.limits.max_connections, EVICT_WAIT)
            if len(self._slots) < self.limits.max_connections:
                slot = Slot(sock)
                self._slots[id(slot)] = slot
                self.stats.accepted += 1
                self.stats.peak = max(self.stats.peak, len(self._slots))
            else:
                self.stats.refused += 1
        if slot is None:
            self.log.log(logging.WARNING, "refused",
                         "%s: all %d connections are running requests, refusing a new one",
                         self.name, self.limits.max_connections)
        elif evicted:
            self.log.log(logging.WARNING, "evicted",
                         "%s: at the limit of %d connections, closed the longest-waiting"
                         " idle or unfinished one for a new client (%d so far)",
                         self.name, self.limits.max_connections, self.stats.evicted)
        return slot

    def set_reading(self, slot: Slot, reading: bool) -> None:
        with self._cond:
            slot.reading = reading
            slot.since = time.monotonic()

    def rebind(self, slot: Slot, sock: socket.socket) -> None:
        """The connection now lives in another socket object (after wrapping it in TLS)."""
        with self._cond:
            slot.sock = sock

    def release(self, slot: Slot) -> None:
        """Give the slot back; call before closing the socket (eviction shuts it down)."""
        with self._cond:
            if not slot.released:
                slot.released = True
                del self._slots[id(slot)]
                self._cond.notify_all()

    def busy_message(self) -> str:
        return (f"{self.name} is serving the maximum of {self.limits.max_connections}"
                " connections (--max-connections), all running requests; try again later")

    def start(self, thread: threading.Thread, slot: Slot) -> bool:
        """Start a connection's thread; False (logged, slot freed) when that fails."""
        try:
            thread.start()
        except RuntimeError as err:
            self.stats.thread_failures += 1
            self.release(slot)
            self.log.log(logging.ERROR, "thread", "%s: cannot start a thread for a"
                         " connection (%s); closed it, still accepting", self.name, err)
            return False
        return True


class _Deadline:
    __slots__ = ("cancelled", "expired", "sock", "when")

    def __init__(self, sock: socket.socket, when: float) -> None:
        self.sock = sock
        self.when = when
        self.cancelled = False
        self.expired = False


class Watchdog:
    """Shuts down sockets whose deadline passed, waking the thread blocked on them.

    For code that reads through layers we cannot give a deadline (the HTTP
    server's header parsing, frame readers).  ``cancel`` before closing the
    socket, so a reused descriptor is never shut down.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._cancelled = 0
        self.expired = 0

    def arm(self, sock: socket.socket, seconds: float) -> _Deadline:
        entry = _Deadline(sock, time.monotonic() + seconds)
        with self._cond:
            heapq.heappush(self._heap, (entry.when, next(self._seq), entry))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="conn-watchdog",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry

    def cancel(self, entry: _Deadline | None) -> None:
        if entry is None:
            return
        with self._cond:
            if entry.cancelled:
                return
            entry.cancelled = True
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled > len(self._heap) // 2:
                # most deadlines end cancelled: drop them now, not when they fall due
                self._heap = [item for item in self._heap if not item[2].cancelled]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                    self._cancelled = max(0, self._cancelled - 1)
                if not self._heap:
                    self._cond.wait()
                    continue
                left = self._heap[0][0] - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                entry = heapq.heappop(self._heap)[2]
                entry.cancelled = entry.expired = True
                self.expired += 1
                force_shutdown(entry.sock)


WATCHDOG = Watchdog()


def force_shutdown(sock: socket.socket) -> None:
    """shutdown(2) the descriptor, bypassing SSLSocket's (which drops its TLS state)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def tls_handshake(sock: socket.socket, ctx: ssl.SSLContext, timeout: float,
                  block_after: float | None = None,
                  wrapped: Callable[[ssl.SSLSocket], object] | None = None) -> ssl.SSLSocket:
    """Server-side handshake that must finish within ``timeout`` in total.

    A socket timeout alone limits each read, so a peer dripping one byte at a
    time could keep a handshake going for ever.  Raises TimeoutError; the
    returned socket gets the timeout ``block_after`` (None: blocking).
    ``wrapped`` learns the TLS socket at once (``sock`` is detached from then on).
    """
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    if wrapped is not None:
        wrapped(tls)
    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                wait_read, wait_write = [tls], []
            except ssl.SSLWantWriteError:
                wait_read, wait_write = [], [tls]
            left = deadline - time.monotonic()
            if left <= 0 or not any(select.select(wait_read, wait_write, [], left)):
                raise TimeoutError(f"TLS handshake not finished within {timeout:g}s")
    except BaseException:
        tls.close()
        raise
    tls.settimeout(block_after)
    return tls


class ByteBudget:
    """Bytes that unfinished requests of all connections may hold together."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.peak = 0
        self.refused = 0
        self._lock = threading.Lock()

    def take(self, amount: int) -> bool:
        with self._lock:
            if self.used + amount > self.total:
                self.refused += 1
                return False
            self.used += amount
            self.peak = max(self.peak, self.used)
            return True

    def give(self, amount: int) -> None:
        with self._lock:
            self.used -= amount


class GuardedConnection:
    """A socket whose reads obey the idle and request deadlines and a byte budget.

    Wraps the connection a framing reader (``luxi.MessageStream``) reads from:
    waiting for a new request may last ``idle_timeout``; once its first byte
    is in, all of it must arrive within ``request_timeout``.  The server calls
    :meth:`request_done` after each complete request.
    """

    def __init__(self, sock: socket.socket, limits: Limits,
                 budget: ByteBudget | None = None) -> None:
        self.sock = sock
        self.limits = limits
        self.budget = budget
        self.held = 0
        self._deadline = time.monotonic() + limits.idle_timeout
        self._started = False

    def recv(self, size: int) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self._timeout()
        if self.budget is not None:
            if not self.budget.take(size):
                raise errors.ServerBusyError(
                    f"Unfinished requests hold {self.budget.used} bytes, the server's limit"
                    f" is {self.budget.total} (--max-buffered); try again later")
            self.held += size
        self.sock.settimeout(left)
        chunk = b""
        try:
            chunk = self.sock.recv(size)
        except TimeoutError:
            raise self._timeout() from None
        finally:
            if self.budget is not None:
                self.budget.give(size - len(chunk))
                self.held -= size - len(chunk)
        if chunk and not self._started:
            self._started = True
            self._deadline = time.monotonic() + self.limits.request_timeout
        return chunk

    @property
    def in_request(self) -> bool:
        """Part of a request has arrived (a timeout now means a half-written one)."""
        return self._started

    def _timeout(self) -> TimeoutError:
        if self._started:
            return TimeoutError(f"request not complete within {self.limits.request_timeout:g}s")
        return TimeoutError(f"no request within {self.limits.idle_timeout:g}s")

    def request_done(self) -> None:
        self.release()
        self._started = False
        self._deadline = time.monotonic() + self.limits.idle_timeout

    def release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.give(self.held)
        self.held = 0

    def sendall(self, data: bytes) -> None:
        # a client that does not read its answer gets the request timeout
        self.sock.settimeout(self.limits.request_timeout)
        self.sock.sendall(data)
