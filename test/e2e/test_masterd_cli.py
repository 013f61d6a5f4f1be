"""gnt-debug and gnt-job against a real ganeti-masterd."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.masterd import MASTERD, WAIT, MasterProcess, init_cluster, run_script

from ganeti import errors, luxi, opcodes

pytestmark = pytest.mark.e2e

CTIME_RE = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MasterProcess]:
    root = tmp_path_factory.mktemp("masterd")
    init_cluster(root)
    proc = MasterProcess(root)
    proc.start()
    yield proc
    proc.stop()


def test_delay_prints_log_lines(master: MasterProcess) -> None:
    res = run_script(master.root, "gnt-debug", "delay", "--repeat", "2", "0.1")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    for i, line in enumerate(lines, 1):
        assert re.fullmatch(rf"{CTIME_RE} Test delay iteration {i}/2", line), line


def test_failing_job_exits_1_with_clear_error(master: MasterProcess) -> None:
    res = run_script(master.root, "gnt-debug", "delay", "-n", "no-such-node", "0")
    assert res.returncode == 1
    assert "no-such-node" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_usage_error_exits_2(master: MasterProcess) -> None:
    res = run_script(master.root, "gnt-job", "frobnicate")
    assert res.returncode == 2
    assert "usage:" in res.stderr


def test_submit_watch_list_info_archive(master: MasterProcess) -> None:
    res = run_script(master.root, "gnt-debug", "delay", "--submit", "--repeat", "1", "0")
    assert res.returncode == 0, res.stderr
    match = re.fullmatch(r"JobID: (\d+)\n", res.stdout)
    assert match, res.stdout
    job_id = match.group(1)

    res = run_script(master.root, "gnt-job", "watch", job_id)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"Output from job {job_id} follows\n")
    assert "Test delay iteration 1/1" in res.stdout

    res = run_script(master.root, "gnt-job", "list", "--no-headers", "--separator", ":",
                     "-o", "id,status,summary", job_id)
    assert res.stdout == f"{job_id}:success:TEST_DELAY(0.0)\n"

    res = run_script(master.root, "gnt-job", "info", job_id)
    assert res.returncode == 0, res.stderr
    assert f"- Job ID: {job_id}" in res.stdout
    assert "Status: success" in res.stdout
    assert "OP_TEST_DELAY" in res.stdout

    res = run_script(master.root, "gnt-job", "archive", job_id)
    assert res.returncode == 0, res.stderr
    res = run_script(master.root, "gnt-job", "list", "--no-headers", "-o", "id", job_id)
    assert res.stdout == ""
    res = run_script(master.root, "gnt-job", "info", job_id)
    assert res.returncode == 1


def test_print_jobid_and_autoarchive(master: MasterProcess) -> None:
    res = run_script(master.root, "gnt-debug", "delay", "--print-jobid", "0")
    assert res.returncode == 0, res.stderr
    job_id = int(res.stdout.splitlines()[0])
    with master.client() as cl:
        assert cl.query_jobs([job_id], ["status"]) == [["success"]]
    res = run_script(master.root, "gnt-job", "autoarchive", "all")
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"Archived [1-9]\d* jobs, 0 unchecked left\n", res.stdout)
    with master.client() as cl:
        assert cl.query_jobs([job_id], ["status"]) == [None]


def test_luxi_queries(master: MasterProcess) -> None:
    with master.client() as cl:
        info = cl.query_cluster_info()
        assert info["cluster_name"] == "cluster.e2e"
        assert info["master"] == "node1.e2e"
        assert cl.query_config_values(["cluster_name", "drain_flag"]) == ["cluster.e2e", False]
        locks = cl.query("lock", ["name"])
        assert [0, "cluster/BGL"] in [row[0] for row in locks["data"]]
        with pytest.raises(errors.OpPrereqError):
            cl.query("job", ["id"], ["=", "no_such_field", 1])


def test_drain_flag(master: MasterProcess) -> None:
    with master.client() as cl:
        cl.set_drain_flag(True)
        try:
            with pytest.raises(errors.JobQueueDrainError):
                cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        finally:
            cl.set_drain_flag(False)
    res = run_script(master.root, "gnt-debug", "delay", "0")
    assert res.returncode == 0, res.stderr


def test_garbage_does_not_hurt_the_daemon(master: MasterProcess) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        with luxi.short_unix_path(str(master.paths.master_socket)) as path:
            sock.connect(path)
        sock.sendall(b"\x00\xffnot json at all\x03")
        stream = luxi.MessageStream(sock)
        reply = stream.recv()
        assert reply["success"] is False
        assert isinstance(errors.decode(reply["result"]), errors.ProtocolError)
        # a refused request leaves the connection usable (doc/luxi.md "Errors")
        stream.send(luxi.format_request(luxi.REQ_QUERY_JOBS, [None, ["id"]]))
        assert stream.recv()["success"] is True
    with master.client() as cl:
        assert isinstance(cl.query_jobs(None, ["id"]), list)


def test_socket_and_pid_file(master: MasterProcess) -> None:
    sock_path = master.paths.master_socket
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(sock_path.parent).st_mode) == 0o750
    assert master.proc is not None
    pid_file = master.paths.pid_file("ganeti-masterd")
    assert pid_file.read_text().strip() == str(master.proc.pid)


def test_second_instance_refuses(master: MasterProcess) -> None:
    res = subprocess.run([sys.executable, str(MASTERD), "--foreground", "--root",
                          str(master.root)], capture_output=True, text=True,
                         timeout=WAIT, check=False)
    assert res.returncode == 1
    assert "already running" in res.stderr
    # the first one still serves
    with master.client() as cl:
        assert isinstance(cl.query_jobs(None, ["id"]), list)
