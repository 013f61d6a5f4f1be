"""Helpers for master daemon end-to-end tests (no tests here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ganeti import bootstrap, constants, luxi, pathutils
from support import gntfork

TOP = Path(__file__).resolve().parents[2]
MASTERD = TOP / "daemons" / "ganeti-masterd"
SCRIPTS = TOP / "scripts"
WAIT = 60.0  # generous: other suites run daemons on the same two cores


def init_cluster(root: Path, max_running_jobs: int | None = None) -> pathutils.Paths:
    paths = pathutils.Paths.for_root(root)
    cfg = bootstrap.init_cluster(paths, "cluster.e2e", "node1.e2e", "127.0.0.1")
    if max_running_jobs is not None:
        cluster = cfg.get_cluster_info()
        cluster.max_running_jobs = max_running_jobs
        cfg.update(cluster)
    return paths


def env_for(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[pathutils.ROOT_ENV] = str(root)
    return env


class MasterProcess:
    """ganeti-masterd --foreground, started and awaited via its own log output."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.paths = pathutils.Paths.for_root(root)
        self.proc: subprocess.Popen[str] | None = None
        self.stderr_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(MASTERD), "--foreground", "--root", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env_for(self.root))
        started = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr_lines.append(line)
                if "Master daemon started" in line:
                    started.set()
            started.set()  # EOF: the daemon died; start() reports it below

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not started.wait(WAIT) or self.proc.poll() is not None:
            self.proc.kill()  # never leave a half-started daemon behind
            self.proc.wait(WAIT)
            raise AssertionError("masterd did not start:\n" + "".join(self.stderr_lines))

    def signal(self, signum: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(signum)
        rc = self.proc.wait(WAIT)
        if self._reader is not None:
            self._reader.join(WAIT)
        return rc

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        return self.signal(signal.SIGTERM)

    def client(self) -> luxi.Client:
        return luxi.Client(str(self.paths.master_socket), timeout=WAIT)


def run_script(root: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return gntfork.run_python([sys.executable, str(SCRIPTS / name), *args], env_for(root),
                              timeout=WAIT * 2)


def wait_for_status(cl: luxi.Client, job_id: int, wanted: set[str]) -> str:
    """Long-poll the master until the job reaches one of ``wanted`` statuses."""
    prev: Any = None
    while True:
        change = cl.wait_for_job_change_once(job_id, ["status"], prev, None, 10)
        if change is None:
            raise AssertionError(f"job {job_id} vanished")
        if change == luxi.JOB_NOTCHANGED:
            continue
        prev = change[0]
        status = prev[0]
        if status in wanted:
            return str(status)
        if status in constants.JOBS_FINALIZED:
            raise AssertionError(f"job {job_id} ended as {status}, wanted {wanted}")
