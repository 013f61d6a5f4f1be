"""The instance, node and tag resources through routes.dispatch, over a fake LUXI client.

The shapes are Ganeti 3.0's rlib2 (compared with its field lists); bad input
is a 400 naming the field or parameter, and then no job is submitted.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ganeti import errors, opcodes, query_resources
from ganeti.query_resources import instance as qinstance
from ganeti.query_resources import node as qnode
from ganeti.rapi import resources, routes
from ganeti.rapi.resources import instances, nodes

resources.load_all()

ADMIN = routes.User("admin", read=True, write=True)
READER = routes.User("reader", read=True, write=False)


class FakeClient:
    """Answers queries from canned rows; records submitted jobs."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _rows(self, items: dict[str, dict[str, Any]], title: str, names: list[str],
              fields: list[str]) -> list[list[Any]]:
        self.backend.queries.append((title, names, fields))
        for name in names:
            if name not in items:
                raise errors.OpPrereqError(f"{title} '{name}' not known", errors.ECODE_NOENT)
        return [[items[n][f] for f in fields] for n in (names or sorted(items))]

    def query_instances(self, names: list[str], fields: list[str],
                        use_locking: bool = False) -> list[list[Any]]:
        return self._rows(self.backend.instances, "Instance", names, fields)

    def query_nodes(self, names: list[str], fields: list[str],
                    use_locking: bool = False) -> list[list[Any]]:
        return self._rows(self.backend.nodes, "Node", names, fields)

    def query_tags(self, kind: str, name: str | None) -> list[str]:
        if kind == "cluster":
            return ["c1"]
        items = self.backend.instances if kind == "instance" else self.backend.nodes
        if name not in items:
            raise errors.OpPrereqError(f"{kind} '{name}' not known", errors.ECODE_NOENT)
        return list(items[name]["tags"])

    def submit_job(self, ops: list[opcodes.OpCode]) -> int:
        # as the real client: the opcode goes over the wire in its dict form
        self.backend.jobs.append([opcodes.from_dict(op.to_dict()) for op in ops])
        return 100 + len(self.backend.jobs)


def _item(fields: tuple[str, ...], **values: Any) -> dict[str, Any]:
    return {f: values.get(f.replace(".", "_"), f"<{f}>") for f in fields}


class FakeBackend:
    def __init__(self) -> None:
        self.jobs: list[list[opcodes.OpCode]] = []
        self.queries: list[tuple[str, list[str], list[str]]] = []
        self.instances = {
            name: _item(qinstance.FIELD_NAMES, name=name, tags=["t1"],
                        beparams={"maxmem": 256, "minmem": 128, "vcpus": 1})
            for name in ("web2", "web1")}
        self.nodes = {name: _item(qnode.FIELD_NAMES + tuple(qnode.LIVE_FIELDS), name=name,
                                  sip="10.0.0.1", tags=[])
                      for name in ("node2", "node1")}

    def client(self) -> Any:
        return FakeClient(self)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


def call(backend: FakeBackend, method: str, path: str, query: str = "",
         body: Any = None, user: routes.User = ADMIN) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    answer = routes.dispatch(backend, method, path, query, raw, user)
    return answer.status, json.loads(answer.body)


# --- the field lists (compared with Ganeti's own in test/compat) ---------------------


def test_every_field_but_the_unknown_ones_is_a_query_field() -> None:
    query_resources.register_all()
    inst_known = set(qinstance.FIELD_NAMES)
    node_known = set(qnode.FIELD_NAMES) | set(qnode.LIVE_FIELDS)
    assert set(instances.I_FIELDS) - inst_known == instances.I_FIELDS_UNKNOWN
    assert set(nodes.N_FIELDS) - node_known == nodes.N_FIELDS_UNKNOWN


# --- instances -------------------------------------------------------------------------


def test_instance_list_is_ids_and_uris_sorted(backend: FakeBackend) -> None:
    status, body = call(backend, "GET", "/2/instances")
    assert status == 200
    assert body == [{"id": "web1", "uri": "/2/instances/web1"},
                    {"id": "web2", "uri": "/2/instances/web2"}]
    assert backend.queries == [("Instance", [], ["name"])]


def test_bulk_instance_list_has_every_ganeti_field(backend: FakeBackend) -> None:
    status, body = call(backend, "GET", "/2/instances", "bulk=1")
    assert status == 200
    assert [i["name"] for i in body] == ["web1", "web2"]
    for inst in body:
        assert sorted(inst) == sorted(instances.I_FIELDS)
        assert inst["network_port"] is None and inst["disk.spindles"] is None
        assert inst["nic.ips"] == "<nic.ips>"
        # rlib2's _UpdateBeparams
        assert inst["beparams"] == {"maxmem": 256, "minmem": 128, "vcpus": 1, "memory": 256}
    # the unknown fields are not asked for
    asked = backend.queries[0][2]
    assert not set(asked) & instances.I_FIELDS_UNKNOWN


def test_one_instance(backend: FakeBackend) -> None:
    status, body = call(backend, "GET", "/2/instances/web2")
    assert status == 200
    assert body["name"] == "web2" and sorted(body) == sorted(instances.I_FIELDS)
    assert body["beparams"]["memory"] == 256


def test_unknown_instance_is_404_in_ganetis_error_body(backend: FakeBackend) -> None:
    for method, path in (("GET", "/2/instances/nosuch"),
                         ("GET", "/2/instances/nosuch/tags")):
        status, body = call(backend, method, path)
        assert status == 404, path
        assert body["code"] == 404 and body["message"] == "Not Found"
        assert "nosuch" in body["explain"]


@pytest.mark.parametrize(("method", "path", "query", "opcls", "fields"), [
    ("PUT", "/2/instances/web1/startup", "", opcodes.OpInstanceStartup,
     {"instance_name": "web1", "force": False, "no_remember": False, "dry_run": False}),
    ("PUT", "/2/instances/web1/startup", "force=1&no_remember=1&dry-run=1",
     opcodes.OpInstanceStartup,
     {"force": True, "no_remember": True, "dry_run": True}),
    ("PUT", "/2/instances/web1/shutdown", "no_remember=1", opcodes.OpInstanceShutdown,
     {"instance_name": "web1", "no_remember": True}),
    ("POST", "/2/instances/web1/reboot", "", opcodes.OpInstanceReboot,
     {"instance_name": "web1", "reboot_type": "hard", "ignore_secondaries": False}),
    ("POST", "/2/instances/web1/reboot", "type=soft&ignore_secondaries=1",
     opcodes.OpInstanceReboot, {"reboot_type": "soft", "ignore_secondaries": True}),
    ("DELETE", "/2/instances/web1", "dry-run=1", opcodes.OpInstanceRemove,
     {"instance_name": "web1", "ignore_failures": False, "dry_run": True}),
    ("GET", "/2/instances/web1/info", "", opcodes.OpInstanceQueryData,
     {"instances": ["web1"], "static": False}),
    ("GET", "/2/instances/web1/info", "static=1", opcodes.OpInstanceQueryData,
     {"static": True}),
])
def test_operations_submit_one_job_and_answer_its_id(
        backend: FakeBackend, method: str, path: str, query: str,
        opcls: type[opcodes.OpCode], fields: dict[str, Any]) -> None:
    status, body = call(backend, method, path, query)
    assert (status, body) == (200, 101)
    [[op]] = backend.jobs
    assert type(op) is opcls
    for name, value in fields.items():
        assert getattr(op, name) == value, name
    # rlib2's reason trail names the operation
    assert op.reason[-1][0].startswith("gnt:library:rlib2:")


def test_the_users_reason_heads_the_trail(backend: FakeBackend) -> None:
    call(backend, "PUT", "/2/instances/web1/startup", "reason=maintenance")
    [[op]] = backend.jobs
    assert [list(entry[:2]) for entry in op.reason] == [
        ["gnt:user", "maintenance"], ["gnt:library:rlib2:startup_instance", ""]]


@pytest.mark.parametrize(("path", "method", "body", "field"), [
    ("/2/instances/web1/shutdown", "PUT", {"timeout": 7}, "timeout"),
    ("/2/instances/web1/reboot", "POST", {"shutdown_timeout": 9}, "shutdown_timeout"),
    ("/2/instances/web1", "DELETE", {"shutdown_timeout": 5}, "shutdown_timeout"),
])
def test_the_body_holds_further_opcode_fields(backend: FakeBackend, path: str, method: str,
                                              body: dict[str, Any], field: str) -> None:
    status, _ = call(backend, method, path, body=body)
    assert status == 200
    [[op]] = backend.jobs
    assert getattr(op, field) == body[field]


@pytest.mark.parametrize(("method", "path", "query", "body", "named"), [
    # a wrong type, an unknown field, a value out of bounds: the field is named
    ("PUT", "/2/instances/web1/shutdown", "", {"timeout": "soon"},
     "OP_INSTANCE_SHUTDOWN.timeout"),
    ("PUT", "/2/instances/web1/shutdown", "", {"bogus": 1}, "OP_INSTANCE_SHUTDOWN.bogus"),
    ("PUT", "/2/instances/web1/shutdown", "", {"timeout": -1},
     "OP_INSTANCE_SHUTDOWN.timeout"),
    ("DELETE", "/2/instances/web1", "", {"shutdown_timeout": 10 ** 9},
     "OP_INSTANCE_REMOVE.shutdown_timeout"),
    # static fields come from the path and the query only (Ganeti's FillOpcode)
    ("DELETE", "/2/instances/web1", "", {"ignore_failures": True}, "ignore_failures"),
    ("PUT", "/2/instances/web1/shutdown", "", {"instance_name": "web2"}, "instance_name"),
    ("PUT", "/2/instances/web1/shutdown", "", {"reason": []}, "reason"),
    # not a dict
    ("PUT", "/2/instances/web1/shutdown", "", [1, 2], "body"),
    # query parameters
    ("POST", "/2/instances/web1/reboot", "type=sideways", None, "'type'"),
    ("PUT", "/2/instances/web1/startup", "force=maybe", None, "'force'"),
    ("PUT", "/2/instances/web1/startup", "forced=1", None, "'forced'"),
    ("GET", "/2/instances/web1/info", "static=2", None, "'static'"),
    ("GET", "/2/instances", "bulk=yes please", None, "'bulk'"),
    # startup takes no body (Ganeti ignores it; its client sends none)
    ("PUT", "/2/instances/web1/startup", "", {"force": True}, "body"),
    # tags
    ("PUT", "/2/instances/web1/tags", "tag=a%20b", None, "'tag'"),
    ("PUT", "/2/instances/web1/tags", "tag=ok&tag=", None, "OP_TAGS_SET.tags[1]"),
    ("DELETE", "/2/nodes/node1/tags", "tag=" + "x" * 129, None, "OP_TAGS_DEL.tags[0]"),
    ("PUT", "/2/tags", "tag=semi;colon", None, "'tag'"),
])
def test_bad_input_is_400_naming_the_field_and_submits_nothing(
        backend: FakeBackend, method: str, path: str, query: str, body: Any,
        named: str) -> None:
    status, answer = call(backend, method, path, query, body)
    assert status == 400, answer
    assert answer["code"] == 400 and answer["message"] == "Bad Request"
    assert named in answer["explain"]
    assert backend.jobs == []


def test_readers_cannot_change_anything(backend: FakeBackend) -> None:
    for method, path in (("PUT", "/2/instances/web1/startup"),
                         ("PUT", "/2/instances/web1/shutdown"),
                         ("POST", "/2/instances/web1/reboot"),
                         ("DELETE", "/2/instances/web1"),
                         ("PUT", "/2/tags"), ("DELETE", "/2/nodes/node1/tags")):
        status, _ = call(backend, method, path, "tag=a", user=READER)
        assert status == 403, path
    assert backend.jobs == []
    assert call(backend, "GET", "/2/instances/web1", user=READER)[0] == 200


def test_wrong_methods_are_405(backend: FakeBackend) -> None:
    for method, path in (("POST", "/2/instances/web1/startup"),
                         ("PUT", "/2/instances/web1/reboot"),
                         ("DELETE", "/2/nodes/node1"), ("POST", "/2/tags")):
        assert call(backend, method, path)[0] == 405, path


# --- nodes -----------------------------------------------------------------------------


def test_node_list_bulk_and_one(backend: FakeBackend) -> None:
    assert call(backend, "GET", "/2/nodes")[1] == [{"id": "node1", "uri": "/2/nodes/node1"},
                                                   {"id": "node2", "uri": "/2/nodes/node2"}]
    status, bulk = call(backend, "GET", "/2/nodes", "bulk=1")
    assert status == 200 and [n["name"] for n in bulk] == ["node1", "node2"]
    for node in bulk:
        assert sorted(node) == sorted(nodes.N_FIELDS)
        assert all(node[f] is None for f in nodes.N_FIELDS_UNKNOWN)
    status, one = call(backend, "GET", "/2/nodes/node2")
    assert status == 200 and one["name"] == "node2"
    # rlib2's GET_ALIASES
    assert one["secondary_ip"] == one["sip"] == "10.0.0.1"
    assert sorted(one) == sorted((*nodes.N_FIELDS, "secondary_ip"))
    assert call(backend, "GET", "/2/nodes/nosuch")[0] == 404


# --- tags ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "kind", "name", "operation"), [
    ("/2/tags", "cluster", None, "tags"),
    ("/2/instances/web1/tags", "instance", "web1", "instances_name_tags"),
    ("/2/nodes/node1/tags", "node", "node1", "nodes_name_tags")])
def test_tags_get_put_delete(backend: FakeBackend, path: str, kind: str,
                             name: str | None, operation: str) -> None:
    status, tags = call(backend, "GET", path)
    assert status == 200 and isinstance(tags, list)
    # Ganeti's client sends the tags as the body of AddNodeTags too: ignored
    assert call(backend, "PUT", path, "tag=b&tag=a:1&dry-run=1", body=["b", "a:1"]) == \
        (200, 101)
    assert call(backend, "DELETE", path, "tag=b") == (200, 102)
    [[put], [delete]] = backend.jobs
    # the reason trail names Ganeti's operation, as rlib2 does
    assert put.reason[-1][0] == delete.reason[-1][0] == f"gnt:library:rlib2:{operation}"
    assert type(put) is opcodes.OpTagsSet and type(delete) is opcodes.OpTagsDel
    assert (put.kind, put.name, put.tags, put.dry_run) == (
        kind, name, ["b", "a:1"], True)
    assert (delete.kind, delete.name, delete.tags) == (kind, name, ["b"])


def test_cluster_tags_are_the_clusters(backend: FakeBackend) -> None:
    assert call(backend, "GET", "/2/tags") == (200, ["c1"])
