"""Ganeti's FillOpcode: an opcode's fields from a request body plus the path's and query's.

One rule for every resource that builds an opcode from a body: the body must
be a JSON object, Ganeti's older field names are renamed (both names at once
is refused), and fields that come from the path or the query string cannot be
given in the body.  Each refusal is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ganeti.rapi import http


def body_dict(body: Any) -> dict[str, Any]:
    """A copy of the body as a dict (no body: empty)."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise http.HttpBadRequest(f"body: must be a JSON object, not {type(body).__name__}")
    return dict(body)


def opcode_fields(body: Any, static: Mapping[str, Any],
                  rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The body's fields (renamed), then ``static`` ones, which the body may not give."""
    fields = body_dict(body)
    for old, new in (rename or {}).items():
        if old in fields and new in fields:
            raise http.HttpBadRequest(f"body: parameter '{old}' was renamed to '{new}',"
                                      " but both are specified")
        if old in fields:
            fields[new] = fields.pop(old)
    overwritten = sorted(set(fields) & set(static))
    if overwritten:
        raise http.HttpBadRequest(
            f"body: {', '.join(repr(f) for f in overwritten)} cannot be set in the body"
            " (given by the path or the query string)")
    fields.update(static)
    return fields
