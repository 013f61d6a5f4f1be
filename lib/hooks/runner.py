"""Node-side hook runner: executes one phase's scripts for one hooks path.

Hook scripts are administrator code; a broken or hung script must never take the
node daemon down with it, so every script problem becomes a result entry and only
invalid arguments raise.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ganeti import constants, errors

# Output kept per script (the tail: the end of a log is what explains a failure)
OUTPUT_LIMIT = 64 * 1024
# Time a timed-out script group gets between SIGTERM and SIGKILL
KILL_GRACE = 1.0
# Poll interval used only when pidfds are unavailable
_POLL_TICK = 0.1
_ENV_PREFIX = "GANETI_"
_NAME_RE = re.compile(constants.HOOKS_NAME_RE)
_PHASES = (constants.HOOKS_PHASE_PRE, constants.HOOKS_PHASE_POST)

HookResult = tuple[str, str, str]


def run_hooks(hooks_dir: Path, hpath: str, phase: str, env: Mapping[str, Any],
              timeout: float = constants.DEFAULT_HOOK_TIMEOUT) -> list[HookResult]:
    """Run ``<hooks_dir>/<hpath>-<phase>.d/*`` in name order.

    Returns one ``(relative script path, status, output)`` per directory entry.
    """
    _check_args(hpath, phase, timeout)
    script_env = build_script_env(env)
    subdir = f"{hpath}-{phase}.d"
    directory = Path(hooks_dir) / subdir
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise errors.HooksFailure(f"Cannot list hooks directory {directory}: {err}") from None

    results: list[HookResult] = []
    for name in names:
        rel = f"{subdir}/{name}"
        path = directory / name
        if not _is_runnable(name, path):
            results.append((rel, constants.HKR_SKIP, ""))
            continue
        status, output = _run_script(path, script_env, timeout)
        results.append((rel, status, output))
    return results


def build_script_env(env: Mapping[str, Any]) -> dict[str, str]:
    """The complete environment of a hook: PATH plus the caller's GANETI_* keys."""
    result = {"PATH": constants.HOOKS_PATH}
    for key, value in env.items():
        if not isinstance(key, str) or not key.startswith(_ENV_PREFIX):
            continue
        text = "" if value is None else str(value)
        if "=" in key or "\0" in key or "\0" in text:
            raise errors.HooksFailure(f"Invalid hook environment entry {key!r}")
        result[key] = text
    return result


def _check_args(hpath: str, phase: str, timeout: float) -> None:
    if phase not in _PHASES:
        raise errors.HooksFailure(f"Unknown hooks phase {phase!r}")
    if (not isinstance(hpath, str) or not hpath or "/" in hpath or ".." in hpath
            or "\0" in hpath):
        raise errors.HooksFailure(f"Invalid hooks path {hpath!r}")
    if not timeout > 0:
        raise errors.HooksFailure(f"Invalid hook timeout {timeout!r}")


def _is_runnable(name: str, path: Path) -> bool:
    if not _NAME_RE.match(name):
        return False
    try:
        st = os.stat(path)  # follows symlinks: a broken one raises
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)


class _Tail:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        excess = len(self._data) - self._limit
        if excess > 0:
            del self._data[:excess]
            self.truncated = True

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")


def _run_script(path: Path, env: dict[str, str], timeout: float) -> tuple[str, str]:
    try:
        proc = subprocess.Popen(
            [str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env, cwd="/", close_fds=True,
            start_new_session=True)
    except OSError as err:
        return constants.HKR_FAIL, f"Cannot execute script: {err}"

    tail = _Tail(OUTPUT_LIMIT)
    assert proc.stdout is not None
    try:
        finished = _collect(proc, tail, time.monotonic() + timeout)
        if not finished:
            _kill_group(proc)
        _drain(proc.stdout.fileno(), tail)
    finally:
        proc.stdout.close()
        if proc.poll() is None:  # only if something above failed unexpectedly
            _kill_group(proc)

    output = tail.text()
    if tail.truncated:
        output = f"[output truncated to the last {OUTPUT_LIMIT} bytes]\n{output}"
    if not finished:
        if output and not output.endswith("\n"):
            output += "\n"
        return constants.HKR_FAIL, output + f"Script timed out after {timeout:g} s"
    if proc.returncode != 0:
        return constants.HKR_FAIL, output
    return constants.HKR_SUCCESS, output


def _collect(proc: subprocess.Popen[bytes], tail: _Tail, deadline: float) -> bool:
    """Read output until the script exits (True) or the deadline passes (False).

    Waits on the pipe and on a pidfd, so neither a silent script nor a
    background child holding the pipe open delays noticing the exit.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    pidfd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(proc.pid)
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            if pidfd is not None:
                sel.register(pidfd, selectors.EVENT_READ)
            while proc.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                wait = remaining if pidfd is not None else min(remaining, _POLL_TICK)
                for key, _ in sel.select(wait):
                    if key.fd == fd and not _read_some(fd, tail):
                        sel.unregister(fd)
            return True
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _read_some(fd: int, tail: _Tail) -> bool:
    """Read what is available; False once the pipe reached end of file."""
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        return True
    if not chunk:
        return False
    tail.add(chunk)
    return True


def _drain(fd: int, tail: _Tail) -> None:
    """Take what is already in the pipe without waiting for other writers."""
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        if not chunk:
            return
        tail.add(chunk)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the script's process group, SIGKILL whatever survives the grace."""
    pgid = proc.pid  # start_new_session: the script leads its own group
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE)
    # children may outlive the script; give them the rest of the grace
    while _group_exists(pgid) and time.monotonic() < deadline:
        time.sleep(0.02)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
