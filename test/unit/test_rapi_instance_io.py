"""RAPI instance creation and export: bodies to opcodes; bad bodies are 400s naming the
field, with nothing submitted (ganeti.rapi.resources.instance_io through routes.dispatch)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ganeti import opcodes
from ganeti.rapi import resources, routes

# every module, in MODULES order (importing one alone first would change the table's
# order, which doc/rapi.md follows)
resources.load_all()

WRITER = routes.User("admin", read=True, write=True)
READER = routes.User("reader", read=True, write=False)


class FakeClient:
    def __init__(self, jobs: list[list[opcodes.OpCode]]) -> None:
        self.jobs = jobs

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *_exc: Any) -> None:
        pass

    def submit_job(self, ops: list[opcodes.OpCode]) -> int:
        # what masterd does with the wire form
        self.jobs.append([opcodes.from_dict(json.loads(json.dumps(op.to_dict())))
                          for op in ops])
        return 100 + len(self.jobs)


class Backend:
    def __init__(self) -> None:
        self.jobs: list[list[opcodes.OpCode]] = []

    def client(self) -> Any:  # a luxi.Client stand-in
        return FakeClient(self.jobs)


@pytest.fixture
def backend() -> Backend:
    return Backend()


def call(backend: Backend, method: str, path: str, body: Any = None, query: str = "",
         user: routes.User = WRITER, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    answer = routes.dispatch(backend, method, path, query, data, user)
    return answer.status, json.loads(answer.body)


def submitted(backend: Backend) -> Any:
    assert len(backend.jobs) == 1 and len(backend.jobs[0]) == 1, backend.jobs
    return backend.jobs[0][0]


def refused(backend: Backend, method: str, path: str, body: Any, *needles: str,
            query: str = "", raw: bytes | None = None) -> str:
    status, answer = call(backend, method, path, body, query, raw=raw)
    assert status == 400, answer
    assert answer["code"] == 400 and answer["message"] == "Bad Request"
    for needle in needles:
        assert needle in answer["explain"], answer["explain"]
    assert backend.jobs == [], "a refused request submitted a job"
    return str(answer["explain"])


def create_body(**fields: Any) -> dict[str, Any]:
    return {"__version__": 1, "mode": "create", "name": "inst1.example.com",
            "disk_template": "file", "disks": [{"size": 8}], "nics": [], "os": "debootstrap",
            **fields}


# --- POST /2/instances -----------------------------------------------------------------


def test_create_translates_ganeti_names_and_submits(backend: Backend) -> None:
    status, job_id = call(backend, "POST", "/2/instances",
                          create_body(pnode="node2", start=False, beparams={"memory": 64}),
                          query="reason=because")
    assert status == 200 and job_id == 101
    op = submitted(backend)
    assert isinstance(op, opcodes.OpInstanceCreate)
    assert (op.instance_name, op.os_type, op.mode) == ("inst1.example.com", "debootstrap",
                                                       "create")
    assert op.pnode == "node2" and op.start is False and op.dry_run is False
    assert [d.size for d in op.disks] == [8] and op.beparams == {"memory": 64}
    assert [(src, text) for src, text, _ts in op.reason] == [
        ("gnt:user", "because"), ("gnt:library:rlib2:create_instance", "")]


def test_create_dry_run_parameter(backend: Backend) -> None:
    status, _ = call(backend, "POST", "/2/instances", create_body(), query="dry-run=1")
    assert status == 200 and submitted(backend).dry_run is True


def test_create_accepts_what_ganeti_client_sends_for_import(backend: Backend) -> None:
    # instance_name/os_type (the new names) and 3.0's fields at their defaults
    body = {"__version__": 1, "mode": "import", "instance_name": "imp1",
            "disk_template": "file", "disks": [{"size": 8, "name": "None"}],
            "nics": [{"mac": "auto", "ip": None, "mode": "bridged", "link": "br0",
                      "vlan": None, "network": None, "name": None}],
            "os_type": "debootstrap", "src_node": "node1", "src_path": "exp1",
            "opportunistic_locking": False, "iallocator": None, "snode": None,
            "compress": "none", "ip_check": False}
    status, _ = call(backend, "POST", "/2/instances", body)
    assert status == 200
    op = submitted(backend)
    assert (op.mode, op.src_node, op.src_path, op.os_type) == ("import", "node1", "exp1",
                                                               "debootstrap")
    # Ganeti's move-instance sends str(None) for an unnamed disk: no name, as in Ganeti
    assert op.disks[0].name is None


def test_create_empty_os_is_none(backend: Backend) -> None:
    # what OpInstanceQueryData shows for an instance without an OS; move-instance sends it
    status, _ = call(backend, "POST", "/2/instances", create_body(os=""))
    assert status == 200 and submitted(backend).os_type is None


def test_create_remote_import_fields(backend: Backend) -> None:
    body = create_body(mode="remote-import", source_handshake=[0, "ab", "cd"],
                       source_x509_ca="-----BEGIN", source_instance_name="src1",
                       source_shutdown_timeout=30, start=False)
    status, _ = call(backend, "POST", "/2/instances", body)
    assert status == 200
    op = submitted(backend)
    assert op.mode == "remote-import" and op.source_handshake == [0, "ab", "cd"]
    assert (op.source_x509_ca, op.source_instance_name, op.source_shutdown_timeout) == \
        ("-----BEGIN", "src1", 30)


@pytest.mark.parametrize(("body", "needle"), [
    ({"name": "x", "disk_template": "file"}, "body.__version__: instance creation request"
                                             " version 0 is no longer supported"),
    ({"__version__": 0, "name": "x"}, "version 0 is no longer supported"),
    ({"__version__": 2, "name": "x"}, "body.__version__: unsupported request data"
                                      " version 2"),
    ({"__version__": "1", "name": "x"}, "unsupported request data version '1'"),
    ({"__version__": True, "name": "x"}, "unsupported request data version True"),
])
def test_create_request_versions(backend: Backend, body: dict[str, Any],
                                 needle: str) -> None:
    refused(backend, "POST", "/2/instances", body, needle)


@pytest.mark.parametrize(("fields", "needles"), [
    ({"instance_name": "other"}, ("'name' was renamed to 'instance_name', but both",)),
    ({"os_type": "other"}, ("'os' was renamed to 'os_type'",)),
    ({"dry_run": True}, ("'dry_run' cannot be set in the body",)),
    ({"reason": []}, ("'reason' cannot be set in the body",)),
    ({"bogus": 1}, ("OP_INSTANCE_CREATE.bogus", "unknown parameter")),
    ({"disks": [{"size": "big"}]}, ("OP_INSTANCE_CREATE.disks[0].size",)),
    ({"disks": [{"size": 8, "vg": "xenvg"}]}, ("disks[0]", "vg is not supported")),
    ({"start": "yes"}, ("OP_INSTANCE_CREATE.start",)),
    ({"mode": "clone"}, ("OP_INSTANCE_CREATE.mode",)),
    ({"opportunistic_locking": True}, ("OP_INSTANCE_CREATE.opportunistic_locking",
                                       "not supported")),
    ({"forthcoming": True}, ("OP_INSTANCE_CREATE.forthcoming",)),
    ({"nics": [{"mac": "zz"}]}, ("OP_INSTANCE_CREATE.nics[0].mac",)),
])
def test_create_bad_bodies(backend: Backend, fields: dict[str, Any],
                           needles: tuple[str, ...]) -> None:
    refused(backend, "POST", "/2/instances", create_body(**fields), *needles)


def test_create_missing_name_and_bad_json(backend: Backend) -> None:
    body = create_body()
    del body["name"]
    refused(backend, "POST", "/2/instances", body, "OP_INSTANCE_CREATE.instance_name",
            "Field required")
    refused(backend, "POST", "/2/instances", None, "body", raw=b"[1, 2]")
    refused(backend, "POST", "/2/instances", None, "body: not valid JSON", raw=b"{")
    refused(backend, "POST", "/2/instances", None, "needs a JSON body")
    refused(backend, "POST", "/2/instances", create_body(), "'force'", query="force=1")


def test_create_needs_write(backend: Backend) -> None:
    status, answer = call(backend, "POST", "/2/instances", create_body(), user=READER)
    assert status == 403 and backend.jobs == [], answer


# --- PUT /2/instances/NAME/prepare-export ----------------------------------------------


def test_prepare_export(backend: Backend) -> None:
    status, job_id = call(backend, "PUT", "/2/instances/inst%2D1/prepare-export",
                          query="mode=remote&reason=move")
    assert status == 200 and job_id == 101
    op = submitted(backend)
    assert isinstance(op, opcodes.OpBackupPrepare)
    assert (op.instance_name, op.mode) == ("inst-1", "remote")
    assert op.reason[0][:2] == ("gnt:user", "move")
    assert op.reason[1][0] == "gnt:library:rlib2:prepare_export"


def test_prepare_export_takes_an_empty_body(backend: Backend) -> None:
    status, _ = call(backend, "PUT", "/2/instances/inst1/prepare-export", {},
                     query="mode=local")
    assert status == 200 and submitted(backend).mode == "local"


def test_prepare_export_refuses_a_body_with_fields(backend: Backend) -> None:
    refused(backend, "PUT", "/2/instances/inst1/prepare-export", {"mode": "remote"},
            "body: prepare-export takes only the mode", query="mode=local")


@pytest.mark.parametrize(("query", "needle"), [
    ("", "OP_BACKUP_PREPARE.mode"),
    ("mode=sideways", "OP_BACKUP_PREPARE.mode"),
    ("mode=local&dry-run=1", "'dry-run'"),
])
def test_prepare_export_bad_mode(backend: Backend, query: str, needle: str) -> None:
    refused(backend, "PUT", "/2/instances/inst1/prepare-export", None, needle, query=query)


# --- PUT /2/instances/NAME/export -------------------------------------------------------


def test_export_local_with_our_fields(backend: Backend) -> None:
    body = {"mode": "local", "destination": "node3", "shutdown": False,
            "remove_instance": False, "compress": "gzip-fast", "keep_generations": True,
            "bwlimit": 2048, "ionice_class": "idle", "note": "before upgrade", "full": True,
            "shutdown_timeout": 30, "zero_free_space": False}
    status, job_id = call(backend, "PUT", "/2/instances/inst1/export", body)
    assert status == 200 and job_id == 101
    op = submitted(backend)
    assert isinstance(op, opcodes.OpBackupExport)
    assert (op.instance_name, op.target_node, op.mode) == ("inst1", "node3", "local")
    assert (op.shutdown, op.compress, op.keep_generations, op.bwlimit) == \
        (False, "gzip", True, 2048)
    assert (op.ionice_class, op.note, op.full, op.shutdown_timeout) == \
        ("idle", "before upgrade", True, 30)
    assert op.reason[-1][0] == "gnt:library:rlib2:export_instance"


def test_export_remote_body(backend: Backend) -> None:
    disks = [["10.0.0.1", 1234, "magic", "hmac", "salt"]]
    body = {"mode": "remote", "destination": disks, "shutdown": True,
            "remove_instance": True, "x509_key_name": ["key", "hmac", "salt"],
            "destination_x509_ca": "X-Ganeti-Signature: a/b\n-----BEGIN", "compress": "none"}
    status, _ = call(backend, "PUT", "/2/instances/inst1/export", body)
    assert status == 200
    op = submitted(backend)
    assert op.target_node == [tuple(disks[0])] and op.remove_instance is True
    assert op.x509_key_name == ["key", "hmac", "salt"]


@pytest.mark.parametrize(("body", "needles"), [
    ({"mode": "local"}, ("OP_BACKUP_EXPORT.target_node", "Field required")),
    ({"mode": "local", "destination": "n1", "target_node": "n2"},
     ("'destination' was renamed to 'target_node', but both",)),
    ({"destination": "n1", "instance_name": "other"},
     ("'instance_name' cannot be set in the body",)),
    ({"destination": "n1", "bogus": 1}, ("OP_BACKUP_EXPORT.bogus", "unknown parameter")),
    ({"destination": "n1", "shutdown": "no"}, ("OP_BACKUP_EXPORT.shutdown",)),
    ({"destination": "n1", "mode": "remote"}, ("target_node: in remote mode",)),
    ({"destination": [["h", 1, "m", "h", "s"]]}, ("target_node: in local mode",)),
    ({"destination": "n1", "zero_free_space": True},
     ("OP_BACKUP_EXPORT.zero_free_space", "not supported")),
    ({"destination": "n1", "ionice_level": 9}, ("OP_BACKUP_EXPORT.ionice_level",)),
    ("node1", ("body: must be a JSON object",)),
])
def test_export_bad_bodies(backend: Backend, body: Any, needles: tuple[str, ...]) -> None:
    refused(backend, "PUT", "/2/instances/inst1/export", body, *needles)


def test_export_needs_a_body(backend: Backend) -> None:
    refused(backend, "PUT", "/2/instances/inst1/export", None, "needs a JSON body")


# --- the documented schemas come from the opcodes ----------------------------------------


def test_body_schemas_are_the_opcodes() -> None:
    create = routes.TABLE["/2/instances"].operations["POST"].body
    assert create is not None
    props = create.json_schema()["properties"]
    ours = set(opcodes.OpInstanceCreate.model_fields) - {"dry_run", "reason"}
    assert set(props) == ours | {"name", "os", "__version__"}
    assert "__version__" in create.json_schema()["required"]
    export = routes.TABLE["/2/instances/{instance_name}/export"].operations["PUT"].body
    assert export is not None
    props = export.json_schema()["properties"]
    assert set(props) == (set(opcodes.OpBackupExport.model_fields)
                          - {"instance_name", "reason"}) | {"destination"}
    assert props["destination"]["anyOf"] == props["target_node"]["anyOf"]
