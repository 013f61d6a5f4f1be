"""CLI framework: option parsing, tables, job polling and exit codes."""

from __future__ import annotations

import argparse
import time
from typing import Any

import pytest

from ganeti import cli, constants, errors, luxi, opcodes


def _noop(_opts: argparse.Namespace) -> int:
    return 0


COMMANDS = {
    "do": cli.Command(_noop, (cli.Arg("name"),), cli.SUBMIT_OPTS, "Do something"),
    "show": cli.Command(_noop, (cli.Arg("ids", 0, None, cli.job_id_arg),), cli.LIST_OPTS, ""),
    "pair": cli.Command(_noop, (cli.Arg("two", 2, 2),), (), ""),
    "some": cli.Command(_noop, (cli.Arg("names", 2, 3),), (), ""),
}


def _parse(*argv: str) -> argparse.Namespace:
    return cli.parse_command_line("gnt-test", COMMANDS, argv)


# --- parsing ----------------------------------------------------------------------------


def test_submit_options_parse() -> None:
    opts = _parse("do", "--priority", "high", "--submit", "--dry-run", "--reason", "why",
                  "-d", "thing")
    assert opts.priority == constants.OP_PRIO_HIGH
    assert opts.submit_only is True
    assert opts.dry_run is True
    assert opts.reason == "why"
    assert opts.debug == 1
    assert opts.name == "thing"
    defaults = _parse("do", "x")
    assert defaults.priority is None and defaults.submit_only is False
    assert defaults.print_jobid is False and defaults.root is None


@pytest.mark.parametrize("name, value", [("low", 10), ("normal", 0), ("HIGH", -10)])
def test_priority_names(name: str, value: int) -> None:
    assert _parse("do", "--priority", name, "x").priority == value


def test_bounded_argument_counts() -> None:
    assert _parse("some", "a", "b").names == ["a", "b"]
    assert _parse("some", "a", "b", "c").names == ["a", "b", "c"]
    assert _parse("pair", "a", "b").two == ["a", "b"]


def test_list_options_and_ids() -> None:
    opts = _parse("show", "-o", "+a,b", "--no-headers", "--separator", ":", "3", "7")
    assert opts.output == "+a,b" and opts.no_headers and opts.separator == ":"
    assert opts.ids == [3, 7]
    assert _parse("show").ids == []


@pytest.mark.parametrize("argv", [
    [], ["nosuch"], ["do"], ["do", "a", "b"], ["do", "--priority", "urgent", "x"],
    ["show", "abc"], ["show", "-5"], ["pair", "one"], ["do", "--bogus", "x"],
    ["some", "a"], ["some", "a", "b", "c", "d"],
])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.generic_main("gnt-test", COMMANDS, argv) == cli.EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


def test_root_option_sets_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("GANETI_ROOT", raising=False)
    seen: list[str] = []

    def record(_opts: argparse.Namespace) -> int:
        seen.append(luxi.Client().address)
        return 0

    commands = {"x": cli.Command(record)}
    assert cli.generic_main("gnt-test", commands, ["x", "--root", str(tmp_path)]) == 0
    assert seen == [str(tmp_path / "var/run/ganeti/socket/ganeti-master")]


def test_parse_fields() -> None:
    assert cli.parse_fields(None, ["id", "status"]) == ["id", "status"]
    assert cli.parse_fields("+summary,oplog", ["id"]) == ["id", "summary", "oplog"]
    assert cli.parse_fields("a,,b", ["id"]) == ["a", "b"]


@pytest.mark.parametrize("spec, seconds", [("30", 30), ("5m", 300), ("2h", 7200),
                                           ("1d", 86400), ("1w", 604800)])
def test_parse_time_spec(spec: str, seconds: int) -> None:
    assert cli.parse_time_spec(spec) == seconds


@pytest.mark.parametrize("spec", ["", "1y", "-1d", "d", "1.5h"])
def test_parse_time_spec_rejects(spec: str) -> None:
    with pytest.raises(errors.OpPrereqError):
        cli.parse_time_spec(spec)


# --- exit codes and error output ----------------------------------------------------------


def _raiser(err: BaseException) -> cli.Command:
    def func(_opts: argparse.Namespace) -> int:
        raise err
    return cli.Command(func)


def test_error_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    commands = {"x": _raiser(errors.OpExecError("disk 0 failed"))}
    assert cli.generic_main("gnt-test", commands, ["x"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "disk 0 failed" in err
    assert "Traceback" not in err


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    commands = {"x": _raiser(errors.OpExecError("boom"))}
    assert cli.generic_main("gnt-test", commands, ["x", "--debug"]) == cli.EXIT_FAILURE
    assert "Traceback" in capsys.readouterr().err


def test_no_master_message(capsys: pytest.CaptureFixture[str], tmp_path: Any,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GANETI_ROOT", str(tmp_path))

    def query(_opts: argparse.Namespace) -> int:
        cli.get_client().query_jobs(None, ["id"])
        return 0

    assert cli.generic_main("gnt-test", {"x": cli.Command(query)}, ["x"]) == 1
    assert "Cannot communicate with the master daemon" in capsys.readouterr().err


def test_function_exit_code_passes_through() -> None:
    assert cli.generic_main("gnt-test", {"x": cli.Command(lambda _o: 3)}, ["x"]) == 3


# --- tables -------------------------------------------------------------------------------


def test_table_alignment() -> None:
    lines = cli.generate_table({"id": "ID", "name": "Name", "size": "Size"},
                               ["id", "name", "size"], None,
                               [[1, "alpha", 512], [120, "b", 4096]],
                               numfields=["id"], unitfields=["size"])
    assert lines == [
        " ID Name  Size",
        "  1 alpha 512M",
        "120 b     4.0G",
    ]


def test_table_last_text_column_not_padded() -> None:
    lines = cli.generate_table({"a": "A", "b": "B"}, ["a", "b"], None,
                               [["x", "long value"], ["yy", "s"]])
    assert lines == ["A  B", "x  long value", "yy s"]


def test_table_separator_and_no_headers() -> None:
    lines = cli.generate_table(None, ["id", "size"], ":", [[1, 2048], [22, None]],
                               numfields=["id"], unitfields=["size"])
    assert lines == ["1:2048", "22:"]


@pytest.mark.parametrize("mib, units, text", [
    (512, "h", "512M"), (1536, "h", "1.5G"), (3 * 1024 * 1024, "h", "3.0T"),
    (2048, "m", "2048"), (2048, "g", "2.0"), (1024 * 1024, "t", "1.0"),
])
def test_format_unit(mib: int, units: str, text: str) -> None:
    assert cli.format_unit(mib, units) == text


def test_format_query_result_statuses() -> None:
    result: dict[str, Any] = {
        "fields": [{"name": "id", "title": "ID", "kind": "number", "doc": ""},
                   {"name": "flag", "title": "Flag", "kind": "bool", "doc": ""},
                   {"name": "tags", "title": "Tags", "kind": "other", "doc": ""},
                   {"name": "zz", "title": "zz", "kind": "unknown", "doc": ""}],
        "data": [[[0, 7], [0, True], [0, ["a", "b"]], [1, None]],
                 [[0, 10], [3, None], [2, None], [1, None]]],
    }
    code, lines = cli.format_query_result(result, separator="|")
    assert code == cli.EXIT_FAILURE  # an unknown field was asked for
    assert lines == ["ID|Flag|Tags|zz", "7|Y|a,b|??", "10|(unavail)|(nodata)|??"]
    code, lines = cli.format_query_result({"fields": result["fields"][:1],
                                           "data": [[[0, 1]]]}, header=False)
    assert code == cli.EXIT_SUCCESS and lines == ["1"]


def test_format_log_entry_local_time() -> None:
    ts = time.mktime((2026, 11, 29, 12, 3, 4, 0, 0, -1))
    line = cli.format_log_entry([1, [int(ts), 500], "message", "disk/0 sent 268M"])
    assert line == f"{time.ctime(ts)} disk/0 sent 268M"
    structured = cli.format_log_entry([2, [int(ts), 0], "remote-import", {"x": 1}])
    assert structured.endswith('remote-import: {"x": 1}')


# --- submitting and polling ----------------------------------------------------------------


class ScriptedClient:
    """A client whose job goes through a fixed list of WaitForJobChange answers."""

    def __init__(self, changes: list[Any], final: list[Any]) -> None:
        self.changes = list(changes)
        self.final = final
        self.submitted: list[Any] = []
        self.polls: list[tuple[Any, Any]] = []

    def submit_job(self, ops: list[opcodes.OpCode]) -> int:
        self.submitted.append(ops)
        return 17

    def wait_for_job_change_once(self, job_id: int, fields: list[str], prev_info: Any,
                                 prev_serial: Any, timeout: float = 30) -> Any:
        assert job_id == 17 and fields == ["status"]
        self.polls.append((prev_info, prev_serial))
        return self.changes.pop(0)

    def query_jobs(self, job_ids: list[int], fields: list[str]) -> list[Any]:
        return [self.final]


def _log(serial: int, msg: str) -> list[Any]:
    return [serial, [1_700_000_000 + serial, 0], "message", msg]


def test_submit_opcode_prints_log_and_returns_result(
        capsys: pytest.CaptureFixture[str]) -> None:
    cl = ScriptedClient(
        [[["queued"], []], [["running"], [_log(1, "step one")]], luxi.JOB_NOTCHANGED,
         [["success"], [_log(2, "step two"), _log(3, "done")]]],
        ["success", ["success"], [[True, [True]]]])
    opts = _parse("do", "--priority", "low", "--reason", "test", "x")
    op = opcodes.OpTestDelay.create(duration=1)
    result = cli.submit_opcode(op, opts, cl)  # type: ignore[arg-type]
    assert result == [True, [True]]
    sent = cl.submitted[0][0]
    assert sent.priority == constants.OP_PRIO_LOW
    assert sent.reason[-1][:2] == ("gnt:user", "test")
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 5)[-1] for line in out] == ["step one", "step two", "done"]
    assert out[0].startswith(time.ctime(1_700_000_001))
    # each poll passes the last job info and log serial seen
    assert cl.polls == [(None, None), (["queued"], None), (["running"], 1), (["running"], 1)]


def test_submit_opcode_raises_job_error() -> None:
    err = errors.encode(errors.OpPrereqError("Instance x unknown", errors.ECODE_NOENT))
    cl = ScriptedClient([[["error"], []]], ["error", ["error"], [err]])
    with pytest.raises(errors.OpPrereqError) as info:
        cli.submit_opcode(opcodes.OpTestDelay.create(duration=0), None, cl)  # type: ignore[arg-type]
    assert info.value.ecode == errors.ECODE_NOENT


def test_submit_opcode_canceled_job() -> None:
    cl = ScriptedClient([[["canceled"], []]], ["canceled", ["canceled"], [None]])
    with pytest.raises(errors.JobCanceled):
        cli.submit_opcode(opcodes.OpTestDelay.create(duration=0), None, cl)  # type: ignore[arg-type]


def test_submit_only_prints_job_id(capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cl = ScriptedClient([], [])
    monkeypatch.setattr(cli, "get_client", lambda timeout=60: cl)

    def run(opts: argparse.Namespace) -> int:
        cli.submit_opcode(opcodes.OpTestDelay.create(duration=0), opts)
        return 5

    commands = {"x": cli.Command(run, (), cli.SUBMIT_OPTS)}
    assert cli.generic_main("gnt-test", commands, ["x", "--submit"]) == 0
    assert capsys.readouterr().out == "JobID: 17\n"
    assert cl.polls == []


def test_print_jobid_then_waits(capsys: pytest.CaptureFixture[str]) -> None:
    cl = ScriptedClient([[["success"], []]], ["success", ["success"], [None]])
    opts = _parse("do", "--print-jobid", "x")
    assert cli.submit_opcode(opcodes.OpTestDelay.create(duration=0), opts, cl) is None  # type: ignore[arg-type]
    assert capsys.readouterr().out == "17\n"


def test_unexpected_exception_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    commands = {"x": _raiser(ValueError("bad value"))}
    assert cli.generic_main("gnt-test", commands, ["x"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert err == "Unexpected error: ValueError: bad value\n"
