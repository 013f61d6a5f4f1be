"""Ganeti 3.0.2's own gnt-job next to ours, against our master: the options of its man
page we added (list --error/--archived, list-fields, wait/watch of a failed job,
cancel by status) print the same jobs, fields and verdicts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import constants, opcodes
from ganeti.tools.local_cluster import SOURCE_TOP

FINAL = set(constants.JOBS_FINALIZED)
INSTANCE = "g3jobcli1"


def _lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout.splitlines()


def _submit(cluster: E2ECluster, op: opcodes.OpCode) -> int:
    with cluster.luxi_client() as cl:
        return cl.submit_job([op])


def _no_terminal(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120,
                          start_new_session=True, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def jobs(cluster: E2ECluster) -> dict[str, int]:
    """A failed job, a successful one and an archived (failed) one."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", INSTANCE)
    made = {}
    for name, op in (("failed", opcodes.OpInstanceShutdown.create(instance_name="nosuch")),
                     ("archived", opcodes.OpInstanceShutdown.create(instance_name="nosuch")),
                     ("ok", opcodes.OpTestDelay.create(duration=0))):
        made[name] = _submit(cluster, op)
        cluster.wait_job_status(made[name], FINAL)
    cluster.gnt("gnt-job", "archive", str(made["archived"]))
    return made


def test_list_error_and_archived(ganeti3: Ganeti3, cluster: E2ECluster,
                                 jobs: dict[str, int]) -> None:
    for argv in (("--error",), ("--archived",), ("--archived", "--error"), ()):
        theirs = _lines(ganeti3.run(cluster, "gnt-job", "list", "--no-headers",
                                    "--separator", "|", "-o", "id,status", *argv))
        ours = _lines(cluster.gnt("gnt-job", "list", "--no-headers", "--separator", "|",
                                  "-o", "id,status", *argv))
        assert theirs == ours, argv
    archived = _lines(ganeti3.run(cluster, "gnt-job", "list", "--no-headers",
                                  "--separator", "|", "-o", "id", "--archived"))
    assert f"{jobs['archived']}|Y" in archived and f"{jobs['ok']}|N" in archived


def test_list_fields(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    theirs = _lines(ganeti3.run(cluster, "gnt-job", "list-fields", "--separator", "|"))
    ours = _lines(cluster.gnt("gnt-job", "list-fields", "--separator", "|"))
    assert theirs == ours
    assert "archived|Boolean|Archived|" in "\n".join(ours)


def test_wait_and_watch_of_a_failed_job(ganeti3: Ganeti3, cluster: E2ECluster,
                                        jobs: dict[str, int]) -> None:
    job_id = jobs["failed"]
    for command in ("wait", "watch"):
        theirs = ganeti3.run(cluster, "gnt-job", command, str(job_id))
        ours = cluster.gnt("gnt-job", command, str(job_id), ok=False)
        assert theirs.returncode == ours.returncode == 1
        prefix = f"Job {job_id} failed: Failure: prerequisites not met for this operation"
        assert theirs.stderr.startswith(prefix) and ours.stderr.startswith(prefix)
        assert "nosuch" in theirs.stderr and "nosuch" in ours.stderr
        assert theirs.stdout == ours.stdout
    assert ganeti3.run(cluster, "gnt-job", "wait", str(jobs["ok"])).returncode == 0
    assert cluster.gnt("gnt-job", "wait", str(jobs["ok"])).stdout == ""


def test_cancel_by_status(ganeti3: Ganeti3, cluster: E2ECluster,
                          jobs: dict[str, int]) -> None:
    ours_cmd = [sys.executable, str(SOURCE_TOP / "scripts" / "gnt-job")]
    theirs_cmd = [str(ganeti3.python), str(ganeti3.share / "gnt-job")]
    with cluster.holding_hypervisor_lock("node2", INSTANCE):
        blocker = _submit(cluster, opcodes.OpInstanceShutdown.create(instance_name=INSTANCE))
        cluster.wait_job_status(blocker, {constants.OP_STATUS_RUNNING})
        waiter = _submit(cluster, opcodes.OpTestDelay.create(duration=0,
                                                             lock_instances=[INSTANCE]))
        cluster.wait_job_status(waiter, {constants.OP_STATUS_WAITING})
        # without a terminal both list the jobs, take the answer as no and exit 13
        theirs = _no_terminal([*theirs_cmd, "cancel", "--waiting"], ganeti3.env(cluster))
        ours = _no_terminal([*ours_cmd, "cancel", "--waiting"], cluster.env())
        assert theirs.returncode == ours.returncode == 13, (theirs, ours)
        assert [line.split()[:2] for line in theirs.stdout.splitlines()] == \
            [line.split()[:2] for line in ours.stdout.splitlines()] == \
            [["ID", "Status"], [str(waiter), "waiting"]]
        # the same refusal of the two together, and of --kill without --yes-do-it
        for argv in (["cancel", "--waiting", str(waiter)], ["cancel", "--kill", str(waiter)]):
            theirs = _no_terminal([*theirs_cmd, *argv], ganeti3.env(cluster))
            ours = _no_terminal([*ours_cmd, *argv], cluster.env())
            assert theirs.returncode == ours.returncode == 1, argv
        # theirs with --force cancels it
        out = _lines(ganeti3.run(cluster, "gnt-job", "cancel", "--waiting", "--force"))
        assert out == [f"Job {waiter} will be canceled"]
        assert cluster.wait_job_status(waiter, FINAL) == constants.OP_STATUS_CANCELED
        theirs = ganeti3.run(cluster, "gnt-job", "cancel", "--waiting", "--force")
        ours = cluster.gnt("gnt-job", "cancel", "--waiting", "--force", ok=False)
        assert theirs.returncode == ours.returncode == 1
        assert "No jobs with the requested status have been found" in theirs.stderr
        assert "No jobs with the requested status have been found" in ours.stderr
    assert cluster.wait_job_status(blocker, FINAL) == constants.OP_STATUS_SUCCESS
