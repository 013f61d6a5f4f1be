"""gnt-backup list -g: the size columns (human units in a table, bytes for scripts)."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti import cli
from ganeti.client import gnt_backup

MIB = 1 << 20
GEN = {"node": "node3", "instance": "web1", "generation": "20251201T031500Z",
       "timestamp": 1764558900.0, "size": 4096 * MIB + 600, "used": 1126 * MIB,
       "unique": 41 * MIB, "shared": 1085 * MIB, "newest": True, "protected": False,
       "note": "", "meta_problem": None}


def _list(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
          *argv: str) -> list[str]:
    """Run ``gnt-backup list`` against a canned OpBackupListGenerations answer."""
    def submit(op: Any, *args: Any, **kwargs: Any) -> Any:
        return {"generations": [GEN], "unreachable": []}

    monkeypatch.setattr(cli, "submit_opcode", submit)
    opts = cli.parse_command_line("gnt-backup", gnt_backup.COMMANDS, ["list", *argv])
    assert gnt_backup.list_exports(opts) == cli.EXIT_SUCCESS
    return capsys.readouterr().out.splitlines()


def test_default_generations_table_shows_the_usage_columns_in_human_units(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    header, row = _list(monkeypatch, capsys, "-g")
    assert header.split() == ["Node", "Export", "Generation", "Timestamp", "Size", "Used",
                              "Unique", "Shared", "Verified", "Protected", "Note"]
    assert row.split() == ["node3", "web1", "20251201T031500Z", "2025-12-01", "03:15:00Z",
                           "4.0G", "1.1G", "41M", "1.1G", "-", "N"]


def test_separator_gives_scripts_plain_bytes(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _list(monkeypatch, capsys, "-g", "--no-headers", "--separator", "|",
                  "-o", "export,size,used,unique,shared")
    assert lines == [f"web1|{4096 * MIB + 600}|{1126 * MIB}|{41 * MIB}|{1085 * MIB}"]


def test_list_fields_documents_unique_and_shared(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    opts = cli.parse_command_line("gnt-backup", gnt_backup.COMMANDS,
                                  ["list-fields", "--separator", "|"])
    assert opts.func(opts) == cli.EXIT_SUCCESS
    fields = {line.split("|")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "unique" in fields and "shared" in fields and "compressed" in fields["used"]
