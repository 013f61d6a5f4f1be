"""The LUXI method table: one definition per method, client and docs agree with it."""

from __future__ import annotations

import inspect
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ganeti import errors, luxi
from ganeti.server import luxi_methods

DOC = Path(__file__).resolve().parents[2] / "doc" / "luxi.md"

# one valid value per argument name (the server accepts these)
SAMPLES: dict[str, Any] = {
    "ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}],
    "jobs": [[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]],
    "job_id": 7, "fields": ["id"], "prev_job_info": None, "prev_log_serial": None,
    "timeout": 1, "age": 10, "priority": 0, "job_ids": [1, 2], "what": "job",
    "qfilter": None, "nodes": ["node1"], "use_locking": False, "flag": True,
    "kill": False, "names": ["inst1"], "kind": "instance", "name": "inst1",
}


def _wire_names() -> set[str]:
    return {value for name, value in vars(luxi).items() if name.startswith("REQ_")}


def test_every_wire_name_has_exactly_one_method() -> None:
    assert set(luxi_methods.SPECS) == _wire_names()
    assert set(luxi_methods.SPECS) >= luxi.IDEMPOTENT_METHODS


class _Sent(Exception):
    pass


@pytest.mark.parametrize("name", sorted(luxi_methods.SPECS))
def test_client_method_matches_the_table(name: str) -> None:
    """Same arguments in the same order, sent under the wire name, accepted by the server."""
    spec = luxi_methods.SPECS[name]
    client = luxi.Client("/nonexistent")
    method = getattr(client, spec.client_attr)
    params = [p for p in inspect.signature(method).parameters.values()
              if p.kind is not p.KEYWORD_ONLY]
    assert [p.name for p in params] == [a.name for a in spec.args]
    sent: list[tuple[str, list[Any]]] = []

    def call_method(method: str, args: Sequence[Any], timeout: float | None = None) -> Any:
        sent.append((method, list(args)))
        raise _Sent

    client.call_method = call_method  # type: ignore[method-assign]
    with pytest.raises(_Sent):
        method(*[SAMPLES[a.name] for a in spec.args])
    [(wire, args)] = sent
    assert wire == name
    table = luxi_methods.build_method_table(luxi_methods.MasterBackend(queue=None))  # type: ignore[arg-type]
    luxi_methods.validate_args(name, table[name], args)


def test_arguments_are_checked_strictly_naming_the_argument() -> None:
    table = luxi_methods.build_method_table(luxi_methods.MasterBackend(queue=None))  # type: ignore[arg-type]
    bad: dict[str, list[list[Any]]] = {
        luxi.REQ_CANCEL_JOB: [[True], ["one"], [1.0], ["-1"], [1, "yes"]],
        luxi.REQ_SUBMIT_JOB: [[[]], [[1]], [{"OP_ID": "x"}]],
        luxi.REQ_WAIT_FOR_JOB_CHANGE: [[1, ["id"], None, None, math.inf],
                                       [1, ["id"], None, True, 1]],
        luxi.REQ_SET_DRAIN_FLAG: [[1], ["yes"]],
        luxi.REQ_QUERY: [["job", "id", None], ["job", ["id"], "x"]],
    }
    for name, cases in bad.items():
        for args in cases:
            with pytest.raises(errors.OpPrereqError) as info:
                luxi_methods.validate_args(name, table[name], args)
            assert info.value.ecode == errors.ECODE_INVAL
            assert "argument '" in str(info.value.args[0]), (name, args)
    with pytest.raises(errors.OpPrereqError, match="takes 1 to 2 argument"):
        luxi_methods.validate_args(luxi.REQ_CANCEL_JOB, table[luxi.REQ_CANCEL_JOB], [])
    with pytest.raises(errors.OpPrereqError, match="takes 1 to 2 argument"):
        luxi_methods.validate_args(luxi.REQ_CANCEL_JOB, table[luxi.REQ_CANCEL_JOB],
                                   [1, True, 3])
    with pytest.raises(errors.OpPrereqError, match="takes 1 argument"):
        luxi_methods.validate_args(luxi.REQ_ARCHIVE_JOB, table[luxi.REQ_ARCHIVE_JOB], [])


def test_optional_trailing_argument_gets_its_default() -> None:
    """CancelJob(job_id) of older clients and CancelJob(job_id, kill) of Ganeti 3.0."""
    table = luxi_methods.build_method_table(luxi_methods.MasterBackend(queue=None))  # type: ignore[arg-type]
    method = table[luxi.REQ_CANCEL_JOB]
    assert luxi_methods.validate_args(luxi.REQ_CANCEL_JOB, method, [3]) == [3, False]
    assert luxi_methods.validate_args(luxi.REQ_CANCEL_JOB, method, ["3", True]) == [3, True]


def test_job_ids_may_be_decimal_strings() -> None:
    table = luxi_methods.build_method_table(luxi_methods.MasterBackend(queue=None))  # type: ignore[arg-type]
    cases: list[tuple[str, list[Any], list[Any]]] = [
        (luxi.REQ_ARCHIVE_JOB, ["12"], [12]),
        (luxi.REQ_CHANGE_JOB_PRIORITY, ["12", 0], [12, 0]),
        (luxi.REQ_QUERY_JOBS, [["12", 13], ["id"]], [[12, 13], ["id"]]),
        (luxi.REQ_WAIT_FOR_JOB_CHANGE, ["12", ["id"], None, None, 1],
         [12, ["id"], None, None, 1]),
    ]
    for name, args, checked in cases:
        assert luxi_methods.validate_args(name, table[name], args) == checked


def test_handlers_get_the_validated_values() -> None:
    table = luxi_methods.build_method_table(luxi_methods.MasterBackend(queue=None))  # type: ignore[arg-type]
    method = table[luxi.REQ_AUTO_ARCHIVE_JOBS]
    assert luxi_methods.validate_args(luxi.REQ_AUTO_ARCHIVE_JOBS, method, [-1, 10]) == [-1, 10]


def test_doc_reference_is_current() -> None:
    """doc/luxi.md holds the reference `python -m ganeti.server.luxi_methods` prints."""
    out = subprocess.run([sys.executable, "-m", "ganeti.server.luxi_methods"], check=True,
                         capture_output=True, text=True).stdout
    assert out == luxi_methods.render_markdown()
    assert luxi_methods.render_markdown() in DOC.read_text()
