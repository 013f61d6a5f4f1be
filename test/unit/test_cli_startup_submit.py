"""cli's submit/poll path (--submit, --print-jobid, Ctrl-C) and its lazy command tables.

The client here is a stand-in for the master (one layer: the CLI framework); the
same behaviours run against a real cluster in test/e2e/test_cli_startup_e2e.py.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from ganeti import cli, constants

JOB = 17


class FakeClient:
    """Queues every job as JOB; ``interrupt_after`` polls raise KeyboardInterrupt."""

    def __init__(self, interrupt_after: int | None = None,
                 log: list[Any] | None = None) -> None:
        self.submitted: list[Any] = []
        self.polls = 0
        self.interrupt_after = interrupt_after
        self.log = log or []
        self.cancelled: list[int] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def submit_job(self, ops: list[Any]) -> int:
        self.submitted.append(ops)
        return JOB

    def wait_for_job_change_once(self, job_id: int, fields: list[str], prev_info: Any,
                                 prev_serial: Any, timeout: float = 30) -> Any:
        self.polls += 1
        if self.interrupt_after is not None and self.polls > self.interrupt_after:
            raise KeyboardInterrupt
        return [[constants.OP_STATUS_RUNNING], self.log]

    def cancel_job(self, job_id: int, kill: bool = False) -> tuple[bool, str]:
        self.cancelled.append(job_id)
        return True, "cancelled"


def _delay_op() -> dict[str, Any]:
    return {"OP_ID": "OP_TEST_DELAY", "duration": 0}


def _run(monkeypatch: pytest.MonkeyPatch, client: FakeClient, *argv: str,
         feedback: Any = None) -> int:
    monkeypatch.setattr(cli, "get_client", lambda timeout=60: client)

    def do(opts: argparse.Namespace) -> int:
        cli.submit_opcode(_delay_op(), opts, feedback_fn=feedback)
        return cli.EXIT_SUCCESS

    return cli.generic_main("gnt-test", {"do": cli.Command(do, (), cli.SUBMIT_OPTS)},
                            ["do", *argv])


def test_submit_print_jobid_as_ganeti(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient()
    assert _run(monkeypatch, client, "--submit", "--print-jobid") == cli.EXIT_SUCCESS
    out, err = capsys.readouterr()
    assert (out, err) == (f"{JOB}\n", f"JobID: {JOB}\n")
    assert client.polls == 0


def test_submit_alone_prints_jobid_on_stdout(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(monkeypatch, FakeClient(), "--submit") == cli.EXIT_SUCCESS
    assert capsys.readouterr() == (f"JobID: {JOB}\n", "")


@pytest.mark.parametrize("polls", [0, 2])
def test_ctrl_c_while_waiting(monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str], polls: int) -> None:
    client = FakeClient(interrupt_after=polls)
    assert _run(monkeypatch, client) == cli.EXIT_FAILURE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == cli.interrupted_lines(JOB)
    assert f"Job {JOB} was not cancelled" in err
    assert f"'gnt-job watch {JOB}'" in err and f"'gnt-job cancel {JOB}'" in err
    assert client.cancelled == []


def test_ctrl_c_in_feedback_and_after_print_jobid(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    def feedback(_entry: Any) -> None:
        raise KeyboardInterrupt

    client = FakeClient(log=[[1, [0, 0], "message", "hello"]])
    assert _run(monkeypatch, client, "--print-jobid", feedback=feedback) == cli.EXIT_FAILURE
    out, err = capsys.readouterr()
    assert out == f"{JOB}\n"
    assert err.splitlines() == cli.interrupted_lines(JOB)


def test_ctrl_c_before_the_job_exists(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Interrupted while submitting: no id to name, Ganeti's general warning."""
    client = FakeClient()

    def submit(_ops: list[Any]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(client, "submit_job", submit)
    assert _run(monkeypatch, client) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err.startswith("Aborted. Note that if the operation created any jobs")


def test_poll_job_interrupt_carries_the_id() -> None:
    with pytest.raises(cli.JobInterrupted) as info:
        cli.poll_job(JOB, FakeClient(interrupt_after=0))  # type: ignore[arg-type]
    assert info.value.job_id == JOB
    assert isinstance(info.value, KeyboardInterrupt)


def test_generic_opts_into_a_dict_opcode(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient()
    assert _run(monkeypatch, client, "--submit", "--priority", "high", "--dry-run",
                "--reason", "why") == cli.EXIT_SUCCESS
    (op,) = client.submitted[0]
    assert op["OP_ID"] == "OP_TEST_DELAY"
    assert op["priority"] == constants.OP_PRIO_HIGH and op["dry_run"] is True
    assert [entry[:2] for entry in op["reason"]] == [("gnt:user", "why")]


# --- lazy command tables -------------------------------------------------------------------


def _noop(_opts: argparse.Namespace) -> int:
    return 0


def test_only_the_chosen_command_is_built() -> None:
    made: list[str] = []

    def group(name: str) -> cli.OptionGroup:
        def make() -> tuple[cli.Option, ...]:
            made.append(name)
            return (cli.Option((f"--{name}-opt",), {"default": None, "help": name}),)
        return cli.OptionGroup(make)

    def load() -> cli.Command:
        made.append("deferred")
        return cli.Command(_noop, (cli.Arg("thing"),), (group("inner"),))

    commands = {"a": cli.Command(_noop, (), (group("a"),), "A"),
                "b": cli.Command(_noop, (), (group("b"),), "B"),
                "c": cli.Command(description="C", load=load)}
    opts = cli.parse_command_line("gnt-test", commands, ["a", "--a-opt", "1"])
    assert opts.a_opt == "1" and made == ["a"]
    opts = cli.parse_command_line("gnt-test", commands, ["c", "--inner-opt", "2", "x"])
    assert (opts.inner_opt, opts.thing) == ("2", "x")
    assert made == ["a", "deferred", "inner"]
    with pytest.raises(SystemExit):
        cli.parse_command_line("gnt-test", commands, ["--help"])
    assert made == ["a", "deferred", "inner"]  # the list of commands needs no options
    # the full parser (man pages) and the options property expand everything
    assert [o.flags for o in commands["b"].options] == [("--b-opt",)]
    assert commands["c"].description == "C" and commands["c"].args == (cli.Arg("thing"),)
    cli.build_parser("gnt-test", commands)


def test_lazy_model_options() -> None:
    group = cli.lazy_model_options("ganeti.objects:BackupDefaults", "backup", "b_",
                                   names=("bwlimit",))
    (option,) = group.options
    assert option.flags == ("--backup-bwlimit",) and option.kwargs["dest"] == "b_bwlimit"


def test_help_width_without_shutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    assert cli.HelpFormatter("x")._width == 48
    monkeypatch.delenv("COLUMNS")
    assert cli.HelpFormatter("x", width=70)._width == 70
