"""The OpenAPI 3.1 document of the remote API, generated from ``routes.TABLE``.

Served at ``/openapi.json`` and committed as doc/rapi-openapi.json
(``python -m ganeti.rapi.openapi > doc/rapi-openapi.json``); a unit test
fails when the committed file and the table disagree.  Extensions (beyond
Ganeti's RAPI) carry ``x-ganeti-extension: true``; every operation names
its permission in ``x-ganeti-access``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from ganeti import constants
from ganeti.rapi import resources, routes

OPENAPI_VERSION = "3.1.0"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Ganeti's error body: the status, its reason phrase and the detail",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "explain": {"type": "string"},
    },
    "required": ["code", "message", "explain"],
}
# what every operation may answer, besides its own result
_COMMON_ERRORS = {
    "400": "Bad input: the explanation names the query parameter or body field",
    "401": "No or wrong credentials (HTTP Basic, realm \"Ganeti Remote API\")",
    "403": "The user lacks the permission the operation needs",
    "404": "No such resource (or object)",
}
_KIND_SCHEMAS: dict[type, dict[str, Any]] = {
    bool: {"type": "boolean", "description": "0 or 1"},
    int: {"type": "integer"},
    str: {"type": "string"},
    list: {"type": "array", "items": {"type": "string"}},
}
_REF = re.compile(r"^#/\$defs/(.+)$")


def _operation_id(method: str, template: str) -> str:
    words = re.sub(r"[{}]", "", template).strip("/").replace("-", "_").split("/")
    return "_".join([method.lower(), *[w for w in words if w]]) or f"{method.lower()}_root"


def _hoist(schema: Any, components: dict[str, Any]) -> Any:
    """Move pydantic's ``$defs`` into components and point the ``$ref``s there."""
    if isinstance(schema, Mapping):
        out = {}
        for key, value in schema.items():
            if key == "$defs":
                for name, sub in value.items():
                    components.setdefault(name, _hoist(sub, components))
                continue
            if key == "$ref" and isinstance(value, str) and _REF.match(value):
                out[key] = "#/components/schemas/" + _REF.sub(r"\1", value)
                continue
            out[key] = _hoist(value, components)
        return out
    if isinstance(schema, list):
        return [_hoist(item, components) for item in schema]
    return schema


def _parameters(entry: routes.Route, op: routes.Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": var, "in": "path", "required": True, "schema": {"type": "string"}}
        for var in entry.variables]
    for param in op.params:
        schema = dict(_KIND_SCHEMAS.get(param.kind, {"type": "string"}))
        if param.default is not None:
            schema["default"] = param.default
        spec: dict[str, Any] = {"name": param.name, "in": "query", "required": False,
                                "description": param.description, "schema": schema}
        if param.kind is list:
            spec.update(style="form", explode=True)
        params.append(spec)
    return params


def _operation(entry: routes.Route, op: routes.Operation,
               components: dict[str, Any]) -> dict[str, Any]:
    result_schema = _hoist(dict(op.result_schema), components) \
        if op.result_schema is not None else {}
    responses: dict[str, Any] = {
        "200": {"description": op.result,
                "content": {op.result_type: {"schema": result_schema}}}}
    error = {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}
    for code, text in _COMMON_ERRORS.items():
        if code == "403" and op.access == routes.READ:
            continue
        responses[code] = {"description": text, **error}
    spec: dict[str, Any] = {
        "operationId": _operation_id(op.method, entry.template),
        "summary": op.summary,
        "tags": [entry.template.strip("/").split("/")[1 if entry.template.startswith("/2/")
                                                     else 0] or "general"],
        "parameters": _parameters(entry, op),
        "responses": responses,
        "x-ganeti-access": op.access,
        "x-ganeti-extension": op.extension,
    }
    if op.description:
        spec["description"] = op.description
    if not spec["parameters"]:
        del spec["parameters"]
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body.required,
            "description": op.body.description,
            "content": {"application/json": {
                "schema": _hoist(op.body.json_schema(), components)}}}
    return spec


def build(table: Mapping[str, routes.Route] | None = None) -> dict[str, Any]:
    """The document for ``table`` (default: the routes registered so far)."""
    components: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, Any] = {}
    table = routes.TABLE if table is None else table
    for template in sorted(table):
        entry = table[template]
        paths[template] = {method.lower(): _operation(entry, op, components)
                           for method, op in sorted(entry.operations.items())}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Ganeti remote API (RAPI)",
            "version": str(constants.RAPI_VERSION),
            "description": "Ganeti's REST API version 2, and extensions marked"
                           " x-ganeti-extension (see doc/rapi.md).",
        },
        "servers": [{"url": "https://{host}:{port}",
                     "variables": {"host": {"default": "localhost"},
                                   "port": {"default": str(constants.DEFAULT_RAPI_PORT)}}}],
        "security": [{"basicAuth": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
            "schemas": dict(sorted(components.items())),
        },
    }


def render() -> str:
    """The committed doc/rapi-openapi.json: every resource module loaded."""
    return json.dumps(build(resources.load_all()), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
