"""list-fields of every list command: Name, Type, Title, Description, [FIELD...]."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti import cli, query, query_resources
from ganeti.client import (
    gnt_backup,
    gnt_backup_schedule,
    gnt_debug,
    gnt_instance,
    gnt_job,
    gnt_node,
)


class _FieldsClient:
    """A LUXI client answering QueryFields from the real field tables."""

    def __enter__(self) -> _FieldsClient:
        return self

    def __exit__(self, *_exc: Any) -> None:
        pass

    def query_fields(self, what: str, fields: list[str] | None = None) -> dict[str, Any]:
        return query.query_fields(what, fields)


@pytest.fixture()
def fields_client(monkeypatch: pytest.MonkeyPatch) -> None:
    query_resources.register_all()
    monkeypatch.setattr(cli, "get_client", lambda *a, **k: _FieldsClient())


def _run(commands: dict[str, cli.Command], prog: str, *argv: str) -> int:
    opts = cli.parse_command_line(prog, commands, ["list-fields", *argv])
    return int(opts.func(opts))


@pytest.mark.parametrize("prog,commands", [
    ("gnt-backup", gnt_backup.COMMANDS), ("gnt-instance", gnt_instance.COMMANDS),
    ("gnt-node", gnt_node.COMMANDS), ("gnt-job", gnt_job.COMMANDS),
    ("gnt-backup schedule", gnt_backup_schedule.COMMANDS)])
def test_every_list_command_has_list_fields(prog: str, commands: dict[str, cli.Command]
                                            ) -> None:
    assert "list" in commands and "list-fields" in commands, prog
    parser = cli.build_parser(prog, commands)
    opts = parser.parse_args(["list-fields", "--no-headers", "--separator", "|", "a", "b"])
    assert opts.fields == ["a", "b"] and opts.no_headers and opts.separator == "|"


def test_no_client_list_command_lacks_list_fields() -> None:
    # gnt-debug's list is 'locks' (no list-fields in Ganeti either)
    for module in (gnt_backup, gnt_instance, gnt_node, gnt_job, gnt_backup_schedule,
                   gnt_debug):
        names = set(module.COMMANDS)
        assert "list" not in names or "list-fields" in names, module.__name__


def test_backup_list_fields_has_a_type_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(gnt_backup.COMMANDS, "gnt-backup") == cli.EXIT_SUCCESS
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Name", "Type", "Title", "Description"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["node"][1] == "Text" and rows["timestamp"][1] == "Timestamp"
    assert rows["size"][1:3] == ["Storage", "size"] and rows["newest"][1] == "Boolean"
    # one row per field 'gnt-backup list -o' accepts
    assert set(rows) == {f[0] for f in gnt_backup.LIST_FIELDS}


def test_backup_list_fields_only_the_named_ones_in_their_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(gnt_backup.COMMANDS, "gnt-backup", "--no-headers", "--separator", "|",
                "used", "node") == cli.EXIT_SUCCESS
    out = capsys.readouterr().out.splitlines()
    assert [line.split("|")[:3] for line in out] == [["used", "Storage size", "Used"],
                                                      ["node", "Text", "Node"]]


def test_unknown_field_is_named_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(gnt_backup.COMMANDS, "gnt-backup", "--no-headers", "node",
                "colour") == cli.EXIT_FAILURE
    captured = capsys.readouterr()
    assert "colour" in captured.err and "Unknown field" in captured.err
    assert captured.out.split() == ["node", "Text", "Node", "Node", "holding", "the", "export"]


def test_schedule_list_fields_types(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(gnt_backup_schedule.COMMANDS, "gnt-backup schedule", "--separator", "|",
                "enabled", "cron") == cli.EXIT_SUCCESS
    assert capsys.readouterr().out.splitlines() == [
        "Name|Type|Title|Description",
        "enabled|Boolean|Enabled|Y: the runner runs it when due",
        "cron|Text|Cron|Cron expression or @-shortcut"]


@pytest.mark.usefixtures("fields_client")
@pytest.mark.parametrize("prog,commands,field,kind", [
    ("gnt-instance", gnt_instance.COMMANDS, "oper_ram", "Storage size"),
    ("gnt-instance", gnt_instance.COMMANDS, "ctime", "Timestamp"),
    ("gnt-node", gnt_node.COMMANDS, "pinst_cnt", "Number"),
    ("gnt-job", gnt_job.COMMANDS, "status", "Text")])
def test_master_resources_show_the_query_kind(
        prog: str, commands: dict[str, cli.Command], field: str, kind: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(commands, prog, "--separator", "|", field) == cli.EXIT_SUCCESS
    header, row = capsys.readouterr().out.splitlines()
    assert header == "Name|Type|Title|Description"
    assert row.split("|")[:2] == [field, kind]


@pytest.mark.usefixtures("fields_client")
def test_master_resource_all_fields_and_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(gnt_instance.COMMANDS, "gnt-instance", "--no-headers") == cli.EXIT_SUCCESS
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert {"name", "status", "disk.sizes", "custom_beparams"} <= set(names)
    assert _run(gnt_node.COMMANDS, "gnt-node", "name", "nosuch") == cli.EXIT_FAILURE
    captured = capsys.readouterr()
    assert "nosuch" in captured.err and "nosuch" not in captured.out
