"""The query registry and filters, directly and through Query/QueryFields over LUXI."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.luxi_fakes import FakeContext, FakeLockManager, FakeQueue, running_server

from ganeti import constants, errors, luxi, opcodes, query, query_resources

WAIT = 30.0


@pytest.fixture(autouse=True)
def _resources() -> None:
    query_resources.register_all()


def _source_with_jobs(n: int) -> tuple[SimpleNamespace, FakeQueue]:
    queue = FakeQueue()
    for i in range(n):
        queue.submit_job([opcodes.OpTestDelay.create(duration=i)])
    return SimpleNamespace(queue=queue, context=FakeContext()), queue


def test_job_query_returns_status_value_pairs() -> None:
    source, queue = _source_with_jobs(3)
    queue.update(2, constants.OP_STATUS_RUNNING)
    result = query.query("job", ["id", "status", "summary", "bogus"], None, source)
    assert [f["name"] for f in result["fields"]] == ["id", "status", "summary", "bogus"]
    assert result["fields"][0]["kind"] == query.QFT_NUMBER
    assert result["fields"][3]["kind"] == query.QFT_UNKNOWN
    assert result["data"][1] == [[0, 2], [0, "running"], [0, ["TEST_DELAY(1.0)"]],
                                 [query.RS_UNKNOWN, None]]
    assert len(result["data"]) == 3


def test_job_missing_timestamps_are_nodata() -> None:
    source, _ = _source_with_jobs(1)
    result = query.query("job", ["start_ts"], None, source)
    assert result["data"] == [[[query.RS_NODATA, None]]]


@pytest.mark.parametrize("qfilter, expected", [
    (["=", "id", 2], [2]),
    (["!", ["=", "id", 2]], [1, 3, 4]),
    (["|", ["=", "id", 1], ["=", "id", 4]], [1, 4]),
    (["&", ["=", "status", "queued"], [">", "id", 2]], [3, 4]),
    (["=~", "status", "^run"], [2]),
    (["!=", "status", "queued"], [2]),
    (["<=", "id", 2], [1, 2]),
    (["=[]", "summary", "TEST_DELAY(3.0)"], [4]),
    (["?", "start_ts"], []),
])
def test_filters(qfilter: list[Any], expected: list[int]) -> None:
    source, queue = _source_with_jobs(4)
    queue.update(2, constants.OP_STATUS_RUNNING)
    result = query.query("job", ["id"], qfilter, source)
    assert [row[0][1] for row in result["data"]] == expected


@pytest.mark.parametrize("qfilter, cls", [
    ("id", errors.QueryFilterParseError),
    ([], errors.QueryFilterParseError),
    (["~~", "id", 1], errors.QueryFilterParseError),
    (["=", "id"], errors.QueryFilterParseError),
    (["=~", "status", "("], errors.QueryFilterParseError),
    (["!", ["=", "id", 1], ["=", "id", 2]], errors.QueryFilterParseError),
    (["=", "nosuchfield", 1], errors.OpPrereqError),
])
def test_bad_filters(qfilter: Any, cls: type[Exception]) -> None:
    source, _ = _source_with_jobs(1)
    with pytest.raises(cls):
        query.query("job", ["id"], qfilter, source)


def test_unknown_resource() -> None:
    with pytest.raises(errors.OpPrereqError, match="not queryable"):
        query.query("martians", ["id"])


def test_register_new_resource_and_status_markers() -> None:
    def offline_getter(_src: Any, item: dict[str, Any]) -> Any:
        return query.OFFLINE if item["off"] else item["name"].upper()

    query.register("widget_test", [
        query.FieldDef("name", "Name", query.QFT_TEXT, "Widget name", query.item_getter("name")),
        query.FieldDef("loud", "Loud", query.QFT_TEXT, "Upper-case name", offline_getter),
        query.FieldDef("missing", "Missing", query.QFT_NUMBER, "Never there",
                       query.item_getter("missing")),
    ], lambda _src: [{"name": "a", "off": False}, {"name": "b", "off": True}])
    assert "widget_test" in query.resources()
    result = query.query("widget_test", ["name", "loud", "missing"])
    assert result["data"] == [
        [[0, "a"], [0, "A"], [query.RS_UNAVAIL, None]],
        [[0, "b"], [query.RS_OFFLINE, None], [query.RS_UNAVAIL, None]],
    ]
    with pytest.raises(errors.ProgrammerError):
        query.register("widget_test", [
            query.FieldDef("x", "X", query.QFT_TEXT, "", query.item_getter("x")),
            query.FieldDef("x", "X", query.QFT_TEXT, "", query.item_getter("x")),
        ], lambda _src: [])
    with pytest.raises(errors.ProgrammerError):
        query.FieldDef("x", "X", "colour", "", query.item_getter("x"))


def test_query_fields() -> None:
    all_fields = query.query_fields("job")["fields"]
    assert {f["name"] for f in all_fields} >= {"id", "status", "summary", "oplog"}
    assert all(set(f) == {"name", "title", "kind", "doc"} for f in all_fields)
    some = query.query_fields("lock", ["name", "nope"])["fields"]
    assert [(f["name"], f["kind"]) for f in some] == [("name", "text"), ("nope", "unknown")]


def test_query_over_luxi(tmp_path: Path) -> None:
    glm = FakeLockManager([("node/b", None, None, None),
                           ("cluster/BGL", "exclusive", ["job/1"], [["shared", ["job/2"]]])])
    queue = FakeQueue()
    address = tmp_path / "sock"
    with running_server(address, queue, FakeContext(glm)), \
            luxi.Client(str(address), timeout=WAIT) as cl:
        cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        locks = cl.query("lock", ["name", "mode", "owner", "pending"])
        assert [row[0][1] for row in locks["data"]] == ["cluster/BGL", "node/b"]
        assert locks["data"][0][2] == [0, ["job/1"]]
        jobs = cl.query("job", ["id", "status"], ["=", "status", "queued"])
        assert jobs["data"] == [[[0, 1], [0, "queued"]]]
        assert cl.query_fields("job", ["id"])["fields"][0]["title"] == "ID"
        with pytest.raises(errors.OpPrereqError):
            cl.query("job", ["id"], ["=", "bogus", 1])
        with pytest.raises(errors.QueryFilterParseError):
            cl.query("job", ["id"], ["bogus-op"])


def test_job_query_fetches_only_needed_fields() -> None:
    source, queue = _source_with_jobs(2)
    query.query("job", ["id", "bogus"], ["=", "status", "queued"], source)
    assert queue.queried_fields[-1] == ["id", "status"]


def test_filter_fields() -> None:
    flt = ["&", ["=", "id", 1], ["!", ["=~", "status", "x"]], ["|", ["?", "end_ts"]]]
    assert query.filter_fields(flt) == {"id", "status", "end_ts"}
    assert query.filter_fields(None) == frozenset()
