"""The export lifecycle and schedule resources (ganeti.rapi.resources.backup), one layer:
bodies become the opcodes the CLI builds, bad input is a 400 naming the field with no
job submitted, unknown names are 404s.  A fake masterd answers the query jobs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ganeti import constants, errors, opcodes, pathutils
from ganeti.rapi import resources, routes
from ganeti.rapi.resources import backup
from ganeti.tools import backup_runner

resources.load_all()

ADMIN = routes.User("admin", read=True, write=True)
READER = routes.User("reader", read=True, write=False)
GEN_OLD, GEN_NEW = "20261128T031500Z", "20261129T031500Z"


def gen(instance: str, generation: str, node: str = "node3", newest: bool = False,
        protected: bool = False, ts: float = 0.0) -> dict[str, Any]:
    return {"instance": instance, "generation": generation, "node": node,
            "timestamp": ts, "newest": newest, "protected": protected, "note": "",
            "size": 4096, "used": 4096, "unique": 4096, "shared": 0}


SCHEDULE = {"name": "nightly", "instances": ["web1"], "tags": [], "all_instances": False,
            "node_policy": "fixed", "target_node": "node3", "cron": "15 3 * * *",
            "compress": "none", "shutdown_mode": "shutdown", "retention": {"keep_last": 2},
            "enabled": True, "exclude": [], "verify": False, "overrides": {},
            "ctime": 1_700_000_000.0}


class FakeMaster:
    """A LUXI client of a fake masterd: query opcodes answer from the tables below, every
    other job is recorded in ``submitted`` (the writes) and gets the next id."""

    def __init__(self) -> None:
        self.generations = [gen("web1", GEN_OLD, ts=1.0), gen("web1", GEN_NEW, newest=True,
                                                              ts=2.0)]
        self.schedules = {"nightly": dict(SCHEDULE)}
        self.instances = ["web1"]
        self.jobs: dict[int, tuple[str, Any]] = {}
        self.submitted: list[opcodes.OpCode] = []
        self.queries: list[opcodes.OpCode] = []

    def client(self) -> FakeMaster:
        return self

    def __enter__(self) -> FakeMaster:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def _answer(self, op: opcodes.OpCode) -> tuple[str, Any]:
        if op.dry_run:          # as mcpu: CheckPrereq only, no result
            return constants.OP_STATUS_SUCCESS, None
        if isinstance(op, opcodes.OpBackupListGenerations):
            found = [g for g in self.generations
                     if (not op.instances or g["instance"] in op.instances)
                     and (not op.nodes or g["node"] in op.nodes)]
            return constants.OP_STATUS_SUCCESS, {"generations": found, "unreachable": []}
        assert isinstance(op, opcodes.OpBackupScheduleQuery)
        unknown = [n for n in op.names if n not in self.schedules]
        if unknown:
            return constants.OP_STATUS_ERROR, errors.encode(errors.OpPrereqError(
                f"Unknown backup schedule(s): {', '.join(unknown)}", errors.ECODE_NOENT))
        return constants.OP_STATUS_SUCCESS, [self.schedules[n]
                                             for n in op.names or sorted(self.schedules)]

    def submit_job(self, ops: list[opcodes.OpCode]) -> int:
        assert len(ops) == 1
        op, job_id = ops[0], len(self.jobs) + 100
        if isinstance(op, opcodes.OpBackupListGenerations | opcodes.OpBackupScheduleQuery):
            self.queries.append(op)
            self.jobs[job_id] = self._answer(op)
        else:
            self.submitted.append(op)
            self.jobs[job_id] = (constants.OP_STATUS_SUCCESS, None)
        return job_id

    def wait_for_job_change_once(self, job_id: int, fields: list[str], prev_info: Any,
                                 prev_serial: Any) -> Any:
        return [[self.jobs[job_id][0]], []]

    def query_jobs(self, job_ids: list[int], fields: list[str]) -> list[Any]:
        status, result = self.jobs[job_ids[0]]
        return [[status, [status], [result]]]

    def query(self, what: str, fields: list[str], qfilter: Any = None) -> dict[str, Any]:
        assert what == "instance" and qfilter[:2] == ["==", "name"]
        return {"data": [[[0, qfilter[2]]]] if qfilter[2] in self.instances else []}

    def query_cluster_info(self) -> dict[str, Any]:
        return {"backup_defaults": {}}


@pytest.fixture
def master(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> FakeMaster:
    monkeypatch.setenv(pathutils.ROOT_ENV, str(tmp_path))   # the runner's state: none
    return FakeMaster()


def call(master: FakeMaster, method: str, path: str, body: Any = None, query: str = "",
         user: routes.User = ADMIN) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    answer = routes.dispatch(master, method, path, query, raw, user)  # type: ignore[arg-type]
    return answer.status, json.loads(answer.body)


def bad(master: FakeMaster, method: str, path: str, body: Any = None, query: str = "",
        status: int = 400) -> str:
    """The explanation of an error answer; nothing was submitted."""
    code, answer = call(master, method, path, body, query)
    assert code == status, answer
    assert master.submitted == []
    return str(answer["explain"])


# --- the table ----------------------------------------------------------------------------

OURS = [t for t, r in routes.TABLE.items()
        if any(op.handler.__module__ == backup.__name__ for op in r.operations.values())]
SAMPLES = {
    "/2/exports": "/2/exports",
    "/2/exports/verify": "/2/exports/verify",
    "/2/exports/prune": "/2/exports/prune",
    "/2/instances/{instance_name}/exports": "/2/instances/web1/exports",
    "/2/instances/{instance_name}/exports/{generation}":
        f"/2/instances/web1/exports/{GEN_OLD}",
    "/2/instances/{instance_name}/exports/{generation}/modify":
        f"/2/instances/web1/exports/{GEN_OLD}/modify",
    "/2/instances/{instance_name}/exports/{generation}/verify":
        f"/2/instances/web1/exports/{GEN_OLD}/verify",
    "/2/backup-schedules": "/2/backup-schedules",
    "/2/backup-schedules/{schedule_name}": "/2/backup-schedules/nightly",
    "/2/backup-schedules/{schedule_name}/modify": "/2/backup-schedules/nightly/modify",
    "/2/backup-schedules/{schedule_name}/run-now": "/2/backup-schedules/nightly/run-now",
}
# Ganeti's own resources near ours (rapi.rst): none of ours may match them
GANETI_PATHS = ("/2/instances/web1", "/2/instances/web1/export",
                "/2/instances/web1/prepare-export", "/2/instances/web1/info",
                "/2/instances/web1/tags", "/2/instances/web1/disk/0/grow", "/2/jobs/1",
                "/2/query/export", "/2/nodes/node1/storage")


def test_every_resource_is_an_extension_and_found_by_its_own_path() -> None:
    assert sorted(OURS) == sorted(SAMPLES)
    for template, path in SAMPLES.items():
        found = routes.find(path)
        assert found is not None and found[0].template == template
        assert all(op.extension for op in found[0].operations.values()), template
    for path in GANETI_PATHS:
        found = routes.find(path)
        assert found is None or found[0].template not in OURS, path


def test_bodies_are_documented_by_the_opcodes_schema() -> None:
    schema = routes.TABLE["/2/backup-schedules"].operations["POST"].body
    assert schema is not None
    doc = schema.json_schema()
    props = doc["properties"]
    assert set(props) == set(opcodes.OpBackupScheduleAdd.model_fields) - {"dry_run", "reason"}
    assert doc["required"] == ["cron", "name"] and doc["additionalProperties"] is False
    assert props["cron"] == opcodes.OpBackupScheduleAdd.model_json_schema()[
        "properties"]["cron"]
    # the nested retention policy is inlined: the schema stands alone in OpenAPI
    assert "$ref" not in json.dumps(doc) and "keep_daily" in json.dumps(props["retention"])
    assert props["retention"]["description"] == \
        opcodes.OpBackupScheduleAdd.model_fields["retention"].description
    modify = routes.TABLE["/2/backup-schedules/{schedule_name}/modify"].operations["PUT"]
    assert modify.body is not None and "name" not in modify.body.json_schema()["properties"]
    gen_modify = routes.TABLE["/2/instances/{instance_name}/exports/{generation}/modify"]
    body = gen_modify.operations["PUT"].body
    assert body is not None
    assert {"protected", "note", "nodes"} <= set(body.json_schema()["properties"])
    assert not {"instance_name", "generation"} & set(body.json_schema()["properties"])


# --- schedules ---------------------------------------------------------------------------


def test_add_schedule_submits_the_opcode_the_body_describes(master: FakeMaster) -> None:
    body = {"name": "db", "instances": ["web1"], "target_node": "node3",
            "cron": "0 */6 * * *", "retention": {"keep_hourly": 8}, "verify": True,
            "overrides": {"bwlimit": 20480}}
    status, job = call(master, "POST", "/2/backup-schedules", body,
                       "reason=before+the+upgrade")
    assert status == 200 and job == 101     # 100 was the existence check
    [op] = master.submitted
    assert isinstance(op, opcodes.OpBackupScheduleAdd) and not op.dry_run
    assert (op.name, op.instances, op.target_node, op.cron, op.verify) == (
        "db", ["web1"], "node3", "0 */6 * * *", True)
    assert op.retention.rules() == {"keep_hourly": 8} and op.overrides == {"bwlimit": 20480}
    assert [r[:2] for r in op.reason] == [("gnt:user", "before the upgrade"),
                                          ("gnt:library:rlib2:add_schedule", "")]
    status, _job = call(master, "POST", "/2/backup-schedules", body, "dry-run=1")
    assert status == 200 and master.submitted[-1].dry_run is True


@pytest.mark.parametrize(("body", "named"), [
    ({"name": "x", "instances": ["web1"], "target_node": "node3", "cron": "0 25 * * *"},
     "'body.cron'"),
    ({"name": "x", "instances": ["web1"], "target_node": "node3", "cron": "@daily",
      "retention": {"keep_daily": -1}}, "'body.retention.keep_daily'"),
    ({"name": "x", "instances": ["web1"], "target_node": "node3", "cron": "@daily",
      "enabled": 1}, "'body.enabled'"),
    ({"name": "x", "instances": ["web1"], "target_node": "node3", "cron": "@daily",
      "bogus": 1}, "'body.bogus'"),
    ({"name": "x", "instances": ["web1"], "target_node": "node3", "cron": "@daily",
      "dry_run": True}, "'body.dry_run'"),
    ({"name": "x", "instances": ["web1"], "target_node": "node3"}, "'body.cron'"),
    ({"name": "x", "instances": ["web1"], "cron": "@daily"}, "'target_node'"),
    ({"name": "x", "cron": "@daily", "target_node": "node3"}, "'instances'"),
    ({"name": "x", "all_instances": True, "tags": ["a"], "cron": "@daily",
      "target_node": "node3"}, "'all_instances'"),
    ({"name": "x", "tags": ["a"], "cron": "@daily", "node_policy": "other",
      "target_node": "node3"}, "'target_node'"),
    ({"name": "", "tags": ["a"], "cron": "@daily", "target_node": "node3"}, "'body.name'"),
    (["name", "x"], "JSON object"),
])
def test_add_schedule_refuses_bad_bodies(master: FakeMaster, body: Any, named: str) -> None:
    assert named in bad(master, "POST", "/2/backup-schedules", body)


def test_add_schedule_refuses_a_taken_name(master: FakeMaster) -> None:
    body = {"name": "nightly", "tags": ["a"], "cron": "@daily", "target_node": "node3"}
    assert "already exists" in bad(master, "POST", "/2/backup-schedules", body, status=409)


def test_modify_and_remove_schedule(master: FakeMaster) -> None:
    status, _job = call(master, "PUT", "/2/backup-schedules/nightly/modify",
                        {"enabled": False, "overrides": {"bwlimit": None}})
    assert status == 200
    [op] = master.submitted
    assert isinstance(op, opcodes.OpBackupScheduleModify)
    assert op.changes() == {"enabled": False, "overrides": {"bwlimit": None}}
    assert op.name == "nightly"
    status, _job = call(master, "DELETE", "/2/backup-schedules/nightly")
    assert status == 200 and isinstance(master.submitted[-1], opcodes.OpBackupScheduleRemove)


def test_modify_schedule_bad_input(master: FakeMaster) -> None:
    path = "/2/backup-schedules/nightly/modify"
    assert "nothing to change" in bad(master, "PUT", path, {})
    assert "'body.cron'" in bad(master, "PUT", path, {"cron": "61 * * * *"})
    assert "'body.name'" in bad(master, "PUT", path, {"name": "other"})
    assert "nightly2" in bad(master, "PUT", "/2/backup-schedules/nightly2/modify",
                             {"enabled": True}, status=404)
    assert "nightly2" in bad(master, "DELETE", "/2/backup-schedules/nightly2", status=404)
    assert "nightly2" in bad(master, "GET", "/2/backup-schedules/nightly2", status=404)
    # a schedule name the opcode refuses names the path's variable
    assert "'schedule_name'" in bad(master, "PUT", "/2/backup-schedules/a%20b/modify",
                                    {"enabled": True})


def test_schedule_reads(master: FakeMaster) -> None:
    status, names = call(master, "GET", "/2/backup-schedules", user=READER)
    assert (status, names) == (200, [{"id": "nightly", "uri": "/2/backup-schedules/nightly"}])
    status, [full] = call(master, "GET", "/2/backup-schedules", query="bulk=1", user=READER)
    assert status == 200 and full["cron"] == "15 3 * * *"
    assert full["settings"]["timezone"] == "UTC" and full["state"]["jobs"] == []
    assert full["state"]["next_run"] > SCHEDULE["ctime"]
    status, one = call(master, "GET", "/2/backup-schedules/nightly", user=READER)
    assert status == 200 and one == full
    assert master.submitted == []
    code, _answer = call(master, "POST", "/2/backup-schedules", {}, user=READER)
    assert code == 403


def test_run_now_is_a_runner_pass_that_does_not_wait(master: FakeMaster,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run_pass(client: Any, names: list[str], **kwargs: Any) -> backup_runner.Pass:
        calls.append((list(names), kwargs))
        return backup_runner.Pass(outcomes=[
            backup_runner.Outcome("nightly", "web1", "submitted", "export to node3", 7),
            backup_runner.Outcome("other", "db1", "ok", "collected", 3)])
    monkeypatch.setattr(backup_runner, "run_pass", run_pass)
    status, answer = call(master, "PUT", "/2/backup-schedules/nightly/run-now")
    assert status == 200 and answer["jobs"] == [7]
    assert answer["outcomes"][0] == {"schedule": "nightly", "instance": "web1",
                                     "status": "submitted", "detail": "export to node3",
                                     "job_id": 7}
    assert calls == [(["nightly"], {"dry_run": False, "wait": False})]
    call(master, "PUT", "/2/backup-schedules/nightly/run-now", query="dry-run=1")
    assert calls[-1] == (["nightly"], {"dry_run": True, "wait": False})
    assert "nosuch" in bad(master, "PUT", "/2/backup-schedules/nosuch/run-now", status=404)
    assert len(calls) == 2
    assert "takes no body" in bad(master, "PUT", "/2/backup-schedules/nightly/run-now",
                                  {"x": 1})


# --- exports and generations ---------------------------------------------------------------


def test_export_listings(master: FakeMaster) -> None:
    master.generations.append(gen("db1", GEN_NEW, node="node2", newest=True))
    status, found = call(master, "GET", "/2/exports", user=READER)
    assert status == 200 and len(found["generations"]) == 3 and found["unreachable"] == []
    status, found = call(master, "GET", "/2/exports", query="newest=1&nodes=node3",
                         user=READER)
    assert [g["generation"] for g in found["generations"]] == [GEN_NEW]
    query_op = master.queries[-1]
    assert isinstance(query_op, opcodes.OpBackupListGenerations)
    assert query_op.nodes == ["node3"]
    status, found = call(master, "GET", "/2/instances/web1/exports", user=READER)
    assert status == 200 and len(found["generations"]) == 2
    status, found = call(master, "GET", f"/2/instances/web1/exports/{GEN_OLD}", user=READER)
    assert status == 200 and [g["generation"] for g in found["generations"]] == [GEN_OLD]
    # an instance without exports: an empty list; no instance and no export: 404
    master.instances.append("fresh")
    assert call(master, "GET", "/2/instances/fresh/exports")[1]["generations"] == []
    assert "'gone'" in bad(master, "GET", "/2/instances/gone/exports", status=404)
    assert GEN_OLD in bad(master, "GET", f"/2/instances/db1/exports/{GEN_OLD}", status=404)
    assert "'nodes[0]'" in bad(master, "GET", "/2/exports", query="nodes=")
    assert "'newest'" in bad(master, "GET", "/2/exports", query="newest=maybe")


def test_generation_writes(master: FakeMaster) -> None:
    status, _job = call(master, "PUT", f"/2/instances/web1/exports/{GEN_OLD}/modify",
                        {"protected": True, "note": "audit"})
    assert status == 200
    op = master.submitted[-1]
    assert isinstance(op, opcodes.OpBackupSetGenerationParams)
    assert (op.instance_name, op.generation, op.protected, op.note) == (
        "web1", GEN_OLD, True, "audit")
    call(master, "DELETE", f"/2/instances/web1/exports/{GEN_OLD}", query="nodes=node3")
    op = master.submitted[-1]
    assert isinstance(op, opcodes.OpBackupRemoveGeneration)
    assert (op.instance_name, op.generation, op.nodes) == ("web1", GEN_OLD, ["node3"])
    # dry-run: the job is submitted as one; the existence check is no dry run
    status, _job = call(master, "DELETE", f"/2/instances/web1/exports/{GEN_OLD}",
                        query="dry-run=1")
    assert status == 200 and master.submitted[-1].dry_run
    assert not master.queries[-1].dry_run
    call(master, "PUT", f"/2/instances/web1/exports/{GEN_OLD}/verify",
         {"fail_on_problems": True})
    op = master.submitted[-1]
    assert isinstance(op, opcodes.OpBackupVerify)
    assert op.exports == [f"web1@{GEN_OLD}"] and op.fail_on_problems
    assert op.reason[-1][0] == "gnt:library:rlib2:verify_generation"
    call(master, "DELETE", "/2/instances/web1/exports")
    op = master.submitted[-1]
    assert isinstance(op, opcodes.OpBackupRemove) and op.instance_name == "web1"
    call(master, "PUT", "/2/exports/verify", {"exports": ["web1"], "newest_only": True})
    op = master.submitted[-1]
    assert isinstance(op, opcodes.OpBackupVerify) and op.exports == ["web1"]
    assert op.newest_only


def test_generation_writes_bad_input(master: FakeMaster) -> None:
    modify = f"/2/instances/web1/exports/{GEN_OLD}/modify"
    assert "nothing to change" in bad(master, "PUT", modify, {})
    assert "'body.protected'" in bad(master, "PUT", modify, {"protected": "yes"})
    assert "body.note" in bad(master, "PUT", modify, {"note": "two\nlines"})
    assert "body.note" in bad(master, "PUT", modify, {"note": "x" * 1025})
    assert "'body.generation'" in bad(master, "PUT", modify,
                                      {"protected": True, "generation": GEN_NEW})
    assert "nosuch" in bad(master, "PUT", "/2/instances/web1/exports/nosuch/modify",
                           {"protected": True}, status=404)
    assert "nosuch" in bad(master, "DELETE", "/2/instances/web1/exports/nosuch", status=404)
    assert "nosuch" in bad(master, "PUT", "/2/instances/web1/exports/nosuch/verify",
                           status=404)
    assert "'body.newest_only'" in bad(master, "PUT",
                                       f"/2/instances/web1/exports/{GEN_OLD}/verify",
                                       {"newest_only": True})
    assert "'gone'" in bad(master, "DELETE", "/2/instances/gone/exports", status=404)
    assert "'body.exports[0]'" in bad(master, "PUT", "/2/exports/verify", {"exports": [""]})
    assert "takes no body" in bad(master, "DELETE", "/2/instances/web1/exports", {"a": 1})


def test_prune(master: FakeMaster) -> None:
    status, plan = call(master, "PUT", "/2/exports/prune", {"keep_last": 1}, "dry-run=1")
    assert status == 200 and master.submitted == []
    assert [(r["generation"], r["keep"]) for r in plan["plan"]] == [(GEN_NEW, True),
                                                                    (GEN_OLD, False)]
    status, _job = call(master, "PUT", "/2/exports/prune",
                        {"keep_last": 1, "instances": ["web1"]})
    [op] = master.submitted
    assert isinstance(op, opcodes.OpBackupPrune) and not op.dry_run
    assert op.rules() == {"keep_last": 1} and op.instances == ["web1"]
    # a schedule's policy
    call(master, "PUT", "/2/exports/prune", None, "schedule=nightly")
    op = master.submitted[-1]
    assert isinstance(op, opcodes.OpBackupPrune) and op.rules() == {"keep_last": 2}


def test_prune_bad_input(master: FakeMaster) -> None:
    assert "retention policy" in bad(master, "PUT", "/2/exports/prune", {})
    assert "retention policy" in bad(master, "PUT", "/2/exports/prune", {}, "dry-run=1")
    assert "'body.keep_daily'" in bad(master, "PUT", "/2/exports/prune", {"keep_daily": -2})
    assert "'body.keep_daily'" in bad(master, "PUT", "/2/exports/prune",
                                      {"keep_daily": "7"})
    assert "exclude each other" in bad(master, "PUT", "/2/exports/prune", {"keep_last": 1},
                                       "schedule=nightly")
    assert "nosuch" in bad(master, "PUT", "/2/exports/prune", None, "schedule=nosuch",
                           status=404)
    assert "'keep'" in bad(master, "PUT", "/2/exports/prune", {"keep_last": 1}, "keep=1")
