"""Shared plumbing for daemons: pid file lock, daemonizing, logging, signals.

The pid file is held with ``flock`` for the daemon's whole life, so a second
instance learns reliably (even after a crash left the file behind) whether
the first is still alive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ganeti import errors

LOG_FORMAT = "%(asctime)s: %(name)s pid=%(process)d %(levelname)s %(message)s"


class DaemonAlreadyRunning(errors.GenericError):
    """Another instance holds the pid file lock."""


class PidFile:
    """An flock-held pid file; the lock survives fork and dies with the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (pid {other})" if other else ""
            raise DaemonAlreadyRunning(
                f"Another instance is already running{pid}; pid file {self.path} is locked"
            ) from None
        self._fd = fd

    def write_pid(self, pid: int | None = None) -> None:
        """Record our pid; called after daemonizing since forking changes it."""
        if self._fd is None:
            raise errors.ProgrammerError("pid file not acquired")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{pid or os.getpid()}\n".encode("ascii"), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


def read_pid(path: Path) -> int | None:
    """The pid recorded in a pid file (None if missing or unreadable)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def record_address(path: Path, address: str, port: int) -> None:
    """Note where the daemon listens, so a restart (the watcher's) binds the same."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{address} {port}\n")
    os.replace(tmp, path)


def recorded_address(path: Path) -> tuple[str, int] | None:
    """The (address, port) :func:`record_address` wrote; None if missing or unreadable."""
    try:
        address, port = path.read_text().split()
        return address, int(port)
    except (OSError, ValueError):
        return None


def daemonize() -> int:
    """Double fork and detach; returns a pipe fd to report startup to the parent.

    The original process waits on the pipe and exits 0 once the daemon calls
    :func:`report_startup` with no error, or prints the error and exits 1.
    """
    rfd, wfd = os.pipe()
    if os.fork() > 0:
        os.close(wfd)
        chunks = []
        while True:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        message = b"".join(chunks).decode("utf-8", "replace")
        if message == "ok":
            os._exit(0)
        sys.stderr.write((message or "Daemon exited during startup") + "\n")
        os._exit(1)
    os.close(rfd)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(0o077)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    return wfd


def report_startup(fd: int | None, error: str | None = None) -> None:
    """Tell the waiting parent (if any) whether startup worked."""
    if fd is None:
        return
    try:
        os.write(fd, (error or "ok").encode("utf-8"))
    finally:
        os.close(fd)


def setup_logging(log_file: Path | None, program: str, debug: bool = False,
                  stderr: bool = False) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    fmt = logging.Formatter(LOG_FORMAT.replace("%(name)s", program + " %(name)s"))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    if stderr:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)


# glibc's mallopt(3) parameter; fixing it also turns off the dynamic threshold
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def return_large_buffers_to_the_os() -> None:
    """Serve large allocations (request buffers) from mmap, so freeing them frees memory.

    glibc raises its mmap threshold after the first large buffer is freed;
    from then on buffers of unfinished requests come from per-thread arenas
    that are rarely trimmed, and a burst of large requests leaves the daemon
    hundreds of MiB bigger than the data it still holds.  Mapped buffers also
    grow by mremap, without a copy.  No-op without glibc.  For the master
    (LUXI requests); not the node daemon, whose transfer blocks would pay a
    mapping per block.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def install_stop_signals(event: threading.Event,
                         signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Make the given signals set ``event``; the main thread waits on it."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("Received signal %d, shutting down", signum)
        event.set()

    for sig in signals:
        signal.signal(sig, handler)


def run(prog: str, pid_file: Path, log_file: Path, foreground: bool, debug: bool,
        start: Callable[[], Callable[[], None]]) -> int:
    """The life of a daemon: pid lock, detach, logging, start, wait for a signal, stop.

    ``start`` brings the service up and returns its stop function; if it
    raises, the error reaches whoever started the daemon (stderr in the
    foreground, the startup pipe otherwise) and the exit code is 1.  A second
    instance fails on the pid file lock before touching anything.
    """
    pidfile = PidFile(pid_file)
    try:
        pidfile.acquire()
    except DaemonAlreadyRunning as err:
        sys.stderr.write(f"{prog}: {err.args[0]}\n")
        return 1
    except OSError as err:
        sys.stderr.write(f"{prog}: cannot create pid file: {err}\n")
        return 1
    startup_fd = None if foreground else daemonize()
    pidfile.write_pid()
    setup_logging(log_file, prog, debug=debug, stderr=foreground)
    stop = threading.Event()
    install_stop_signals(stop)
    try:
        stop_service = start()
    except Exception as err:
        message = errors.format_error(err) if isinstance(err, errors.GenericError) \
            else str(err)
        logging.getLogger(prog).error("Startup failed: %s", message, exc_info=debug)
        pidfile.release()
        if startup_fd is None:
            sys.stderr.write(f"{prog}: startup failed: {message}\n")
        report_startup(startup_fd, f"{prog}: startup failed: {message}")
        return 1
    report_startup(startup_fd)
    while not stop.wait(3600):
        pass
    stop_service()
    pidfile.release()
    return 0
