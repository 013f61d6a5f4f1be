"""gnt-job and gnt-debug against a LUXI server backed by an in-memory queue."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.luxi_fakes import FakeContext, FakeLockManager, FakeQueue, running_server

from ganeti import cli, constants, errors, opcodes, pathutils
from ganeti.client import gnt_debug, gnt_job

WAIT = 30.0


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeQueue]:
    monkeypatch.setenv(pathutils.ROOT_ENV, str(tmp_path))
    fake = FakeQueue()
    glm = FakeLockManager([("cluster/BGL", "shared", ["job/3", "job/4"],
                            [["exclusive", ["job/5"]]]),
                           ("instance/web1", None, None, None)])
    with running_server(pathutils.current().master_socket, fake, FakeContext(glm)):
        yield fake


def _submit(queue: FakeQueue, n: int) -> list[int]:
    return [queue.submit_job([opcodes.OpTestDelay.create(duration=i)]) for i in range(n)]


def test_job_list_default_and_fields(queue: FakeQueue, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    _submit(queue, 2)
    queue.update(2, constants.OP_STATUS_SUCCESS)
    assert gnt_job.main(["list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ID Status  Summary",
        " 1 queued  TEST_DELAY(0.0)",
        " 2 success TEST_DELAY(1.0)",
    ]
    assert gnt_job.main(["list", "--no-headers", "--separator", "|", "-o", "+priority",
                         "--finished"]) == 0
    assert capsys.readouterr().out == "2|success|TEST_DELAY(1.0)|0\n"
    assert gnt_job.main(["list", "--no-headers", "-o", "id", "--pending", "1", "2"]) == 0
    assert capsys.readouterr().out == "1\n"


def test_job_list_unknown_field(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    _submit(queue, 1)
    assert gnt_job.main(["list", "-o", "id,colour"]) == 1
    captured = capsys.readouterr()
    # the CLI's one rule: refused with the field named, no table of "??"
    assert "Unknown output fields selected: colour" in captured.err
    assert captured.out == ""


def _job_list_opts(*argv: str):
    return cli.parse_command_line("gnt-job", gnt_job.COMMANDS, ["list", *argv])


def test_build_job_filter() -> None:
    assert gnt_job.build_job_filter(_job_list_opts(), []) is None
    assert gnt_job.build_job_filter(_job_list_opts("4"), []) == ["|", ["==", "id", 4]]
    assert gnt_job.build_job_filter(_job_list_opts("1"), ["queued"]) == \
        ["&", ["|", ["==", "id", 1]], ["|", ["==", "status", "queued"]]]
    assert gnt_job.build_job_filter(_job_list_opts("-F", "id > 3"), []) == [">", "id", 3]
    with pytest.raises(errors.OpPrereqError, match="Invalid job ID"):
        gnt_job.build_job_filter(_job_list_opts("x1"), [])


def test_job_info(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    _submit(queue, 1)
    queue.update(1, log="hello there")
    assert gnt_job.main(["info", "1", "99"]) == 1
    captured = capsys.readouterr()
    # the CLI's one not-found rule: nothing printed, the missing id named
    assert "Job '99' not known" in captured.err and captured.out == ""
    assert gnt_job.main(["info", "1"]) == 0
    captured = capsys.readouterr()
    assert "- Job ID: 1" in captured.out
    assert "Opcode: OP_TEST_DELAY" in captured.out
    assert "duration: 0.0" in captured.out
    assert "hello there" in captured.out


def test_job_cancel_archive_priority(queue: FakeQueue,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _submit(queue, 2)
    queue.update(2, constants.OP_STATUS_RUNNING)
    assert gnt_job.main(["cancel", "1"]) == 0
    assert "Job 1 canceled" in capsys.readouterr().out
    assert gnt_job.main(["cancel", "2"]) == 1
    assert gnt_job.main(["change-priority", "--priority", "high", "2"]) == 0
    assert queue.jobs[2].priority == constants.OP_PRIO_HIGH
    assert gnt_job.main(["change-priority", "2"]) == 2
    assert gnt_job.main(["archive", "1"]) == 0
    assert 1 not in queue.jobs
    assert gnt_job.main(["archive", "2"]) == 1
    queue.update(2, constants.OP_STATUS_SUCCESS)
    capsys.readouterr()
    assert gnt_job.main(["autoarchive", "all"]) == 0
    assert capsys.readouterr().out == "Archived 1 jobs, 0 unchecked left\n"
    assert gnt_job.main(["autoarchive", "soon"]) == 1


def test_job_watch_follows_until_done(queue: FakeQueue,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    (job_id,) = _submit(queue, 1)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(gnt_job.main(["watch", "1"])))
    thread.start()
    with queue.cond:
        assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
    queue.update(job_id, constants.OP_STATUS_RUNNING, log="working")
    with queue.cond:
        assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
    queue.update(job_id, constants.OP_STATUS_SUCCESS, log="finished", result=True)
    thread.join(WAIT)
    assert result == [0]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Output from job 1 follows"
    assert [line.rsplit(" ", 1)[-1] for line in out[2:]] == ["working", "finished"]


def test_job_watch_failed_job(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    (job_id,) = _submit(queue, 1)
    queue.update(job_id, constants.OP_STATUS_ERROR,
                 result=errors.encode(errors.OpExecError("it broke")))
    assert gnt_job.main(["watch", str(job_id)]) == 1
    err = capsys.readouterr().err
    assert "it broke" in err and "Traceback" not in err
    assert gnt_job.main(["watch", "77"]) == 1


def test_debug_delay_submit(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    assert gnt_debug.main(["delay", "--submit", "-n", "node1", "-n", "node2",
                           "--repeat", "2", "--priority", "low", "0.5"]) == 0
    assert capsys.readouterr().out == "JobID: 1\n"
    op = queue.jobs[1].ops[0]
    assert isinstance(op, opcodes.OpTestDelay)
    assert (op.duration, op.on_nodes, op.repeat, op.priority, op.on_master) == \
        (0.5, ["node1", "node2"], 2, constants.OP_PRIO_LOW, True)


def test_debug_delay_usage(queue: FakeQueue) -> None:
    assert gnt_debug.main(["delay", "-1"]) == 2
    assert gnt_debug.main(["delay", "soon"]) == 2
    assert gnt_debug.main(["delay", "--no-master", "1"]) == 1
    assert queue.jobs == {}


def test_debug_locks(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    assert gnt_debug.main(["locks"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Name          Mode   Owner       Pending",
        "cluster/BGL   shared job/3,job/4 exclusive:job/5",
        "instance/web1",
    ]
    assert gnt_debug.main(["locks", "--no-headers", "--separator", ";", "-o", "name"]) == 0
    assert capsys.readouterr().out == "cluster/BGL\ninstance/web1\n"
