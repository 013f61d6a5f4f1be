"""The route table's request pipeline (routes.dispatch), without HTTP.

A stub backend records what a handler would submit, so "nothing is
submitted" is checked directly for every refused request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from ganeti import errors
from ganeti.rapi import http, routes

READER = routes.User("reader")
WRITER = routes.User("admin", write=True)


class Backend:
    def __init__(self) -> None:
        self.submitted: list[Any] = []

    def client(self) -> Any:
        raise AssertionError("not used by the test routes")


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    size: int
    name: str = "x"


@pytest.fixture
def table() -> Iterator[Backend]:
    """Test routes, removed again so the real table (OpenAPI, docs) stays as it is."""
    backend = Backend()
    before = dict(routes.TABLE)

    @routes.route("/2/test-things/{thing_name}", "GET", access=routes.READ,
                  result="the thing", params=(routes.Param("bulk", bool, "All", False),
                                              routes.Param("count", int, "How many", 1),
                                              routes.Param("field", list, "Fields")))
    def get_thing(req: routes.Request) -> Any:
        """Get a thing (test)."""
        return {"name": req.args["thing_name"], **req.params}

    @routes.route("/2/test-things/{thing_name}", "PUT", access=routes.WRITE,
                  result="a job id", body=routes.Body(Thing))
    def put_thing(req: routes.Request) -> Any:
        """Change a thing (test)."""
        assert isinstance(req.data, Thing)
        backend.submitted.append((req.args, req.data, req.reason_trail()))
        return 17

    @routes.route("/2/test-things/{thing_name}", "DELETE", access=routes.WRITE,
                  result="nothing")
    def delete_thing(req: routes.Request) -> Any:
        """Remove a thing (test)."""
        raise errors.OpPrereqError(f"No thing {req.args['thing_name']}", errors.ECODE_NOENT)

    try:
        yield backend
    finally:
        routes.TABLE.clear()
        routes.TABLE.update(before)


def _call(backend: Backend, method: str, path: str, query: str = "", body: bytes = b"",
          user: routes.User | None = WRITER, content_type: str | None = None
          ) -> tuple[int, Any, dict[str, str]]:
    answer = routes.dispatch(backend, method, path, query, body, user,
                             content_type=content_type)
    return answer.status, json.loads(answer.body), answer.headers


def test_order_of_checks(table: Backend) -> None:
    path = "/2/test-things/a"
    # anonymous: 401 even for what does not exist, so nothing is revealed
    assert _call(table, "GET", "/2/nowhere", user=None)[0] == 401
    status, _body, headers = _call(table, "PUT", path, body=b"{", user=None)
    assert (status, headers) == (401, routes.AUTHENTICATE)
    assert _call(table, "GET", "/2/nowhere")[0] == 404
    status, _body, headers = _call(table, "POST", path, user=READER)
    assert (status, headers["Allow"]) == (405, "DELETE, GET, PUT")
    assert _call(table, "PUT", path, body=b"{", user=READER)[0] == 403
    assert _call(table, "PUT", path, body=b"{", content_type="text/plain")[0] == 415
    assert _call(table, "PUT", path, query="nope=1", body=b"{",
                 content_type="application/json")[0] == 400
    assert table.submitted == []


def test_query_parameters_are_typed_and_unknown_ones_refused(table: Backend) -> None:
    status, body, _ = _call(table, "GET", "/2/test-things/a%2Fb",
                            "bulk=1&count=3&field=a&field=b")
    assert status == 200
    assert body == {"name": "a/b", "bulk": True, "count": 3, "field": ["a", "b"]}
    assert _call(table, "GET", "/2/test-things/a")[1] == {
        "name": "a", "bulk": False, "count": 1, "field": None}
    for query, named in (("bulk=2", "bulk"), ("count=x", "count"), ("count=1&count=2",
                                                                    "count"),
                         ("other=1", "other")):
        status, body, _ = _call(table, "GET", "/2/test-things/a", query)
        assert status == 400 and named in body["explain"], query


def test_bodies_are_validated_naming_the_field(table: Backend) -> None:
    path = "/2/test-things/a"
    for raw, named in ((b"", "needs a JSON body"), (b"{bad", "not valid JSON"),
                       (b'{"size": "3"}', "body.size"), (b'{"size": 1, "extra": 2}',
                                                         "body.extra"),
                       (b"[" * 100_000, "not valid JSON")):
        status, body, _ = _call(table, "PUT", path, body=raw)
        assert status == 400, raw[:20]
        assert named in body["explain"], (raw[:20], body)
        assert body["message"] == "Bad Request"
    assert table.submitted == []
    status, body, _ = _call(table, "PUT", path, "reason=because", b'{"size": 2}',
                            content_type="application/json; charset=utf-8")
    assert (status, body) == (200, 17)
    ((args, data, trail),) = table.submitted
    assert args == {"thing_name": "a"} and data == Thing(size=2)
    assert [entry[:2] for entry in trail] == [("gnt:user", "because"),
                                              ("gnt:library:rlib2:put_thing", "")]


def test_ganeti_errors_become_http_errors(table: Backend) -> None:
    status, body, _ = _call(table, "DELETE", "/2/test-things/zz")
    assert (status, body) == (404, {"code": 404, "message": "Not Found",
                                    "explain": "No thing zz"})
    assert http.from_ganeti_error(errors.NoMasterError("down")).code == 502
    assert http.from_ganeti_error(
        errors.OpPrereqError("busy", errors.ECODE_STATE)).code == 409


def test_a_route_needs_a_docstring_and_is_defined_once(table: Backend) -> None:
    def documented(req: routes.Request) -> Any:
        """Documented (test)."""

    with pytest.raises(errors.ProgrammerError, match="twice"):
        routes.route("/2/test-things/{thing_name}", "GET", access=routes.READ,
                     result="x")(documented)
    with pytest.raises(errors.ProgrammerError, match="docstring"):
        routes.route("/2/test-undocumented", "GET", access=routes.READ,
                     result="x")(lambda req: None)
    with pytest.raises(errors.ProgrammerError, match="template"):
        routes.route("/2/bad/", "GET", access=routes.READ, result="x")(documented)
    with pytest.raises(errors.ProgrammerError):
        routes.route("/2/x", "PATCH", access=routes.READ, result="x")
    # a refused handler leaves nothing behind (an empty route would break the docs)
    assert "/2/test-undocumented" not in routes.TABLE
    assert "/2/bad/" not in routes.TABLE


def test_a_literal_segment_wins_over_a_variable(table: Backend) -> None:
    """Registered after /2/test-things/{thing_name}, the literal route still gets its
    path: the modules' order must not decide."""
    @routes.route("/2/test-things/special", "GET", access=routes.READ, result="x")
    def special(req: routes.Request) -> Any:
        """The special thing (test)."""
        return "special"

    assert _call(table, "GET", "/2/test-things/special")[1] == "special"
    assert _call(table, "GET", "/2/test-things/other")[1]["name"] == "other"
