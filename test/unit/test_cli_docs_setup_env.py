"""tools/setup-env waits for a package manager holding the dpkg/apt lock, and shows progress.

The real script runs; a real process holds a real lock (flock(2), as flock(1)
takes it, and a POSIX fcntl lock, as dpkg and apt take theirs) on a lock file
of the test's own (GANETI_APT_LOCKS), so no other apt on the machine is
disturbed.  Only apt-get and dpkg-query are stand-ins on PATH: they record
when and how they were called and print what apt prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
SETUP_ENV = TOP / "tools" / "setup-env"
VENV = Path(sys.executable).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setup-env installs only as root")

_FAKE_APT = """#!/bin/sh
echo "$(date +%s.%N) $*" >> "{log}"
case "$*" in
  *install*)
    echo "Reading package lists..."
    echo "2 newly installed, 0 to remove and 0 not upgraded."
    echo "Get:1 http://deb.debian.org/debian bookworm/main amd64 socat 1.7.4.4-2 [370 kB]"
    echo "Unpacking socat (1.7.4.4-2) ..."
    echo "Setting up socat (1.7.4.4-2) ..." ;;
  *update*)
    echo "Hit:1 http://deb.debian.org/debian bookworm InRelease" ;;
esac
"""


@pytest.fixture
def fake_apt(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, Path]]:
    """(environment, apt-get call log, lock file): every package "missing"."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "apt-get.log"
    (bindir / "apt-get").write_text(_FAKE_APT.format(log=log))
    (bindir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    lock = tmp_path / "lock-frontend"
    lock.touch()
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "GANETI_VENV": str(VENV),
           "GANETI_APT_LOCKS": f"{tmp_path / 'lock'} {lock}"}
    yield env, log, lock


def _hold(lock: Path, kind: str, seconds: float) -> subprocess.Popen[bytes]:
    """A real process holding ``lock`` for ``seconds`` (returns once it holds it)."""
    if kind == "flock":
        proc = subprocess.Popen(["flock", str(lock), "sleep", str(seconds)])
    else:  # what dpkg and apt take: a POSIX record lock
        proc = subprocess.Popen([sys.executable, "-c", (
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'w'); fcntl.lockf(f, fcntl.LOCK_EX)\n"
            "open(sys.argv[1] + '.held', 'w').close(); time.sleep(float(sys.argv[2]))"),
            str(lock), str(seconds)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if kind == "fcntl" and Path(f"{lock}.held").exists():
            return proc
        if kind == "flock" and str(lock) in subprocess.run(
                ["lslocks", "-n", "-r", "-o", "PATH"], capture_output=True, text=True).stdout:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the {kind} holder never took {lock}")


def _apt_calls(log: Path) -> list[tuple[float, str]]:
    if not log.exists():
        return []
    return [(float(line.split(" ", 1)[0]), line.split(" ", 1)[1])
            for line in log.read_text().splitlines()]


@pytest.mark.parametrize("kind", ["flock", "fcntl"])
def test_waits_for_the_lock_then_installs(fake_apt: tuple[dict[str, str], Path, Path],
                                         kind: str) -> None:
    env, log, lock = fake_apt
    holder = _hold(lock, kind, 4)
    try:
        run = subprocess.run([str(SETUP_ENV)], env=env, capture_output=True, text=True,
                             timeout=300)
        holder.wait(timeout=60)
        released = time.time()
    finally:
        holder.kill()
    assert run.returncode == 0, run.stderr
    held_by = "flock" if kind == "flock" else "python"
    assert f"waiting for {held_by}" in run.stderr and f"(pid {holder.pid})" in run.stderr
    assert f"to release {lock}" in run.stderr and "giving up after 900s" in run.stderr
    assert "lock free after" in run.stderr
    calls = _apt_calls(log)
    assert " update" in calls[0][1]
    assert any(" install -y" in c for _t, c in calls)
    # apt ran only once the holder had let go (its exit is at most a moment later)
    assert min(t for t, _c in calls) >= released - 2.0
    # and apt itself waits too, should the lock be taken again in between
    assert all("DPkg::Lock::Timeout=900" in c for _t, c in calls)


def test_gives_up_after_the_timeout_without_running_apt(
        fake_apt: tuple[dict[str, str], Path, Path]) -> None:
    env, log, lock = fake_apt
    holder = _hold(lock, "flock", 120)
    try:
        run = subprocess.run([str(SETUP_ENV)], env={**env, "GANETI_APT_LOCK_TIMEOUT": "2"},
                             capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode != 0
    assert f"gave up after 2s: {lock} is still held by flock (pid {holder.pid})" in run.stderr
    assert "GANETI_APT_LOCK_TIMEOUT" in run.stderr
    assert _apt_calls(log) == []


def test_shows_progress_of_the_package_step(fake_apt: tuple[dict[str, str], Path, Path]
                                            ) -> None:
    env, _log, _lock = fake_apt
    run = subprocess.run([str(SETUP_ENV)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert "waiting for" not in run.stderr  # nobody holds the lock: no wait, no message
    lines = run.stderr.splitlines()
    steps = [i for i, line in enumerate(lines) if line.startswith("setup-env: [")]
    assert len(steps) == 2 and "apt-get update" in lines[steps[0]]
    assert "  Get:1 http://deb.debian.org/debian bookworm/main amd64 socat 1.7.4.4-2 [370 kB]" \
        in lines
    assert "  Setting up socat (1.7.4.4-2) ..." in lines
    assert not any("Unpacking" in line for line in lines)   # one line per package, not 3
    assert any(line.startswith("setup-env: Debian packages installed (") for line in lines)
