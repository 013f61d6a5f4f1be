"""Instances as real host processes running the guest simulator.

The guest is spawned with ``posix_spawn`` in a new session, so it survives the
node daemon; its startup result comes back on a pipe, which is how
``start_instance`` knows the disks are open before it returns.
"""

from __future__ import annotations

import importlib.util
import os
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

import ganeti
from ganeti import errors
from ganeti.hypervisor import base, detached, guest_sim, procutil
from ganeti.hypervisor.base import RuntimeRecord
from ganeti.objects import Instance

GUEST_MODULE = "ganeti.hypervisor.guest_sim"
STATUS_FILE = "guest-status.json"
START_TIMEOUT = 30.0
PAUSE_TIMEOUT = 10.0
_READY_FD = 3
_DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


def _package_root() -> str:
    """Directory holding the ``ganeti`` package, so the guest imports the same code."""
    return str(Path(ganeti.__file__).parent.parent)


class ProcessHypervisor(detached.DetachedHypervisor):
    """Each instance is one ``guest_sim`` process owning its disk files."""

    name = "process"
    PARAMETERS = {
        "write_interval_ms": base.int_param(guest_sim.DEFAULT_INTERVAL_MS, 1, 60_000),
        "blocks": base.int_param(guest_sim.DEFAULT_BLOCKS, 1, 1 << 24),
        # for tests: a guest that never answers the graceful shutdown request
        "ignore_sigterm": base.bool_param(False),
    }

    def status_file(self, instance_name: str) -> Path:
        return self.instance_dir(instance_name) / STATUS_FILE

    def guest_status(self, instance_name: str) -> guest_sim.GuestStatus | None:
        """The guest's own status report (generation written so far, ...)."""
        return guest_sim.read_status(self.status_file(instance_name))

    def verify(self) -> list[str]:
        problems = []
        if not os.access(sys.executable, os.X_OK):
            problems.append(f"Python interpreter {sys.executable} is not executable")
        if importlib.util.find_spec(GUEST_MODULE) is None:
            problems.append(f"Guest simulator module {GUEST_MODULE} cannot be found")
        try:
            self.instances_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            problems.append(f"Cannot create the instance state directory: {err}")
        return problems

    def _launch(self, instance: Instance, disks: list[Path], startup_paused: bool,
                inst_dir: Path, hvparams: dict[str, Any], memory: int, vcpus: int) -> None:
        args = [sys.executable, "-m", GUEST_MODULE, "--run-dir", str(inst_dir),
                "--name", instance.name, "--status-file", str(inst_dir / STATUS_FILE),
                "--interval-ms", str(hvparams["write_interval_ms"]),
                "--blocks", str(hvparams["blocks"]), "--memory", str(memory),
                "--vcpus", str(vcpus), "--ready-fd", str(_READY_FD)]
        if hvparams["ignore_sigterm"]:
            args.append("--ignore-sigterm")
        for disk in disks:
            args += ["--disk", str(disk)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_package_root(), env.get("PYTHONPATH", "")) if p)
        started_at = time.time()
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        try:
            log_fd = os.open(inst_dir / detached.LOG_FILE,
                             os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                # a signal mask is inherited across exec and Python would not reset it
                pid = os.posix_spawn(sys.executable, args, env, setsid=True, setsigmask=(),
                                     setsigdef=_DEFAULT_SIGNALS, file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                    (os.POSIX_SPAWN_DUP2, ready_w, _READY_FD),
                ])
            except OSError as err:
                raise errors.HypervisorError(
                    f"Cannot start instance {instance.name}: {err}") from None
            finally:
                os.close(log_fd)
                os.close(ready_w)
            markers = [GUEST_MODULE, str(inst_dir)]
            try:
                record = self._new_record(instance, pid, markers, started_at, disks, hvparams,
                                          memory, vcpus)
            except BaseException:  # unrecorded, nobody could find it again
                procutil.kill_and_wait(pid, None, markers, detached.KILL_WAIT)
                raise
            message = _read_ready(ready_r, START_TIMEOUT)
        finally:
            os.close(ready_r)
        if message != "ready":
            procutil.wait_gone(pid, 5.0)
            reason = message.removeprefix("error: ") if message else (
                self.log_tail(instance.name) or "the guest exited during startup")
            raise errors.HypervisorError(f"Failed to start instance {instance.name}: {reason}")
        if startup_paused:
            self._pause(record)

    def _pause(self, record: RuntimeRecord) -> None:
        assert record.pid is not None
        if not self._signal(record, signal.SIGSTOP):
            raise errors.HypervisorError(f"Instance {record.name} is not running")
        try:
            # WNOWAIT leaves the event for later; the call returns as soon as it has stopped
            result = os.waitid(os.P_PID, record.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            # not our child (a node daemon restarted since the start): watch /proc
            self._wait_stopped(record)
            return
        if result is None or result.si_code != os.CLD_STOPPED:
            raise errors.HypervisorError(f"Instance {record.name} exited while being paused")

    def _wait_stopped(self, record: RuntimeRecord) -> None:
        assert record.pid is not None
        deadline = time.monotonic() + PAUSE_TIMEOUT
        while True:
            stat = procutil.read_stat(record.pid)
            if stat is None or not record.is_alive():
                raise errors.HypervisorError(
                    f"Instance {record.name} exited while being paused")
            if stat.state in ("T", "t"):
                return
            if time.monotonic() >= deadline:
                raise errors.HypervisorError(
                    f"Instance {record.name} did not stop within {PAUSE_TIMEOUT:.0f}s")
            time.sleep(0.0005)

    # a SIGSTOPped process runs no code: a write(2) it made has completed, and a
    # reflink clone is atomic with respect to write(2) (ganeti.storage.reflink)
    _pause_vcpus = _pause

    def _request_shutdown(self, record: RuntimeRecord) -> bool:
        delivered = self._signal(record, signal.SIGTERM)
        # a paused guest only handles SIGTERM once it runs again
        self._signal(record, signal.SIGCONT)
        return delivered

    def _guest_state(self, record: RuntimeRecord) -> str:
        return self._proc_state(record)

    def _resume(self, record: RuntimeRecord) -> None:
        self._signal(record, signal.SIGCONT)


def _read_ready(fd: int, timeout: float) -> str:
    """Everything the guest writes on its ready pipe until it closes it (or timeout)."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return f"error: no ready report within {timeout:.0f}s"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks).decode("utf-8", "replace").strip()
        chunks.append(chunk)
