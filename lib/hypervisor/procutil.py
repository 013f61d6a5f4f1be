"""Identify, signal and wait for instance processes we did not necessarily start.

A node daemon restart loses every ``Popen`` object, so instance processes are
found again from their recorded pid.  A pid alone is not proof: the process may
have died and the pid been reused.  A process is only taken to be ours when its
kernel start time matches the recorded one and its command line carries the
marker we put there.  Waits use pidfds, so they wake up on exit instead of
polling.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass

_FALLBACK_POLL = 0.02


@dataclass(frozen=True)
class ProcStat:
    state: str
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """State letter and start time of ``pid``; None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name is in parentheses and may itself contain ")" or spaces
    rest = data[data.rfind(")") + 2:].split()
    try:
        return ProcStat(state=rest[0], start_ticks=int(rest[19]))
    except (IndexError, ValueError):
        return None


def read_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def is_our_process(pid: int | None, start_ticks: int | None, markers: Sequence[str]) -> bool:
    """Whether ``pid`` is alive (not a zombie) and is the process we recorded.

    Every marker must appear as a whole argument of the command line, which
    rules out an unrelated program that happened to get the same pid.
    """
    if not pid or pid <= 0:
        return False
    stat = read_stat(pid)
    if stat is None or stat.state in ("Z", "X", "x"):
        reap(pid)
        return False
    if start_ticks is not None and stat.start_ticks != start_ticks:
        return False
    args = read_cmdline(pid)
    return all(marker in args for marker in markers)


def reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own dead child (else no-op)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except OSError as err:
        if err.errno in (errno.ENOSYS, errno.EPERM):
            return -1
        raise


def send_signal(pid: int, sig: int) -> bool:
    """Send ``sig``; False if the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_ours(pid: int, start_ticks: int | None, markers: Sequence[str], sig: int) -> bool:
    """Signal ``pid`` only if it is still the recorded process; False otherwise.

    The identity check happens after a pidfd is open, so the signal cannot hit
    a newcomer that got the pid in between.
    """
    pidfd = open_pidfd(pid)
    if pidfd is None:
        return False
    try:
        if not is_our_process(pid, start_ticks, markers):
            return False
        if pidfd < 0:
            return send_signal(pid, sig)
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return False
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def wait_gone(pid: int, timeout: float, start_ticks: int | None = None,
              markers: Sequence[str] = ()) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to exit; True once it has.

    A zombie counts as gone: it holds no files and runs no code any more.  With
    ``start_ticks``/``markers``, a pid that now belongs to another process
    also counts as gone.
    """
    deadline = time.monotonic() + max(0.0, timeout)
    pidfd = open_pidfd(pid)
    if pidfd is None:
        reap(pid)
        return True
    try:
        if not _same_process(pid, start_ticks, markers):
            return True
        if pidfd >= 0:
            while True:
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select([pidfd], [], [], max(0.0, remaining))
                if ready or _exited(pid):
                    reap(pid)
                    return True
                if remaining <= 0:
                    return False
        while not _exited(pid):  # no pidfd support: fall back to polling
            if time.monotonic() >= deadline:
                return False
            time.sleep(_FALLBACK_POLL)
        reap(pid)
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _same_process(pid: int, start_ticks: int | None, markers: Sequence[str]) -> bool:
    """Whether ``pid`` still names the recorded process (a newcomer means: gone).

    pid + start time identify a process for the whole boot, so when the start
    time is known it decides alone: a process that is exiting has already
    lost its command line, and must not be mistaken for a different one.
    """
    if start_ticks is not None:
        stat = read_stat(pid)
        return stat is not None and stat.start_ticks == start_ticks
    if markers:
        return is_our_process(pid, None, markers)
    return True


def _exited(pid: int) -> bool:
    stat = read_stat(pid)
    return stat is None or stat.state in ("Z", "X", "x")


def kill_and_wait(pid: int, start_ticks: int | None, markers: Sequence[str],
                  timeout: float) -> bool:
    """SIGKILL the recorded process and wait for it to disappear; True once gone.

    Also waits when no signal was sent: a process that is already exiting
    fails the identity check but has not finished exiting yet.
    """
    signal_ours(pid, start_ticks, markers, signal.SIGKILL)
    return wait_gone(pid, timeout, start_ticks, markers)


def find_processes(marker: str) -> list[int]:
    """Live (non-zombie) processes with ``marker`` inside an argument, e.g. a node root.

    Lets a node (or a test) find guests it has lost track of.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == os.getpid() or _exited(pid):
            continue
        if any(marker in arg for arg in read_cmdline(pid)):
            found.append(pid)
    return sorted(found)
