"""--units: one formatter (cli.format_sizes) for every size of every list command:
unit fields, disk.sizes, export byte counts and gnt-backup list's sizes; -v for
gnt-backup list."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti import cli
from ganeti.client import gnt_backup

MIB = 1 << 20
GEN = {"node": "node3", "instance": "web1", "generation": "20251201T031500Z",
       "timestamp": 1764558900.0, "size": 4096 * MIB, "used": 1536 * MIB,
       "unique": 512 * MIB, "shared": 1024 * MIB, "newest": True, "protected": False,
       "note": "", "meta_problem": None}

_INSTANCE_RESULT: dict[str, Any] = {
    "fields": [{"name": "name", "title": "Instance", "kind": "text", "doc": ""},
               {"name": "be/maxmem", "title": "ConfigMaxMem", "kind": "unit", "doc": ""},
               {"name": "disk.sizes", "title": "Disk_sizes", "kind": "other", "doc": ""},
               {"name": "export.disk_bytes", "title": "ExportDiskBytes", "kind": "number",
                "doc": ""}],
    "data": [[[0, "web1"], [0, 2048], [0, [1024, 3072]], [0, 4096 * MIB]]],
}


@pytest.mark.parametrize("units,row", [
    (None, "web1|2048|1024,3072|4294967296"),
    ("m", "web1|2048|1024,3072|4096"),
    ("g", "web1|2.0|1.0,3.0|4.0"),
    ("h", "web1|2.0G|1.0G,3.0G|4.0G"),
])
def test_units_apply_to_every_size_field(units: str | None, row: str) -> None:
    _code, lines = cli.format_query_result(_INSTANCE_RESULT, separator="|", header=False,
                                           units=units)
    assert lines == [row]


def test_table_without_units_is_readable() -> None:
    _code, lines = cli.format_query_result(_INSTANCE_RESULT, header=False)
    # disk.sizes and byte counts as before (raw) unless --units asks
    assert lines[0].split() == ["web1", "2.0G", "1024,3072", "4294967296"]


def _list(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *argv: str, unreachable: tuple[str, ...] = ()) -> tuple[int, list[str], str]:
    def submit(op: Any, *args: Any, **kwargs: Any) -> Any:
        return {"generations": [GEN], "unreachable": list(unreachable)}

    monkeypatch.setattr(cli, "submit_opcode", submit)
    code = gnt_backup.main(["list", *argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@pytest.mark.parametrize("units,row", [
    ("m", "web1|4096|1536|512|1024"),
    ("g", "web1|4.0|1.5|0.5|1.0"),
    ("h", "web1|4.0G|1.5G|512M|1.0G"),
])
def test_backup_list_units(monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str], units: str, row: str) -> None:
    code, lines, _err = _list(monkeypatch, capsys, "-g", "--no-headers", "--separator", "|",
                              "--units", units, "-o", "export,size,used,unique,shared")
    assert code == cli.EXIT_SUCCESS and lines == [row]


def test_backup_list_units_in_a_table(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _code, lines, _err = _list(monkeypatch, capsys, "-g", "--units", "m", "-o",
                               "export,size,used")
    assert [line.split() for line in lines] == [["Export", "Size", "Used"],
                                                ["web1", "4096", "1536"]]


def test_backup_list_verbose_names_the_silent_node(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = _list(monkeypatch, capsys, "-g", "--no-headers", "--separator", "|",
                             "-o", "node,export,size", unreachable=("node2",))
    assert code == cli.EXIT_FAILURE and lines == [f"node3|web1|{4096 * MIB}"]
    assert "node2" in err
    code, lines, err = _list(monkeypatch, capsys, "-g", "-v", "--no-headers",
                             "--separator", "|", "-o", "node,export,size",
                             unreachable=("node2",))
    assert code == cli.EXIT_FAILURE and "node2" in err
    assert lines == [f"node3|web1|{4096 * MIB}", "node2|(unavail)|(unavail)"]


def test_units_rejects_unknown_unit(monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _lines, err = _list(monkeypatch, capsys, "--units", "k")
    assert code == cli.EXIT_USAGE and "--units" in err


@pytest.mark.parametrize("argv,named", [
    (["--zero-free-space"], "--zero-free-space"),
    (["--zeroing-timeout-fixed", "60"], "--zeroing-timeout-fixed"),
    (["--zero-free-space", "--zeroing-timeout-per-mib", "0.5"],
     "--zero-free-space, --zeroing-timeout-per-mib"),
])
def test_zeroing_options_are_refused_before_any_job(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], named: str) -> None:
    submitted: list[Any] = []
    monkeypatch.setattr(cli, "submit_opcode", lambda op, *a, **k: submitted.append(op))
    assert gnt_backup.main(["export", "-n", "node3", *argv, "web1"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert f"{named}: not supported" in err and "sparsely" in err
    assert submitted == []


def test_zeroing_help_says_why() -> None:
    parser = cli.build_parser("gnt-backup", gnt_backup.COMMANDS)
    sub: Any = next(a for a in parser._actions if a.dest == "command")
    text = sub.choices["export"].format_help()
    assert "--zero-free-space" in text and "holes" in text


def test_readable_byte_counts_go_below_a_mib() -> None:
    assert cli.format_sizes(0, None, None, in_bytes=True) == "0B"
    assert cli.format_sizes(12 * 1024, "h", None, in_bytes=True) == "12K"
    assert cli.format_sizes(12 * 1024, "m", None, in_bytes=True) == "0"
    assert cli.format_sizes(3 * MIB, None, "|", in_bytes=True) == str(3 * MIB)
    assert cli.format_sizes([1024, None], "g", "|") == "1.0,"
