"""gnt-job's Ganeti 3.0 commands and options through the real script, against a running
3-node cluster: wait, list-fields, list --error/--archived/-F, info without ids,
cancel and change-priority by status (confirmed on the terminal, or --force), and
--kill refused for a running job."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import termios
from collections.abc import Iterator

import pytest
from support.cluster import E2ECluster

from ganeti import constants, opcodes
from ganeti.tools.local_cluster import SOURCE_TOP

pytestmark = pytest.mark.e2e

WAITING = constants.OP_STATUS_WAITING
RUNNING = constants.OP_STATUS_RUNNING
FINAL = set(constants.JOBS_FINALIZED)
INSTANCE = "jobcli1"


@pytest.fixture(scope="module")
def instance(cluster: E2ECluster) -> str:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", INSTANCE)
    return INSTANCE


def _submit(cluster: E2ECluster, op: opcodes.OpCode) -> int:
    with cluster.luxi_client() as cl:
        return cl.submit_job([op])


def _failed_job(cluster: E2ECluster) -> int:
    job_id = _submit(cluster, opcodes.OpInstanceShutdown.create(instance_name="nosuch-inst"))
    assert cluster.wait_job_status(job_id, FINAL) == constants.OP_STATUS_ERROR
    return job_id


def _ids(cluster: E2ECluster, *argv: str) -> list[str]:
    out = cluster.gnt("gnt-job", "list", "--no-headers", "-o", "id", *argv).stdout
    return out.split()


def _status(cluster: E2ECluster, job_id: int) -> str:
    with cluster.luxi_client() as cl:
        (row,) = cl.query_jobs([job_id], ["status"])
    return str(row[0])


def _gnt_job_without_terminal(cluster: E2ECluster, *argv: str
                              ) -> subprocess.CompletedProcess[str]:
    """gnt-job in a session of its own: no controlling terminal, as under cron."""
    return subprocess.run([sys.executable, str(SOURCE_TOP / "scripts" / "gnt-job"), *argv],
                          env=cluster.env(), capture_output=True, text=True, timeout=120,
                          start_new_session=True, stdin=subprocess.DEVNULL, check=False)


def _gnt_job_on_a_terminal(cluster: E2ECluster, answer: bytes, *argv: str) -> tuple[int, str]:
    """gnt-job with a pseudo-terminal as its controlling terminal, on which the user
    types ``answer``; its exit code and everything it showed there."""
    control, term = os.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    try:
        proc = subprocess.Popen([sys.executable, str(SOURCE_TOP / "scripts" / "gnt-job"),
                                 *argv], env=cluster.env(), stdin=term, stdout=term,
                                stderr=term, start_new_session=True,
                                preexec_fn=take_terminal)
        os.close(term)
        shown = b""
        typed = False
        while True:
            ready = select.select([control], [], [], 120)[0]
            assert ready, f"gnt-job {' '.join(argv)} hung; it showed {shown!r}"
            try:
                chunk = os.read(control, 4096)
            except OSError:   # EIO: the command exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if not typed and b"y/[n]/?: " in shown:
                os.write(control, answer)
                typed = True
        return proc.wait(120), shown.decode()
    finally:
        os.close(control)


@pytest.fixture
def blocked(cluster: E2ECluster, instance: str) -> Iterator[tuple[int, list[int]]]:
    """A running job holding the instance's lock (blocked on the node's hypervisor lock)
    and two jobs waiting for that lock; the block ends after the test."""
    with cluster.holding_hypervisor_lock("node2", instance):
        blocker = _submit(cluster, opcodes.OpInstanceShutdown.create(instance_name=instance))
        cluster.wait_job_status(blocker, {RUNNING})
        waiters = [_submit(cluster, opcodes.OpTestDelay.create(duration=0,
                                                               lock_instances=[instance]))
                   for _ in range(2)]
        for job_id in waiters:
            cluster.wait_job_status(job_id, {WAITING})
        yield blocker, waiters
    assert cluster.wait_job_status(blocker, FINAL) == constants.OP_STATUS_SUCCESS
    for job_id in waiters:
        cluster.wait_job_status(job_id, FINAL)


def test_wait_and_watch(cluster: E2ECluster) -> None:
    ok = _submit(cluster, opcodes.OpTestDelay.create(duration=0.2))
    proc = cluster.gnt("gnt-job", "wait", str(ok))
    assert proc.stdout == "" and proc.stderr == ""
    assert _status(cluster, ok) == constants.OP_STATUS_SUCCESS
    bad = _failed_job(cluster)
    for command in ("wait", "watch"):
        proc = cluster.gnt("gnt-job", command, str(bad), ok=False)
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith(f"Job {bad} failed: Failure: prerequisites not met"), \
            proc.stderr
        assert "nosuch-inst" in proc.stderr and "Traceback" not in proc.stderr
    missing = cluster.gnt("gnt-job", "wait", "999999", ok=False)
    assert missing.returncode == 1 and "Job '999999' not known" in missing.stderr


def test_list_fields(cluster: E2ECluster) -> None:
    out = cluster.gnt("gnt-job", "list-fields").stdout.splitlines()
    assert out[0].split() == ["Name", "Type", "Title", "Description"]
    assert {line.split()[0] for line in out[1:]} >= {"id", "status", "summary", "archived"}
    one = cluster.gnt("gnt-job", "list-fields", "--no-headers", "--separator", "|",
                      "archived").stdout
    assert one.startswith("archived|Boolean|Archived|")
    bad = cluster.gnt("gnt-job", "list-fields", "nosuchfield", ok=False)
    assert bad.returncode == 1 and "nosuchfield" in bad.stderr


def test_list_error_archived_and_filter(cluster: E2ECluster) -> None:
    bad = _failed_job(cluster)
    ok = _submit(cluster, opcodes.OpTestDelay.create(duration=0))
    assert cluster.wait_job_status(ok, FINAL) == constants.OP_STATUS_SUCCESS
    errors_listed = _ids(cluster, "--error")
    assert str(bad) in errors_listed and str(ok) not in errors_listed
    rows = cluster.gnt("gnt-job", "list", "--no-headers", "--separator", "|", "-o",
                       "id,status", "--error").stdout.splitlines()
    assert all(row.endswith("|error") for row in rows) and rows
    assert _ids(cluster, "-F", f"id == {bad} or id == {ok}") == [str(bad), str(ok)]
    assert _ids(cluster, "--error", "-F", f"id >= {bad}") == [str(bad)]
    # archived: gone from the plain list, back with --archived (and its column)
    cluster.gnt("gnt-job", "archive", str(bad))
    assert str(bad) not in _ids(cluster)
    out = cluster.gnt("gnt-job", "list", "--archived", "--no-headers", "--separator", "|",
                      "-o", "id,status").stdout.splitlines()
    assert f"{bad}|error|Y" in out and f"{ok}|success|N" in out
    assert _ids(cluster, "--archived", "--error", "-F", f"id == {bad}") == [str(bad), "Y"]
    # a filter on the field reads the archive too
    by_field = _ids(cluster, "-F", "archived")
    assert str(bad) in by_field and str(ok) not in by_field


def test_info_without_ids(cluster: E2ECluster) -> None:
    first = _submit(cluster, opcodes.OpTestDelay.create(duration=0))
    last = _submit(cluster, opcodes.OpTestDelay.create(duration=0))
    cluster.wait_job_status(last, FINAL)
    out = cluster.gnt("gnt-job", "info").stdout
    listed = _ids(cluster)
    assert listed and all(f"- Job ID: {job_id}\n" in out for job_id in listed)
    assert out.index(f"- Job ID: {first}\n") < out.index(f"- Job ID: {last}\n")


def test_cancel_by_status_asks_first(cluster: E2ECluster,
                                     blocked: tuple[int, list[int]]) -> None:
    blocker, waiters = blocked
    # no terminal: the jobs are listed, the answer is no, nothing is canceled
    proc = _gnt_job_without_terminal(cluster, "cancel", "--waiting")
    assert proc.returncode == 13, proc
    listed = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert listed == [str(j) for j in waiters]
    assert [_status(cluster, j) for j in waiters] == [WAITING, WAITING]
    # on a terminal: "n" keeps them, "y" cancels them all
    code, shown = _gnt_job_on_a_terminal(cluster, b"n\n", "cancel", "--pending")
    assert code == 13 and "Cancel the job(s) listed above?" in shown, shown
    assert [_status(cluster, j) for j in waiters] == [WAITING, WAITING]
    code, shown = _gnt_job_on_a_terminal(cluster, b"y\n", "cancel", "--pending")
    assert code == 0, shown
    for job_id in waiters:
        assert f"Job {job_id}" in shown
        assert cluster.wait_job_status(job_id, FINAL) == constants.OP_STATUS_CANCELED
    assert _status(cluster, blocker) == RUNNING


def test_cancel_force_kill_and_priority(cluster: E2ECluster,
                                        blocked: tuple[int, list[int]]) -> None:
    blocker, waiters = blocked
    proc = cluster.gnt("gnt-job", "change-priority", "--priority", "high", "--waiting",
                       "--force")
    assert all(f"job {j}" in proc.stdout for j in waiters), proc.stdout
    with cluster.luxi_client() as cl:
        prios = [row[0] for row in cl.query_jobs(waiters, ["priority"])]
    assert prios == [constants.OP_PRIO_HIGH] * 2
    # --kill needs its confirmation, and cannot stop the running job here
    proc = cluster.gnt("gnt-job", "cancel", "--kill", str(blocker), ok=False)
    assert proc.returncode == 1 and "--yes-do-it" in proc.stderr
    proc = cluster.gnt("gnt-job", "cancel", "--kill", "--yes-do-it", str(blocker), ok=False)
    assert proc.returncode == 1
    assert f"Job {blocker} is running and cannot be killed" in proc.stderr
    assert _status(cluster, blocker) == RUNNING
    # ids and a status together are refused; --force cancels without asking
    proc = cluster.gnt("gnt-job", "cancel", "--waiting", str(waiters[0]), ok=False)
    assert proc.returncode == 1 and "never both" in proc.stderr
    proc = cluster.gnt("gnt-job", "cancel", "--waiting", "--force")
    # jobs waiting for locks are canceled as soon as their opcode looks up
    assert proc.stdout.splitlines() == [f"Job {j} will be canceled" for j in waiters]
    for job_id in waiters:
        assert cluster.wait_job_status(job_id, FINAL) == constants.OP_STATUS_CANCELED
    proc = cluster.gnt("gnt-job", "cancel", "--waiting", "--force", ok=False)
    assert proc.returncode == 1 and "No jobs with the requested status" in proc.stderr
