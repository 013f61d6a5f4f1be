"""The gnt-* scripts against a running 3-node cluster: what they import, how they
report a submitted job, and Ctrl-C while they wait for one (issue 18)."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from support.cluster import E2ECluster

from ganeti import constants
from ganeti.tools.local_cluster import SOURCE_TOP

pytestmark = pytest.mark.e2e

WAIT = 120.0
INSTANCE = "startup1"
# what a list command has no use for (test_cli_startup_imports.py checks the same offline)
HEAVY = ("pydantic", "pydantic_core", "ganeti.opcodes", "ganeti.objects", "ganeti.config",
         "ganeti.bootstrap", "ganeti.crypto", "cryptography", "pyparsing")


@pytest.fixture(scope="module")
def instance(cluster: E2ECluster) -> str:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=2M",
                "--no-start", INSTANCE)
    cluster.gnt("gnt-backup", "export", "-n", "node3", INSTANCE)
    return INSTANCE


class Running:
    """A gnt-* command running in the background; its stdout read line by line."""

    def __init__(self, cluster: E2ECluster, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SOURCE_TOP / "scripts" / argv[0]), *argv[1:]],
            env=cluster.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_line(self) -> str:
        try:
            return self.lines.get(timeout=WAIT)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no output within {WAIT}s") from None

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: SIGINT, as the terminal sends it; (exit code, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        _out, err = self.proc.communicate(timeout=WAIT)
        self._reader.join(WAIT)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=WAIT)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Background commands of a test, killed if the test left any behind."""
    started: list[Running] = []
    yield started
    for cmd in started:
        cmd.kill()


def _job_row(cluster: E2ECluster, job_id: int) -> list[str]:
    out = cluster.gnt("gnt-job", "list", "--no-headers", "--separator", "|",
                      "-o", "id,status,summary", str(job_id)).stdout
    return out.strip().split("|")


def _interrupted_job(stderr: str) -> int:
    """The job id the interrupted command named, after checking it said how to go on."""
    match = re.search(r"Job (\d+) was not cancelled", stderr)
    assert match, stderr
    job_id = int(match.group(1))
    assert f"gnt-job watch {job_id}" in stderr and f"gnt-job cancel {job_id}" in stderr
    assert "Traceback" not in stderr
    return job_id


# --- imports -------------------------------------------------------------------------


def _imports_of(cluster: E2ECluster, *argv: str) -> tuple[str, set[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime",
                           str(SOURCE_TOP / "scripts" / argv[0]), *argv[1:]],
                          env=cluster.env(), capture_output=True, text=True, timeout=WAIT,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")}
    assert "ganeti.cli" in modules
    return proc.stdout, modules


@pytest.mark.parametrize("argv, expected", [
    (("gnt-instance", "list", "--no-headers", "-o", "name,pnode,status"),
     f"{INSTANCE} node2 ADMIN_down"),
    (("gnt-backup", "list", "--no-headers"), f"node3 {INSTANCE}"),
    # (its query goes as a dict opcode the master validates)
    (("gnt-backup", "list", "-g", "--no-headers", "-o", "node,export,newest"),
     f"node3 {INSTANCE} Y"),
    (("gnt-job", "list", "--no-headers", "-o", "status,summary", "--finished"),
     f"success INSTANCE_CREATE({INSTANCE})"),
    (("gnt-node", "list", "--no-headers", "-o", "name"), "node3"),
    # (its layout is Ganeti's or ours: any answer will do here)
    (("gnt-cluster", "info"), None),
])
def test_list_commands_answer_without_heavy_imports(cluster: E2ECluster, instance: str,
                                                    argv: tuple[str, ...],
                                                    expected: str | None) -> None:
    out, modules = _imports_of(cluster, *argv)
    if expected is None:
        assert out.strip(), out
    else:
        assert expected in [" ".join(line.split()) for line in out.splitlines()], out
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY) == []


def test_job_command_still_checks_options_before_submitting(cluster: E2ECluster,
                                                            instance: str) -> None:
    """A job command imports the opcodes when it runs: a bad value is refused, naming
    the field, and no job is queued."""
    before = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id").stdout.split()
    proc = cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                       "0:size=2M,mode=sideways", "--no-start", "bad1", ok=False)
    assert proc.returncode == 1
    assert "mode" in proc.stderr and "Traceback" not in proc.stderr
    assert cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id").stdout.split() == before


# --- --submit and --print-jobid ---------------------------------------------------------


def test_submit_print_jobid(cluster: E2ECluster) -> None:
    proc = cluster.gnt("gnt-debug", "delay", "--submit", "--print-jobid", "0")
    # as Ganeti 3.0: the bare id on stdout, "JobID: N" on stderr
    assert re.fullmatch(r"\d+\n", proc.stdout), proc.stdout
    job_id = int(proc.stdout)
    assert f"JobID: {job_id}\n" in proc.stderr
    assert cluster.wait_job_status(job_id, {constants.OP_STATUS_SUCCESS}) == "success"
    # without --print-jobid, --submit keeps printing "JobID: N" on stdout (scripts read it)
    proc = cluster.gnt("gnt-debug", "delay", "--submit", "0")
    assert re.fullmatch(r"JobID: \d+\n", proc.stdout), proc.stdout


def test_print_jobid_then_waits(cluster: E2ECluster) -> None:
    proc = cluster.gnt("gnt-debug", "delay", "--print-jobid", "--repeat", "1", "0")
    first, *rest = proc.stdout.splitlines()
    job_id = int(first)
    assert rest and rest[-1].endswith("Test delay iteration 1/1")
    assert _job_row(cluster, job_id) == [str(job_id), "success", "TEST_DELAY(0.0)"]


# --- Ctrl-C ------------------------------------------------------------------------------


def test_ctrl_c_names_the_job_and_leaves_it_running(cluster: E2ECluster,
                                                    running: list[Running]) -> None:
    cmd = Running(cluster, "gnt-debug", "delay", "--repeat", "1", "4")
    running.append(cmd)
    # the first log line comes from the job: the command is waiting for it now
    assert cmd.next_line().rstrip().endswith("Test delay iteration 1/1")
    started = time.monotonic()
    code, stderr = cmd.interrupt()
    assert code == 1
    job_id = _interrupted_job(stderr)
    if time.monotonic() - started < 3:  # (a slow machine may have finished the sleep)
        assert _job_row(cluster, job_id)[1] == constants.OP_STATUS_RUNNING
    # the job was not cancelled: watched again, it finishes and succeeds
    proc = cluster.gnt("gnt-job", "watch", str(job_id))
    assert f"Output from job {job_id} follows" in proc.stdout
    assert _job_row(cluster, job_id) == [str(job_id), "success", "TEST_DELAY(4.0)"]


def test_ctrl_c_during_an_instance_operation(cluster: E2ECluster, instance: str,
                                             running: list[Running]) -> None:
    """A stop that waits for the node (its hypervisor lock held): interrupted, the job
    goes on holding the instance; released, it finishes."""
    with cluster.holding_hypervisor_lock("node2", instance):
        cmd = Running(cluster, "gnt-instance", "stop", "--print-jobid", instance)
        running.append(cmd)
        job_id = int(cmd.next_line())
        cluster.wait_job_status(job_id, {constants.OP_STATUS_RUNNING})
        code, stderr = cmd.interrupt()
        assert code == 1
        assert _interrupted_job(stderr) == job_id
        assert _job_row(cluster, job_id) == [str(job_id), "running",
                                             f"INSTANCE_SHUTDOWN({instance})"]
    assert cluster.wait_job_status(job_id, set(constants.JOBS_FINALIZED)) == "success"
