"""RAPI jobs and queries through ganeti-rapi on a real cluster: list, get, wait, cancel, query.

A job is held queued behind another one that waits on something the test
releases (a node's delay RPC, ended by killing that node's daemon): no fixed
sleeps.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support.cluster import E2ECluster
from support.rapi import RapiClient

from ganeti import constants, opcodes, query

pytestmark = pytest.mark.e2e

WAIT = 60.0
INSTANCE = "rapijob1"
ADMIN = "admin"      # write,read (the cluster fixture's users, support.cluster)
READER = "reader"    # no options: read only


class Rapi:
    """The cluster's ganeti-rapi over HTTPS: ``(status, JSON body)`` per request."""

    def __init__(self, cluster: E2ECluster) -> None:
        self.clients = {user: RapiClient(cluster, user) for user in (ADMIN, READER)}

    def __call__(self, method: str, path: str, body: Any = None, query: str = "",
                 user: str = ADMIN) -> tuple[int, Any]:
        answer = self.clients[user].request(method, path, body, query or None)
        return answer.status, answer.body

    def ok(self, method: str, path: str, body: Any = None, query: str = "",
           user: str = ADMIN) -> Any:
        status, answer = self(method, path, body, query, user)
        assert status == 200, (method, path, answer)
        return answer


@pytest.fixture(scope="module")
def rapi(cluster: E2ECluster) -> Iterator[Rapi]:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", INSTANCE)
    yield Rapi(cluster)


def _job_ids(cluster: E2ECluster) -> list[int]:
    with cluster.luxi_client(timeout=WAIT) as cl:
        return [row[0] for row in cl.query_jobs(None, ["id"]) if row is not None]


def test_list_get_wait_and_cancel(cluster: E2ECluster, rapi: Rapi) -> None:
    node3_delay = {"on_master": False, "on_nodes": ["node3"]}
    with cluster.luxi_client(timeout=WAIT) as cl:
        # the blocker holds node3's lock until released; the waiter needs the same lock
        blocker = cl.submit_job([opcodes.OpTestDelay.create(duration=3600, **node3_delay)])
        cluster.wait_job_status(blocker, {constants.OP_STATUS_RUNNING}, timeout=WAIT)
        waiter = cl.submit_job([opcodes.OpTestDelay.create(duration=0, **node3_delay)])
    cluster.wait_job_status(waiter, {constants.OP_STATUS_WAITING}, timeout=WAIT)
    released = False
    try:
        listed = rapi.ok("GET", "/2/jobs", user=READER)
        assert {"id": blocker, "uri": f"/2/jobs/{blocker}"} in listed
        assert {"id": waiter, "uri": f"/2/jobs/{waiter}"} in listed
        assert [j["id"] for j in listed] == sorted(_job_ids(cluster))
        bulk = {j["id"]: j for j in rapi.ok("GET", "/2/jobs", query="bulk=1")}
        assert bulk[blocker]["status"] == constants.OP_STATUS_RUNNING
        assert bulk[waiter]["status"] == constants.OP_STATUS_WAITING
        assert bulk[waiter]["summary"] == ["TEST_DELAY(0.0)"]
        job = rapi.ok("GET", f"/2/jobs/{waiter}")
        assert job["status"] == constants.OP_STATUS_WAITING
        assert job["ops"][0]["on_nodes"] == ["node3"] and job["end_ts"] is None

        # a long poll on the blocker: parked in masterd until the blocker changes
        answers: list[tuple[int, Any]] = []
        poll = threading.Thread(target=lambda: answers.append(rapi(
            "GET", f"/2/jobs/{blocker}/wait",
            {"fields": ["status"], "previous_job_info": [constants.OP_STATUS_RUNNING],
             "previous_log_serial": None})))
        poll.start()

        # cancel: a dry run changes nothing, the real one cancels the waiting job only
        assert rapi.ok("DELETE", f"/2/jobs/{waiter}", query="dry-run=1") == \
            [True, f"Job {waiter} would be canceled (dry run)"]
        assert rapi.ok("GET", f"/2/jobs/{waiter}")["status"] == constants.OP_STATUS_WAITING
        ok, message = rapi.ok("DELETE", f"/2/jobs/{waiter}")
        assert ok is True and f"Job {waiter}" in message
        assert cluster.wait_job_status(waiter, set(constants.JOBS_FINALIZED), timeout=WAIT) == \
            constants.OP_STATUS_CANCELED
        # the waiter's own wait answers at once: it moved past what the caller saw
        changed = rapi.ok("GET", f"/2/jobs/{waiter}/wait",
                          {"fields": ["status", "end_ts"],
                           "previous_job_info": [constants.OP_STATUS_WAITING, None]})
        assert changed["job_info"][0] == constants.OP_STATUS_CANCELED
        ok, message = rapi.ok("DELETE", f"/2/jobs/{blocker}")
        assert ok is False and "running" in message
        assert not answers and poll.is_alive()   # the blocker has not changed

        cluster.kill_noded("node3", WAIT)  # ends the delay RPC at once
        released = True
        poll.join(WAIT)
        assert not poll.is_alive()
        ((status, body),) = answers
        assert status == 200 and body["job_info"] == [constants.OP_STATUS_ERROR]
        final = rapi.ok("GET", f"/2/jobs/{blocker}")
        assert final["status"] == constants.OP_STATUS_ERROR
        assert "node3" in json.dumps(final["opresult"])
    finally:
        if not released:
            cluster.kill_noded("node3", WAIT)  # ends the delay RPC at once
        cluster.start(log=lambda _msg: None)


def test_wait_follows_a_job_with_log_entries(cluster: E2ECluster, rapi: Rapi) -> None:
    with cluster.luxi_client(timeout=WAIT) as cl:
        job = cl.submit_job([opcodes.OpTestDelay.create(duration=0, repeat=3)])
    # what Ganeti's client does: ask again with what it has seen until the job ends
    prev_info: Any = None
    serial: Any = None
    messages: list[str] = []
    for _ in range(100):
        answer = rapi.ok("GET", f"/2/jobs/{job}/wait",
                         {"fields": ["status"], "previous_job_info": prev_info,
                          "previous_log_serial": serial})
        if answer is None:
            continue
        prev_info = answer["job_info"]
        for entry in answer["log_entries"]:
            serial = entry[0]
            messages.append(entry[3])
        if prev_info[0] in constants.JOBS_FINALIZED:
            break
    assert prev_info == [constants.OP_STATUS_SUCCESS]
    assert [m for m in messages if "iteration" in m] == \
        [f"Test delay iteration {i}/3" for i in (1, 2, 3)]
    assert rapi.ok("GET", f"/2/jobs/{job}")["opresult"] == [True]


def test_bad_job_requests_change_nothing(cluster: E2ECluster, rapi: Rapi) -> None:
    before = _job_ids(cluster)
    missing = max(before, default=0) + 1000
    assert rapi("GET", f"/2/jobs/{missing}")[0] == 404
    assert rapi("GET", f"/2/jobs/{missing}/wait", {"fields": ["status"]})[0] == 404
    assert rapi("DELETE", f"/2/jobs/{missing}") == (200, [False, f"Job {missing} not found"])
    for path in ("/2/jobs/abc", "/2/jobs/-3", "/2/jobs/1.0/wait"):
        status, body = rapi("GET", path, {"fields": ["status"]} if "wait" in path else None)
        assert status == 400 and "job_id" in body["explain"]
    status, body = rapi("GET", f"/2/jobs/{before[0]}/wait", {"fields": ["nosuchfield"]})
    assert status == 400 and "body.fields" in body["explain"]
    assert rapi("DELETE", f"/2/jobs/{before[0]}", user=READER)[0] == 403
    assert _job_ids(cluster) == before


def _values(answer: dict[str, Any]) -> list[list[Any]]:
    assert all(status == query.RS_NORMAL for row in answer["data"] for status, _ in row)
    return [[value for _, value in row] for row in answer["data"]]


def test_queries_with_filters(cluster: E2ECluster, rapi: Rapi) -> None:
    nodes = rapi.ok("GET", "/2/query/node", query="fields=name,master", user=READER)
    assert [f["name"] for f in nodes["fields"]] == ["name", "master"]
    assert sorted(_values(nodes)) == [["node1", True], ["node2", False], ["node3", False]]
    master = rapi.ok("PUT", "/2/query/node", {"fields": ["name"], "qfilter": ["?", "master"]})
    assert _values(master) == [["node1"]]
    # the same answer as LUXI's Query, which the gnt-* commands use
    flt = ["&", ["=~", "name", "^rapijob"], ["==", "pnode", "node2"]]
    got = rapi.ok("PUT", "/2/query/instance",
                  {"fields": ["name", "pnode", "disk_template"], "qfilter": flt, "filter": flt})
    assert _values(got) == [[INSTANCE, "node2", "file"]]
    with cluster.luxi_client(timeout=WAIT) as cl:
        assert got == cl.query("instance", ["name", "pnode", "disk_template"], flt)
    none = rapi.ok("PUT", "/2/query/instance", {"fields": ["name"],
                                                "qfilter": ["=", "pnode", "node3"]})
    assert none["data"] == []
    done = rapi.ok("PUT", "/2/query/job", {"fields": ["id", "status"],
                                           "qfilter": ["==", "status", "success"]})
    assert done["data"] and all(row[1] == [query.RS_NORMAL, "success"] for row in done["data"])
    fields = rapi.ok("GET", "/2/query/instance/fields", query="fields=name,nosuch")
    assert [(f["name"], f["kind"]) for f in fields["fields"]] == \
        [("name", "text"), ("nosuch", "unknown")]


@pytest.mark.parametrize(("body", "named"), [
    ({"fields": ["name"], "qfilter": ["=", "nosuchfield", "x"]}, "body.qfilter"),
    ({"fields": ["name"], "qfilter": ["=~", "name", "(("]}, "body.qfilter"),
    ({"fields": ["name"], "qfilter": ["==", "oper_ram", "lots"]}, "body.qfilter"),
    ({"fields": ["name"], "filter": ["frobnicate", "name"]}, "body.filter"),
    ({"fields": ["name"], "qfilter": "name == rapijob1"}, "body.qfilter"),
    ({"fields": "name"}, "body.fields"),
])
def test_bad_filters_are_400_and_change_nothing(cluster: E2ECluster, rapi: Rapi,
                                                body: dict[str, Any], named: str) -> None:
    before = _job_ids(cluster)
    status, answer = rapi("PUT", "/2/query/instance", body)
    assert status == 400 and named in answer["explain"], answer
    assert _job_ids(cluster) == before
    assert cluster.instance_conf(INSTANCE) is not None


def test_unknown_query_resource_is_404(rapi: Rapi) -> None:
    status, body = rapi("GET", "/2/query/martians", query="fields=name")
    assert status == 404 and "martians" in body["explain"]
    assert rapi("GET", "/2/query/martians/fields")[0] == 404
