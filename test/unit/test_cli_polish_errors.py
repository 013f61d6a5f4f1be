"""The CLI's one rule for misses (unknown fields, objects that are not there) and the
-o parsing, on generic_list / query_items with a client answering from a real query
engine, and on gnt-job against a LUXI server with an in-memory queue."""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.luxi_fakes import FakeContext, FakeLockManager, FakeQueue, running_server

from ganeti import cli, errors, opcodes, pathutils, query
from ganeti.client import gnt_job

_NODES = [{"name": "node1.example.com", "pip": "127.0.0.1"},
          {"name": "node2.example.com", "pip": "127.0.0.2"}]
_RESOURCE = query.Resource("node", {
    "name": query.FieldDef("name", "Node", query.QFT_TEXT, "", query.item_getter("name")),
    "pip": query.FieldDef("pip", "PrimaryIP", query.QFT_TEXT, "", query.item_getter("pip")),
}, lambda _source: _NODES)


class NodeClient:
    """Answers Query("node") as the master does (same filter compiler)."""

    def __init__(self) -> None:
        self.queries: list[list[str]] = []

    def query(self, resource: str, fields: Sequence[str], qfilter: Any) -> dict[str, Any]:
        assert resource == "node"
        self.queries.append(list(fields))
        keep = query.compile_filter(qfilter, _RESOURCE) if qfilter is not None else None
        defs = [_RESOURCE.fields.get(f) for f in fields]
        rows = [[[query.RS_NORMAL, d.getter(None, item)] if d else [query.RS_UNKNOWN, None]
                 for d in defs]
                for item in _NODES if keep is None or keep(None, item)]
        return {"fields": [d.to_dict() if d else {"name": f, "title": f, "doc": "",
                                                  "kind": query.QFT_UNKNOWN}
                           for f, d in zip(fields, defs, strict=True)],
                "data": rows}


def _opts(**kwargs: Any) -> argparse.Namespace:
    return argparse.Namespace(separator=None, no_headers=False, units=None, **kwargs)


def _list(names: list[str], fields: list[str], force_filter: bool = False
          ) -> tuple[Any, str]:
    cl: Any = NodeClient()
    opts = _opts(force_filter=force_filter)
    out = io.StringIO()
    code = cli.generic_list(cl, "node", fields, cli.list_filter(opts, names), opts,
                            out=out)
    assert code == cli.EXIT_SUCCESS
    return cl, out.getvalue()


def test_list_names_found_keeps_the_table_and_its_columns() -> None:
    cl, out = _list(["node2"], ["pip"])
    # the name column was only asked for to check the names; it is not shown
    assert out == "PrimaryIP\n127.0.0.2\n"
    assert cl.queries == [["pip", "name"]]


@pytest.mark.parametrize("names, missing", [
    (["nosuch"], "'nosuch'"),
    (["node1", "nosuch", "other"], "'nosuch', 'other'"),
    (["name == \"nosuch\""], "'nosuch'"),  # a filter naming one item names it
])
def test_list_missing_names_fail_before_printing(names: list[str], missing: str) -> None:
    with pytest.raises(errors.OpPrereqError) as info:
        _list(names, ["name", "pip"])
    assert str(info.value.args[0]) == f"Node {missing} not known"
    assert info.value.ecode == errors.ECODE_NOENT


@pytest.mark.parametrize("names", [["zz*"], ["pip == \"127.0.0.9\""], []])
def test_globs_and_conditions_select_they_do_not_name(names: list[str]) -> None:
    _cl, out = _list(names, ["name"])
    assert out.splitlines()[0] == "Node"


def test_unknown_fields_fail_before_printing() -> None:
    cl: Any = NodeClient()
    out = io.StringIO()
    with pytest.raises(errors.OpPrereqError,
                       match="Unknown output fields selected: colour, size"):
        cli.generic_list(cl, "node", ["name", "colour", "size"], None, _opts(),
                         out=out)
    assert out.getvalue() == ""


def test_query_items_one_rule_for_info_commands() -> None:
    cl: Any = NodeClient()
    rows = cli.query_items(cl, "node", ["pip"], ["node2", "node1"])
    assert [r["pip"] for r in rows] == ["127.0.0.2", "127.0.0.1"]  # in the order asked
    assert len(cli.query_items(cl, "node", ["pip"], [])) == 2
    with pytest.raises(errors.OpPrereqError, match="Node 'nosuch' not known"):
        cli.query_items(cl, "node", ["pip"], ["node1", "nosuch"])
    with pytest.raises(errors.OpPrereqError, match="Unknown output fields selected: x"):
        cli.query_items(cl, "node", ["x"], ["node1"])


@pytest.mark.parametrize("selected, fields", [
    (None, ["a", "b"]),
    ("+c", ["a", "b", "c"]),
    ("+b,c", ["a", "b", "c"]),  # list -g -o +generation: no second column
    ("c,c,a", ["c", "a"]),
    ("c,,d", ["c", "d"]),
    ("+", ["a", "b"]),
])
def test_parse_fields(selected: str | None, fields: list[str]) -> None:
    assert cli.parse_fields(selected, ("a", "b")) == fields


@pytest.mark.parametrize("selected", ["", ",", " , "])
def test_parse_fields_refuses_no_fields(selected: str) -> None:
    with pytest.raises(errors.OpPrereqError, match="-o/--output: no fields given"):
        cli.parse_fields(selected, ("a", "b"))


def test_check_fields_names_the_list_fields_command() -> None:
    cli.check_fields(["a"], ["a", "b"])
    with pytest.raises(errors.OpPrereqError,
                       match=r"Unknown output fields selected: z \(see 'x list-fields'\)"):
        cli.check_fields(["a", "z"], ["a"], "x list-fields")


# --- gnt-job: one message for a missing job, whatever the command ----------------------


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeQueue]:
    monkeypatch.setenv(pathutils.ROOT_ENV, str(tmp_path))
    fake = FakeQueue()
    with running_server(pathutils.current().master_socket, fake,
                        FakeContext(FakeLockManager([]))):
        yield fake


@pytest.mark.parametrize("argv", [
    ["list", "9999"], ["list", "-o", "status", "9999"], ["info", "9999"],
    ["watch", "9999"], ["cancel", "9999"], ["archive", "9999"],
    ["change-priority", "--priority", "low", "9999"],
])
def test_missing_job_one_message_nonzero_exit(queue: FakeQueue, argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    queue.submit_job([opcodes.OpTestDelay.create(duration=0)])
    assert gnt_job.main(argv) == cli.EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ("Failure: prerequisites not met for this operation:"
                            " Job '9999' not known (unknown_entity)\n")


def test_job_list_existing_id_and_status_selection(queue: FakeQueue,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    queue.submit_job([opcodes.OpTestDelay.create(duration=0)])
    assert gnt_job.main(["list", "--no-headers", "-o", "status", "1"]) == 0
    assert capsys.readouterr().out == "queued\n"
    # a status option selects: an existing job that is not running is no miss
    assert gnt_job.main(["list", "--no-headers", "--running", "1"]) == 0
    assert capsys.readouterr().out == ""
