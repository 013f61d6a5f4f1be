"""The export lifecycle and backup schedule resources against a real 3-node cluster:
generations kept by real exports, listed, protected, pruned (plan first), verified and
removed; a schedule created, read, changed, run now (its export job really runs) and
removed; every bad input a 400 or 404 that changes nothing and submits no job."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.cluster import E2ECluster
from support.rapi import RapiClient

from ganeti import cli, luxi

pytestmark = pytest.mark.e2e

MIB = 1 << 20
INSTANCE = "web1"
# the query opcodes a read (or a write's existence check) runs as a job: they change nothing
QUERY_JOBS = ("BACKUP_LIST_GENERATIONS", "BACKUP_SCHEDULE_QUERY")


class Api:
    """The cluster's RAPI daemon over HTTPS (``admin`` may write, ``reader`` only read);
    the job queue is inspected over LUXI."""

    def __init__(self, cluster: E2ECluster) -> None:
        self.cluster = cluster
        self.clients = {True: RapiClient(cluster, "admin"), False: RapiClient(cluster, "reader")}
        self.address = str(cluster.master.paths.master_socket)

    def __call__(self, method: str, path: str, body: Any = None, query: str = "",
                 write: bool = True) -> tuple[int, Any]:
        answer = self.clients[write].request(method, path, body, query or None)
        return answer.status, answer.body

    def ok(self, method: str, path: str, body: Any = None, query: str = "") -> Any:
        status, answer = self(method, path, body, query)
        assert status == 200, answer
        return answer

    def job(self, method: str, path: str, body: Any = None, query: str = "") -> Any:
        """Submit through the resource, wait for the job; its result."""
        job_id = self.ok(method, path, body, query)
        assert isinstance(job_id, int)
        return self.wait(job_id)

    def wait(self, job_id: int) -> Any:
        with luxi.Client(address=self.address) as cl:
            return cli.poll_job(job_id, cl, lambda _entry: None)[0]

    def jobs(self) -> list[tuple[int, list[str]]]:
        with luxi.Client(address=self.address) as cl:
            rows = cl.query("job", ["id", "summary"])["data"]
        return [(int(jid[1]), list(summary[1])) for jid, summary in rows]


@pytest.fixture(scope="module")
def api(cluster: E2ECluster) -> Api:
    return Api(cluster)


@pytest.fixture(scope="module")
def web1(cluster: E2ECluster) -> str:
    """The instance, with a first export on node3 (each test may run alone)."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", INSTANCE)
    export(cluster, b"AAAA")
    return INSTANCE


def gen_dirs(cluster: E2ECluster, node: str = "node3") -> list[str]:
    root = cluster.node(node).paths.export_dir / ".generations" / INSTANCE
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def export(cluster: E2ECluster, marker: bytes) -> None:
    disk = cluster.disk_path(INSTANCE)
    with open(disk, "r+b") as handle:
        handle.write(marker * (MIB // len(marker)))
    cluster.gnt("gnt-backup", "export", "-n", "node3", "--keep-generations", INSTANCE)
    time.sleep(1.1)             # generations are named by the second


def expect_refused(api: Api, status: int, method: str, path: str, body: Any = None,
                   query: str = "", named: str = "") -> None:
    """A 400/404 naming ``named``, with nothing changed and no job doing anything."""
    before_state = (api.ok("GET", "/2/exports"), api.ok("GET", "/2/backup-schedules",
                                                        query="bulk=1"))
    before_jobs = {jid for jid, _s in api.jobs()}
    code, answer = api(method, path, body, query)
    assert code == status, answer
    assert named in answer["explain"], answer
    new = [(jid, s) for jid, s in api.jobs() if jid not in before_jobs]
    if status == 400:
        assert new == [], f"{method} {path}: {answer}"
    else:   # a 404 comes from a query (a read-only job), never from a submitted change
        assert all(op in QUERY_JOBS for _jid, summary in new for op in summary), new
    after = (api.ok("GET", "/2/exports"), api.ok("GET", "/2/backup-schedules",
                                                 query="bulk=1"))
    assert _without_sizes(after) == _without_sizes(before_state)


def _without_sizes(state: Any) -> Any:
    exports, schedules = state
    return ([{k: v for k, v in g.items() if k not in ("used", "unique", "shared")}
             for g in exports["generations"]], schedules)


def test_generations_protect_prune_verify_remove(cluster: E2ECluster, api: Api,
                                                 web1: str) -> None:
    for marker in (b"BBBB", b"CCCC"):
        export(cluster, marker)
    found = api.ok("GET", "/2/exports")
    assert found["unreachable"] == []
    mine = sorted((g for g in found["generations"] if g["instance"] == INSTANCE),
                  key=lambda g: g["timestamp"])
    assert [(g["node"], g["newest"]) for g in mine] == [("node3", False), ("node3", False),
                                                        ("node3", True)]
    first, second, newest = (g["generation"] for g in mine)
    assert gen_dirs(cluster) == [first, second]
    assert all(g["size"] >= 4 * MIB for g in mine)
    # the instance's and one generation's views, and the read permission suffices
    status, own = api("GET", f"/2/instances/{INSTANCE}/exports", write=False)
    assert status == 200 and sorted(g["generation"] for g in own["generations"]) == sorted(
        [first, second, newest])
    status, one = api("GET", f"/2/instances/{INSTANCE}/exports/{first}", write=False)
    assert status == 200 and [g["generation"] for g in one["generations"]] == [first]
    newest_only = api.ok("GET", "/2/exports", query="newest=1&nodes=node3")
    assert [g["generation"] for g in newest_only["generations"]
            if g["instance"] == INSTANCE] == [newest]

    # protect the oldest, with a note; the listing and gnt-backup list -g show it
    changed = api.job("PUT", f"/2/instances/{INSTANCE}/exports/{first}/modify",
                      {"protected": True, "note": "before the upgrade"})
    assert changed == [{"node": "node3", "generation": first, "protected": True,
                        "note": "before the upgrade"}]
    [one] = api.ok("GET", f"/2/instances/{INSTANCE}/exports/{first}")["generations"]
    assert one["protected"] is True and one["note"] == "before the upgrade"
    out = cluster.gnt("gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
                      "-o", "generation,protected,note").stdout
    assert f"{first}|Y|before the upgrade" in out.splitlines()

    # prune: the plan first (nothing removed, no job), then for real
    jobs_before = api.jobs()
    plan = api.ok("PUT", "/2/exports/prune", {"keep_last": 1, "instances": [INSTANCE]},
                  "dry-run=1")
    rows = {r["generation"]: (r["keep"], r["reasons"]) for r in plan["plan"]}
    assert rows[first] == (True, ["protected"]) and rows[second][0] is False
    assert rows[newest][0] is True
    assert gen_dirs(cluster) == [first, second]
    assert [s for _j, s in api.jobs() if (_j, s) not in jobs_before] == [
        ["BACKUP_LIST_GENERATIONS"]]
    result = api.job("PUT", "/2/exports/prune", {"keep_last": 1, "instances": [INSTANCE]})
    assert {r["generation"]: r["removed"] for r in result["plan"]} == {
        first: False, second: True, newest: False}
    assert gen_dirs(cluster) == [first]

    # verify one generation: a job whose report says ok, recorded with the generation
    report = api.job("PUT", f"/2/instances/{INSTANCE}/exports/{first}/verify")
    assert report["ok"] is True
    assert [(g["generation"], g["ok"]) for g in report["generations"]] == [(first, True)]
    [one] = api.ok("GET", f"/2/instances/{INSTANCE}/exports/{first}")["generations"]
    assert one["verify"]["ok"] is True

    # a protected generation is not removed: the job fails with wrong_state
    job_id = api.ok("DELETE", f"/2/instances/{INSTANCE}/exports/{first}")
    with pytest.raises(Exception, match="is protected"):
        api.wait(job_id)
    assert gen_dirs(cluster) == [first]
    api.job("PUT", f"/2/instances/{INSTANCE}/exports/{first}/modify", {"protected": False})
    assert api.job("DELETE", f"/2/instances/{INSTANCE}/exports/{first}") == ["node3"]
    assert gen_dirs(cluster) == []
    expect_refused(api, 404, "GET", f"/2/instances/{INSTANCE}/exports/{first}",
                   named=first)


def test_export_bad_input_changes_nothing(cluster: E2ECluster, api: Api,
                                          web1: str) -> None:
    newest = api.ok("GET", f"/2/instances/{INSTANCE}/exports")["generations"][0]
    gen = newest["generation"]
    base = f"/2/instances/{INSTANCE}/exports/{gen}"
    expect_refused(api, 400, "PUT", f"{base}/modify", {}, named="nothing to change")
    expect_refused(api, 400, "PUT", f"{base}/modify", {"protected": "yes"},
                   named="'body.protected'")
    expect_refused(api, 400, "PUT", f"{base}/modify", {"note": "a\nb"}, named="body.note")
    expect_refused(api, 400, "PUT", f"{base}/modify", {"protected": True, "bogus": 1},
                   named="'body.bogus'")
    expect_refused(api, 400, "PUT", f"{base}/modify", [1], named="JSON object")
    expect_refused(api, 400, "PUT", f"{base}/verify", {"newest_only": True},
                   named="'body.newest_only'")
    expect_refused(api, 400, "PUT", "/2/exports/prune", {}, named="retention policy")
    expect_refused(api, 400, "PUT", "/2/exports/prune", {"keep_last": -1},
                   named="'body.keep_last'")
    expect_refused(api, 400, "PUT", "/2/exports/prune", {"keep_last": 1}, "force=1",
                   named="'force'")
    expect_refused(api, 400, "PUT", "/2/exports/verify", {"exports": "web1"},
                   named="'body.exports'")
    expect_refused(api, 400, "GET", "/2/exports", query="nodes=", named="'nodes[0]'")
    expect_refused(api, 404, "PUT", f"/2/instances/{INSTANCE}/exports/20000101T000000Z"
                                    "/modify", {"protected": True}, named="20000101T000000Z")
    expect_refused(api, 404, "DELETE", f"/2/instances/{INSTANCE}/exports/nosuch",
                   named="nosuch")
    expect_refused(api, 404, "PUT", f"/2/instances/{INSTANCE}/exports/nosuch/verify",
                   named="nosuch")
    expect_refused(api, 404, "GET", "/2/instances/nosuch/exports", named="nosuch")
    expect_refused(api, 404, "DELETE", "/2/instances/nosuch/exports", named="nosuch")
    expect_refused(api, 404, "PUT", "/2/exports/prune", None, "schedule=nosuch",
                   named="nosuch")
    code, _answer = api("PUT", f"{base}/modify", {"protected": True}, write=False)
    assert code == 403
    assert api.ok("GET", f"/2/instances/{INSTANCE}/exports/{gen}")["generations"][0][
        "protected"] is False


def test_schedule_lifecycle_and_run_now(cluster: E2ECluster, api: Api,
                                        web1: str) -> None:
    body = {"name": "nightly", "instances": [INSTANCE], "target_node": "node3",
            "cron": "15 3 * * *", "retention": {"keep_last": 2}}
    assert api.job("POST", "/2/backup-schedules", body) == "nightly"
    assert api.ok("GET", "/2/backup-schedules") == [
        {"id": "nightly", "uri": "/2/backup-schedules/nightly"}]
    status, schedule = api("GET", "/2/backup-schedules/nightly", write=False)
    assert status == 200
    assert (schedule["instances"], schedule["target_node"], schedule["cron"],
            schedule["retention"], schedule["enabled"]) == (
        [INSTANCE], "node3", "15 3 * * *", {"keep_last": 2}, True)
    assert schedule["state"]["last_run"] is None and schedule["state"]["next_run"] > 0
    assert api.job("PUT", "/2/backup-schedules/nightly/modify",
                   {"enabled": False, "overrides": {"bwlimit": 20480}}) == [
        "enabled", "overrides"]
    schedule = api.ok("GET", "/2/backup-schedules/nightly")
    assert schedule["enabled"] is False and schedule["state"]["next_run"] is None
    assert schedule["overrides"] == {"bwlimit": 20480}
    assert schedule["settings"]["bwlimit"] == 20480
    cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "-o", "name,enabled")

    # run-now: planned with dry-run, then the jobs are submitted and answered at once
    plan = api.ok("PUT", "/2/backup-schedules/nightly/run-now", query="dry-run=1")
    assert plan["jobs"] == [] and [(o["instance"], o["status"]) for o in plan[
        "outcomes"]] == [(INSTANCE, "planned")]
    before = api.ok("GET", f"/2/instances/{INSTANCE}/exports")["generations"]
    ran = api.ok("PUT", "/2/backup-schedules/nightly/run-now")
    [job_id] = ran["jobs"]
    assert [(o["instance"], o["status"], o["job_id"]) for o in ran["outcomes"]] == [
        (INSTANCE, "submitted", job_id)]
    assert api.ok("GET", "/2/backup-schedules/nightly")["state"]["jobs"] == [job_id]
    api.wait(job_id)
    # the run's result shows as soon as its jobs are done (the runner records it next pass)
    state = api.ok("GET", "/2/backup-schedules/nightly")["state"]
    assert (state["jobs"], state["last_result"]) == ([], "success")
    after = api.ok("GET", f"/2/instances/{INSTANCE}/exports")["generations"]
    assert len(after) == len(before) + 1
    new = [g for g in after if g["newest"]]
    assert new and new[0]["generation"] not in {g["generation"] for g in before}
    # the runner's next pass (the CLI's list resolves it the same way) sees it finished
    out = cluster.gnt("gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
                      "-o", "name,last_result").stdout
    assert out.splitlines() == ["nightly|success"]

    assert api.job("DELETE", "/2/backup-schedules/nightly") is True
    expect_refused(api, 404, "GET", "/2/backup-schedules/nightly", named="nightly")
    assert api.ok("GET", "/2/backup-schedules") == []


def test_schedule_bad_input_changes_nothing(cluster: E2ECluster, api: Api,
                                            web1: str) -> None:
    api.job("POST", "/2/backup-schedules", {"name": "keep", "tags": ["prod"],
                                            "target_node": "node3", "cron": "@daily"})
    good = {"name": "x", "instances": [INSTANCE], "target_node": "node3", "cron": "@daily"}
    for change, named in (({"cron": "0 25 * * *"}, "'body.cron'"),
                          ({"retention": {"keep_daily": -1}}, "'body.retention.keep_daily'"),
                          ({"enabled": "yes"}, "'body.enabled'"),
                          ({"compress": ""}, "'body.compress'"),
                          ({"overrides": {"timezone": "Mars/Base"}}, "timezone"),
                          ({"unknown": 1}, "'body.unknown'"),
                          ({"target_node": None}, "'target_node'"),
                          ({"instances": [], "tags": []}, "'instances'"),
                          ({"name": "keep"}, "already exists")):
        expect_refused(api, 409 if named == "already exists" else 400, "POST",
                       "/2/backup-schedules", {**good, **change}, named=named)
    expect_refused(api, 400, "POST", "/2/backup-schedules", None, named="needs a JSON body")
    jobs = api.jobs()
    answer = api.clients[True].request("POST", "/2/backup-schedules", raw=b'{"name": "x",',
                                       headers={"Content-Type": "application/json"})
    assert answer.status == 400 and "not valid JSON" in answer.body["explain"]
    assert api.jobs() == jobs
    expect_refused(api, 400, "PUT", "/2/backup-schedules/keep/modify", {},
                   named="nothing to change")
    expect_refused(api, 400, "PUT", "/2/backup-schedules/keep/modify", {"cron": "bad"},
                   named="'body.cron'")
    expect_refused(api, 400, "PUT", "/2/backup-schedules/keep/modify", {"name": "y"},
                   named="'body.name'")
    expect_refused(api, 400, "PUT", "/2/backup-schedules/keep/run-now", query="wait=1",
                   named="'wait'")
    for method, path, body in (("GET", "/2/backup-schedules/nosuch", None),
                               ("PUT", "/2/backup-schedules/nosuch/modify", {"enabled": True}),
                               ("DELETE", "/2/backup-schedules/nosuch", None),
                               ("PUT", "/2/backup-schedules/nosuch/run-now", None)):
        expect_refused(api, 404, method, path, body, named="nosuch")
    code, _answer = api("DELETE", "/2/backup-schedules/keep", write=False)
    assert code == 403
    assert api.ok("GET", "/2/backup-schedules/keep")["tags"] == ["prod"]
