"""Queries: `/2/query/{resource}` (fields, filters) and `/2/query/{resource}/fields`.

Ganeti's query2 over RAPI: the answer is masterd's Query answer as it is
(`{"fields": [definitions], "data": [[[status, value], ...], ...]}`; an
unknown field comes back with kind `unknown`, as in Ganeti).  Filters are
Ganeti's filter lists; masterd checks them (`ganeti.query`) before looking
at any item, and a bad one is a 400 naming the body field that held it.  The
resources are the ones masterd registers (`ganeti.query_resources`); an
unknown one is a 404.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ganeti import errors
from ganeti.rapi import http, routes

_REASON = routes.Param("reason", str, "Why the query is made (accepted, as from Ganeti's"
                       " client; queries are not recorded)")
_FIELDS = routes.Param("fields", str, "Comma-separated field names")


def split_fields(text: str) -> list[str]:
    """Field names as Ganeti splits a `fields` parameter (commas, blanks stripped)."""
    return [name.strip() for name in text.split(",")]


def _query(req: routes.Request, fields: list[str], qfilter: Any, where: str) -> Any:
    try:
        with req.client() as cl:
            return cl.query(req.args["resource"], fields, qfilter)
    except errors.QueryFilterParseError as err:
        raise http.HttpBadRequest(f"{where}: {err.args[0] if err.args else err}") from None
    except errors.OpPrereqError as err:
        # the types are checked here and the resource is not unknown (NOENT, a 404):
        # what masterd refuses as wrong input is the filter (e.g. an unknown field in it)
        if err.ecode != errors.ECODE_INVAL:
            raise
        raise http.HttpBadRequest(f"{where}: {err.args[0]}") from None


@routes.route("/2/query/{resource}", "GET", access=routes.READ,
              params=(_FIELDS, _REASON), result="{fields, data}")
def query_get(req: routes.Request) -> Any:
    """Query a resource (instance, node, job, export, group, network, lock), no filter.

    `fields` (required) names the fields; each row holds a `[status,
    value]` pair per field.  Use PUT to filter.
    """
    if req.params["fields"] is None:
        raise http.HttpBadRequest("Missing 'fields' query argument")
    return _query(req, split_fields(req.params["fields"]), None, "fields")


class QueryBody(BaseModel):
    """The body of PUT /2/query/{resource}, as Ganeti's client sends it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    fields: list[str] | None = Field(
        None, description="Field names (default: the 'fields' query parameter)")
    qfilter: list[Any] | None = Field(None, description="A filter list, or null: all items")
    filter: list[Any] | None = Field(
        None, description="The same filter under its pre-2.7 name (Ganeti's client sends both)")


@routes.route("/2/query/{resource}", "PUT", access=routes.READ, params=(_FIELDS, _REASON),
              body=routes.Body(QueryBody, description="Fields and an optional filter"),
              result="{fields, data}")
def query_put(req: routes.Request) -> Any:
    """Query a resource with a filter: body `{"fields": [...], "qfilter": [...]}`.

    A filter is Ganeti's list form, e.g. `["&", ["=~", "name", "^web"],
    ["==", "status", "running"]]`; a bad one (unknown operator or field,
    value of the wrong type, bad regexp, too deep) is a 400 naming it, and
    no item is looked at.  `filter` is accepted as the old name of
    `qfilter`; given both, they must be the same.
    """
    assert isinstance(req.data, QueryBody)
    body = req.data
    if body.fields is not None:
        fields = body.fields
    elif req.params["fields"] is not None:
        fields = split_fields(req.params["fields"])
    else:
        raise http.HttpBadRequest("body.fields: missing (nor is there a 'fields' query"
                                  " argument)")
    where, qfilter = "body.qfilter", body.qfilter
    if body.filter is not None:
        if qfilter is None:
            where, qfilter = "body.filter", body.filter
        elif body.filter != qfilter:
            raise http.HttpBadRequest("body.filter: differs from body.qfilter (give one,"
                                      " or the same filter twice)")
    return _query(req, fields, qfilter, where)


@routes.route("/2/query/{resource}/fields", "GET", access=routes.READ,
              params=(_FIELDS, _REASON), result="{fields}: field definitions")
def query_fields(req: routes.Request) -> Any:
    """The definitions (name, title, kind, doc) of a resource's fields.

    All of them without `fields`; an unknown name asked for comes back with
    kind `unknown`.
    """
    text = req.params["fields"]
    fields = split_fields(text) if text is not None else None
    with req.client() as cl:
        return cl.query_fields(req.args["resource"], fields)
