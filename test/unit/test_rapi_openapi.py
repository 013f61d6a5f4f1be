"""The OpenAPI document: generated from the route table, valid OpenAPI 3.1, committed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from openapi_spec_validator import validate

from ganeti.rapi import openapi, resources, routes

DOC = Path(__file__).resolve().parents[2] / "doc" / "rapi-openapi.json"


def test_committed_document_is_current() -> None:
    """doc/rapi-openapi.json is exactly what the table gives; regenerate with
    ``python -m ganeti.rapi.openapi > doc/rapi-openapi.json``."""
    assert DOC.read_text() == openapi.render()


def test_document_is_valid_openapi_3_1() -> None:
    document = openapi.build(resources.load_all())
    validate(document)  # the OpenAPI 3.1 schema, JSON Schema 2020-12 for the bodies
    assert document["openapi"].startswith("3.1.")


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def test_every_route_and_operation_is_described() -> None:
    table = resources.load_all()
    document = openapi.build(table)
    assert set(document["paths"]) == set(table)
    ids = []
    for template, entry in table.items():
        described = document["paths"][template]
        assert set(described) == {m.lower() for m in entry.operations}
        for method, op in entry.operations.items():
            spec = described[method.lower()]
            ids.append(spec["operationId"])
            assert spec["x-ganeti-access"] == op.access
            assert spec["x-ganeti-extension"] is op.extension
            assert spec["summary"] == op.summary and spec["summary"]
            params = {(p["in"], p["name"]) for p in spec.get("parameters", [])}
            assert params == {("path", v) for v in entry.variables} \
                | {("query", p.name) for p in op.params}
            assert re.findall(r"\{([a-z_]+)\}", template) == list(entry.variables)
            if op.access == routes.WRITE:
                assert ("query", "reason") in params and "403" in spec["responses"]
            assert ("requestBody" in spec) is (op.body is not None)
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas


def test_pydantic_definitions_move_to_components() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}},
              "$defs": {"A": {"type": "object", "properties": {
                  "b": {"$ref": "#/$defs/B"}}}, "B": {"type": "string"}}}
    components: dict[str, Any] = {}
    hoisted = openapi._hoist(schema, components)
    assert hoisted == {"type": "object", "properties": {
        "a": {"$ref": "#/components/schemas/A"}}}
    assert components == {"A": {"type": "object", "properties": {
        "b": {"$ref": "#/components/schemas/B"}}}, "B": {"type": "string"}}


def test_served_document_is_the_generated_one() -> None:
    answer = routes.dispatch(None, "GET", "/openapi.json", "", b"",  # type: ignore[arg-type]
                             routes.User("reader"))
    assert answer.status == 200
    assert json.loads(answer.body) == openapi.build(resources.load_all())
