"""gnt-job's Ganeti 3.0 options (list --error/--archived, list-fields, wait, info without
ids, cancel/change-priority by status with confirmation, --kill) against a LUXI server
on an in-memory queue."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.luxi_fakes import FakeContext, FakeQueue, running_server

from ganeti import cli, constants, errors, opcodes, pathutils
from ganeti.client import gnt_job

WAIT = 30.0
QUEUED = constants.OP_STATUS_QUEUED
WAITING = constants.OP_STATUS_WAITING
RUNNING = constants.OP_STATUS_RUNNING
SUCCESS = constants.OP_STATUS_SUCCESS
ERROR = constants.OP_STATUS_ERROR
CANCELED = constants.OP_STATUS_CANCELED


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeQueue]:
    monkeypatch.setenv(pathutils.ROOT_ENV, str(tmp_path))
    # no terminal unless a test gives one (as under cron): confirmations say no
    monkeypatch.setattr(cli, "TTY_PATH", str(tmp_path / "no-such-tty"))
    fake = FakeQueue()
    with running_server(pathutils.current().master_socket, fake, FakeContext()):
        yield fake


def _jobs(queue: FakeQueue, *statuses: str) -> list[int]:
    ids = []
    for i, status in enumerate(statuses):
        job_id = queue.submit_job([opcodes.OpTestDelay.create(duration=i)])
        queue.update(job_id, status)
        ids.append(job_id)
    return ids


def _parse(*argv: str):
    return cli.parse_command_line("gnt-job", gnt_job.COMMANDS, list(argv))


# --- parsing -----------------------------------------------------------------------


def test_status_options_select_the_union() -> None:
    assert gnt_job.selected_statuses(_parse("list")) == []
    assert gnt_job.selected_statuses(_parse("list", "--error")) == [ERROR]
    assert gnt_job.selected_statuses(_parse("list", "--running", "--error")) == [RUNNING, ERROR]
    assert gnt_job.selected_statuses(_parse("cancel", "--pending", "--queued")) == \
        [QUEUED, WAITING, constants.OP_STATUS_CANCELING]
    assert gnt_job.selected_statuses(_parse("change-priority", "--waiting")) == [WAITING]
    assert gnt_job.status_filter([ERROR]) == ["|", ["==", "status", ERROR]]
    assert gnt_job.status_filter([]) is None


def test_every_new_option_has_help() -> None:
    parser = cli.build_parser("gnt-job", gnt_job.COMMANDS)
    sub = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(sub.choices, dict)
    for name in ("list", "list-fields", "cancel", "change-priority", "wait", "info"):
        for action in sub.choices[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings} has no help"
    assert "cannot be killed" in (gnt_job._KILL_OPT.kwargs["help"])


def test_usage_errors() -> None:
    assert gnt_job.main(["wait"]) == 2
    assert gnt_job.main(["wait", "1", "2"]) == 2
    assert gnt_job.main(["wait", "x"]) == 2


# --- list ----------------------------------------------------------------------------


def test_list_error_and_filter(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    ok, bad, _queued = _jobs(queue, SUCCESS, ERROR, QUEUED)
    assert gnt_job.main(["list", "--no-headers", "-o", "id,status", "--error"]) == 0
    assert capsys.readouterr().out.split() == [str(bad), "error"]
    assert gnt_job.main(["list", "--no-headers", "-o", "id", "-F",
                         f"status == \"success\" or id == {bad}"]) == 0
    assert capsys.readouterr().out.split() == [str(ok), str(bad)]
    assert gnt_job.main(["list", "--no-headers", "-o", "id", "--error", "-F",
                         f"id > {bad}"]) == 0
    assert capsys.readouterr().out.split() == []


def test_list_archived(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    old, live = _jobs(queue, SUCCESS, QUEUED)
    assert queue.archive_job(old)
    assert gnt_job.main(["list", "--no-headers", "-o", "id"]) == 0
    assert capsys.readouterr().out.split() == [str(live)]
    assert gnt_job.main(["list", "--archived"]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["ID", "Status", "Summary", "Archived"],
        [str(old), "success", "TEST_DELAY(0.0)", "Y"],
        [str(live), "queued", "TEST_DELAY(1.0)", "N"],
    ]
    # the column is not doubled when asked for by name
    assert gnt_job.main(["list", "--archived", "--no-headers", "--separator", "|",
                         "-o", "id,archived"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{old}|Y", f"{live}|N"]


def test_list_fields(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    assert gnt_job.main(["list-fields"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Name", "Type", "Title", "Description"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows["id"] == "Number" and rows["status"] == "Text"
    assert rows["archived"] == "Boolean" and rows["summary"] == "Custom"
    assert gnt_job.main(["list-fields", "--no-headers", "--separator", "|", "status", "id"]) == 0
    assert capsys.readouterr().out.splitlines() == ["status|Text|Status|Job status",
                                                    "id|Number|ID|Job ID"]
    assert gnt_job.main(["list-fields", "id", "colour"]) == 1
    captured = capsys.readouterr()
    assert "colour" in captured.err and "colour" not in captured.out


# --- info, wait, watch ---------------------------------------------------------------


def test_info_without_ids_shows_every_job(queue: FakeQueue,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _jobs(queue, SUCCESS, QUEUED)
    assert gnt_job.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"- Job ID: {first}" in out and f"- Job ID: {second}" in out
    assert out.index(f"- Job ID: {first}") < out.index(f"- Job ID: {second}")


def test_info_with_no_jobs_at_all(queue: FakeQueue,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert gnt_job.main(["info"]) == 0
    assert capsys.readouterr().out == ""


def test_wait_prints_nothing_on_success(queue: FakeQueue,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (job_id,) = _jobs(queue, QUEUED)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(gnt_job.main(["wait",
                                                                         str(job_id)])))
    thread.start()
    with queue.cond:
        assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
    queue.update(job_id, RUNNING, log="working")
    with queue.cond:
        assert queue.cond.wait_for(lambda: queue.waiters == 1, WAIT)
    queue.update(job_id, SUCCESS, log="done", result=True)
    thread.join(WAIT)
    assert result == [0]
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_wait_and_watch_of_a_failed_job(queue: FakeQueue,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (job_id,) = _jobs(queue, ERROR)
    queue.update(job_id, result=errors.encode(errors.OpExecError("it broke")))
    assert gnt_job.main(["wait", str(job_id)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == \
        f"Job {job_id} failed: Failure: command execution error: it broke\n"
    assert gnt_job.main(["watch", str(job_id)]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"Output from job {job_id} follows\n")
    assert captured.err == \
        f"Job {job_id} failed: Failure: command execution error: it broke\n"


def test_wait_for_a_missing_job(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    assert gnt_job.main(["wait", "4242"]) == 1
    assert "Job '4242' not known" in capsys.readouterr().err


# --- cancel, change-priority ---------------------------------------------------------


def test_cancel_by_status_with_force(queue: FakeQueue,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    done, queued1, queued2 = _jobs(queue, SUCCESS, QUEUED, QUEUED)
    assert gnt_job.main(["cancel", "--queued", "--force"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"Job {queued1} canceled", f"Job {queued2} canceled"]
    assert [queue.jobs[j].status for j in (done, queued1, queued2)] == \
        [SUCCESS, CANCELED, CANCELED]


def test_cancel_by_status_without_a_terminal_asks_and_gets_no(
        queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    (queued,) = _jobs(queue, QUEUED)
    assert gnt_job.main(["cancel", "--pending"]) == cli.EXIT_CONFIRMATION
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "Status", "Summary"]
    assert out[1].split() == [str(queued), "queued", "TEST_DELAY(0.0)"]
    assert queue.jobs[queued].status == QUEUED


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A real pseudo-terminal the confirmation asks on; yields the controlling side
    (the test types the answer and reads the question there)."""
    control, term = os.openpty()
    monkeypatch.setattr(cli, "TTY_PATH", os.ttyname(term))
    try:
        yield control
    finally:
        os.close(control)
        os.close(term)


def _terminal_output(control: int) -> str:
    """All the command wrote to the terminal (it has exited: nothing more comes)."""
    data = b""
    while select.select([control], [], [], 0.2)[0]:
        chunk = os.read(control, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def test_cancel_by_status_confirmed_on_the_terminal(
        queue: FakeQueue, capsys: pytest.CaptureFixture[str], terminal: int) -> None:
    (queued,) = _jobs(queue, QUEUED)
    os.write(terminal, b"?\ny\n")
    assert gnt_job.main(["cancel", "--pending"]) == 0
    shown = _terminal_output(terminal)
    assert "Cancel the job(s) listed above?" in shown and "y/[n]/?" in shown
    assert " y - Perform the operation" in shown
    assert f"Job {queued} canceled" in capsys.readouterr().out
    assert queue.jobs[queued].status == CANCELED


def test_cancel_by_status_refused_on_the_terminal(
        queue: FakeQueue, terminal: int) -> None:
    (queued,) = _jobs(queue, QUEUED)
    os.write(terminal, b"n\n")
    assert gnt_job.main(["cancel", "--queued"]) == cli.EXIT_CONFIRMATION
    assert queue.jobs[queued].status == QUEUED


def test_cancel_selection_errors(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    (done,) = _jobs(queue, SUCCESS)
    assert gnt_job.main(["cancel"]) == 1
    assert "Either a status filter" in capsys.readouterr().err
    assert gnt_job.main(["cancel", "--pending", str(done)]) == 1
    assert "never both" in capsys.readouterr().err
    assert gnt_job.main(["cancel", "--pending", "--force"]) == 1
    assert "No jobs with the requested status have been found" in capsys.readouterr().err


def test_kill_needs_yes_do_it(queue: FakeQueue, capsys: pytest.CaptureFixture[str]) -> None:
    (queued,) = _jobs(queue, QUEUED)
    assert gnt_job.main(["cancel", "--kill", str(queued)]) == 1
    assert "--kill option must be confirmed with --yes-do-it" in capsys.readouterr().err
    assert queue.jobs[queued].status == QUEUED
    assert gnt_job.main(["cancel", "--kill", "--yes-do-it", str(queued)]) == 0
    assert queue.jobs[queued].status == CANCELED


def test_change_priority_by_status(queue: FakeQueue,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    done, queued = _jobs(queue, SUCCESS, QUEUED)
    assert gnt_job.main(["change-priority", "--priority", "low", "--pending", "--force"]) == 0
    assert queue.jobs[queued].priority == constants.OP_PRIO_LOW
    assert queue.jobs[done].priority == constants.OP_PRIO_NORMAL
    assert gnt_job.main(["change-priority", "--priority", "high", "--waiting",
                         "--force"]) == 1
    assert "No jobs with the requested status" in capsys.readouterr().err
    assert gnt_job.main(["change-priority", "--pending", "--force"]) == 2
