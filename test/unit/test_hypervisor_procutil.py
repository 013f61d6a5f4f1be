"""Process identification, signalling and waiting (stale and reused pids)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganeti.hypervisor import procutil

WAIT = 60.0


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child whose command line carries a unique marker (the tmp path)."""
    marker = str(tmp_path / "marker")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(120)",
         marker], stdout=subprocess.PIPE)
    # right after fork the child's cmdline is still the parent's or empty: wait
    # until the interpreter runs our code
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    yield proc
    proc.kill()
    proc.wait()


def test_read_stat_and_cmdline_of_a_live_process(sleeper: subprocess.Popen[bytes]) -> None:
    stat = procutil.read_stat(sleeper.pid)
    assert stat is not None and stat.state in "RSD" and stat.start_ticks > 0
    assert procutil.read_cmdline(sleeper.pid)[:2] == [sys.executable, "-c"]


def test_identity_needs_markers_and_start_time(sleeper: subprocess.Popen[bytes],
                                               tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    ticks = procutil.read_stat(sleeper.pid).start_ticks  # type: ignore[union-attr]
    assert procutil.is_our_process(sleeper.pid, ticks, [marker])
    assert procutil.is_our_process(sleeper.pid, None, [marker])
    assert not procutil.is_our_process(sleeper.pid, ticks + 1, [marker]), "reused pid"
    assert not procutil.is_our_process(sleeper.pid, ticks, [marker + "x"])
    assert not procutil.is_our_process(None, None, [])
    assert procutil.find_processes(str(tmp_path)) == [sleeper.pid]


def test_signal_ours_refuses_a_stranger(sleeper: subprocess.Popen[bytes]) -> None:
    assert not procutil.signal_ours(sleeper.pid, None, ["not-its-marker"], signal.SIGKILL)
    assert sleeper.poll() is None
    # for the caller, a recorded process that is no longer there is gone
    assert procutil.kill_and_wait(sleeper.pid, None, ["not-its-marker"], 0)
    assert sleeper.poll() is None


def test_kill_and_wait_and_zombies(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    assert not procutil.wait_gone(sleeper.pid, 0.05), "a live process is not gone"
    assert procutil.kill_and_wait(sleeper.pid, None, [marker], WAIT)
    assert not procutil.is_our_process(sleeper.pid, None, [marker])
    assert procutil.find_processes(str(tmp_path)) == []


def test_a_zombie_counts_as_gone() -> None:
    # the child exits at once; without reaping it stays a zombie of this process
    pid = os.posix_spawn("/bin/true", ["true"], dict(os.environ))
    assert procutil.wait_gone(pid, WAIT)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # wait_gone reaped our own child


def test_dead_pid() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert procutil.read_stat(proc.pid) is None
    assert not procutil.is_our_process(proc.pid, None, [])
    assert procutil.wait_gone(proc.pid, 0)
    assert not procutil.signal_ours(proc.pid, None, [], signal.SIGTERM)
