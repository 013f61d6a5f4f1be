"""The job and query resources: Ganeti 3.0's shapes and every bad input.

Handlers run through ``routes.dispatch`` (the whole pipeline short of HTTP)
with a real LUXI client talking to a LUXI server in front of an in-memory job
queue (support.luxi_fakes), so the arguments really cross the wire.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.luxi_fakes import FakeQueue, running_server

from ganeti import constants, luxi, opcodes, query, query_resources
from ganeti.rapi import resources, routes
from ganeti.rapi.resources import jobs

ADMIN = routes.User("admin", read=True, write=True)
READER = routes.User("reader", read=True, write=False)


class Backend:
    def __init__(self, address: Path) -> None:
        self.address = address

    def client(self) -> luxi.Client:
        return luxi.Client(address=str(self.address))


class Api:
    """dispatch() as a tiny client: status and parsed JSON body."""

    def __init__(self, backend: Backend, queue: FakeQueue) -> None:
        self.backend = backend
        self.queue = queue

    def __call__(self, method: str, path: str, body: Any = None, query: str = "",
                 user: routes.User | None = ADMIN, raw: bytes | None = None
                 ) -> tuple[int, Any]:
        data = raw if raw is not None else b"" if body is None else json.dumps(body).encode()
        resp = routes.dispatch(self.backend, method, path, query, data, user)
        return resp.status, json.loads(resp.body) if resp.body else None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    resources.load_all()
    queue = FakeQueue()
    address = tmp_path / "master.sock"
    with running_server(address, queue):
        yield Api(Backend(address), queue)


def _submit(queue: FakeQueue, count: int = 1) -> list[int]:
    return [queue.submit_job([opcodes.OpTestDelay.create(duration=0)]) for _ in range(count)]


def _assert_error(answer: tuple[int, Any], code: int, *words: str) -> None:
    status, body = answer
    assert status == code, body
    assert body["code"] == code and set(body) == {"code", "message", "explain"}
    for word in words:
        assert word in body["explain"], body


# --- /2/jobs ---------------------------------------------------------------------------


def test_list_jobs_ids_and_uris_sorted(api: Api) -> None:
    assert api("GET", "/2/jobs") == (200, [])
    _submit(api.queue, 3)
    assert api("GET", "/2/jobs") == (200, [{"id": i, "uri": f"/2/jobs/{i}"} for i in (1, 2, 3)])
    # only the ids were asked of the master
    assert api.queue.queried_fields[-1] == ["id"]


def test_list_jobs_bulk_has_ganetis_bulk_fields(api: Api) -> None:
    _submit(api.queue, 2)
    status, body = api("GET", "/2/jobs", query="bulk=1")
    assert status == 200
    assert [job["id"] for job in body] == [1, 2]
    assert all(set(job) == set(jobs.J_FIELDS_BULK) for job in body)
    assert body[0]["status"] == constants.OP_STATUS_QUEUED
    assert body[0]["ops"][0]["OP_ID"] == "OP_TEST_DELAY"
    assert body[0]["summary"] == ["TEST_DELAY(0.0)"]


def test_jobs_bad_parameters(api: Api) -> None:
    _assert_error(api("GET", "/2/jobs", query="bulk=maybe"), 400, "bulk")
    _assert_error(api("GET", "/2/jobs", query="sort=id"), 400, "sort")
    _assert_error(api("GET", "/2/jobs", user=None), 401)
    _assert_error(api("POST", "/2/jobs"), 405)


# --- /2/jobs/{job_id} --------------------------------------------------------------------


def test_get_job_has_ganetis_fields(api: Api) -> None:
    (job,) = _submit(api.queue)
    api.queue.update(job, log="hello", result=True)
    status, body = api("GET", f"/2/jobs/{job}")
    assert status == 200
    assert list(body) == list(jobs.J_FIELDS)
    assert body["id"] == job and body["opresult"] == [True]
    assert body["oplog"][0][0][3] == "hello"
    # readers may look at jobs
    assert api("GET", f"/2/jobs/{job}", user=READER)[0] == 200


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "0x10", "%C2%B2", "1e3", "9" * 19,
                                 "1" * 5000])
def test_bad_job_id_is_400_naming_it(api: Api, bad: str) -> None:
    for method, suffix, body in (("GET", "", None), ("DELETE", "", None),
                                 ("GET", "/wait", {"fields": ["status"]})):
        _assert_error(api(method, f"/2/jobs/{bad}{suffix}", body), 400, "job_id")


def test_unknown_job_is_404(api: Api) -> None:
    _assert_error(api("GET", "/2/jobs/42"), 404, "Job 42")
    _assert_error(api("GET", "/2/jobs/42/wait", {"fields": ["status"]}), 404, "Job 42")


def test_cancel_job_answers_ganetis_pair(api: Api) -> None:
    queued, running = _submit(api.queue, 2)
    api.queue.update(running, constants.OP_STATUS_RUNNING)
    assert api("DELETE", f"/2/jobs/{queued}") == (200, [True, f"Job {queued} canceled"])
    assert api.queue.jobs[queued].status == constants.OP_STATUS_CANCELED
    status, body = api("DELETE", f"/2/jobs/{running}")
    assert status == 200 and body[0] is False
    assert api.queue.jobs[running].status == constants.OP_STATUS_RUNNING


def test_cancel_dry_run_cancels_nothing(api: Api) -> None:
    queued, running = _submit(api.queue, 2)
    api.queue.update(running, constants.OP_STATUS_RUNNING)
    assert api("DELETE", f"/2/jobs/{queued}", query="dry-run=1") == \
        (200, [True, f"Job {queued} would be canceled (dry run)"])
    assert api("DELETE", f"/2/jobs/{running}", query="dry-run=1") == \
        (200, [False, f"Job {running} is running and would not be canceled (dry run)"])
    assert api("DELETE", "/2/jobs/99", query="dry-run=1") == (200, [False, "Job 99 not found"])
    assert {j.status for j in api.queue.jobs.values()} == {constants.OP_STATUS_QUEUED,
                                                           constants.OP_STATUS_RUNNING}


def test_cancel_needs_write(api: Api) -> None:
    (job,) = _submit(api.queue)
    _assert_error(api("DELETE", f"/2/jobs/{job}", user=READER), 403, "reader")
    assert api.queue.jobs[job].status == constants.OP_STATUS_QUEUED


# --- /2/jobs/{job_id}/wait ---------------------------------------------------------------


def test_wait_returns_at_once_when_the_caller_is_behind(api: Api) -> None:
    (job,) = _submit(api.queue)
    api.queue.update(job, log="first")
    status, body = api("GET", f"/2/jobs/{job}/wait",
                       {"fields": ["status"], "previous_job_info": None,
                        "previous_log_serial": None})
    assert status == 200
    assert body["job_info"] == [constants.OP_STATUS_QUEUED]
    assert [entry[3] for entry in body["log_entries"]] == ["first"]
    # Ganeti's timeout: 10 s per request
    assert api.queue.wait_timeouts == [jobs.WAIT_TIMEOUT] == [10.0]


def test_wait_blocks_until_the_job_changes(api: Api) -> None:
    (job,) = _submit(api.queue)
    answers: list[tuple[int, Any]] = []
    waiter = threading.Thread(target=lambda: answers.append(api(
        "GET", f"/2/jobs/{job}/wait",
        {"fields": ["status"], "previous_job_info": [constants.OP_STATUS_QUEUED]})))
    waiter.start()
    deadline = time.monotonic() + 10
    while api.queue.waiters == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert api.queue.waiters == 1 and not answers    # parked in the master
    api.queue.update(job, constants.OP_STATUS_RUNNING)
    waiter.join(10)
    assert answers == [(200, {"job_info": [constants.OP_STATUS_RUNNING], "log_entries": []})]


def test_wait_without_change_answers_null(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "WAIT_TIMEOUT", 0.2)
    (job,) = _submit(api.queue)
    assert api("GET", f"/2/jobs/{job}/wait",
               {"fields": ["status"], "previous_job_info": [constants.OP_STATUS_QUEUED],
                "previous_log_serial": 0}) == (200, None)


def test_waiters_beyond_the_limit_never_reach_the_master(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    # masterd serves a bounded number of connections; waits must leave it some
    slots = threading.BoundedSemaphore(2)
    monkeypatch.setattr(jobs, "_WAIT_SLOTS", slots)
    monkeypatch.setattr(jobs, "WAIT_TIMEOUT", 0.2)
    (job,) = _submit(api.queue)
    body = {"fields": ["status"], "previous_job_info": [constants.OP_STATUS_QUEUED]}
    assert api("GET", f"/2/jobs/{job}/wait", body) == (200, None)
    assert api.queue.wait_timeouts == [0.2]
    # every slot taken (by other waiters): "no change" after the timeout, master not asked
    assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
    assert api("GET", f"/2/jobs/{job}/wait", body) == (200, None)
    assert api.queue.wait_timeouts == [0.2]
    # a slot freed: the next wait reaches the master again
    slots.release()
    api.queue.update(job, constants.OP_STATUS_RUNNING)
    assert api("GET", f"/2/jobs/{job}/wait", body)[1]["job_info"] == ["running"]
    assert len(api.queue.wait_timeouts) == 2
    # and gives its slot back, even when the master refused it
    _assert_error(api("GET", f"/2/jobs/{job}/wait", {"fields": ["nosuch"]}), 400)
    assert slots.acquire(blocking=False) and not slots.acquire(blocking=False)


@pytest.mark.parametrize(("body", "words"), [
    (None, ("body",)),
    ({}, ("body.fields",)),
    ({"fields": "status"}, ("body.fields",)),
    ({"fields": [1]}, ("body.fields",)),
    ({"fields": ["status"], "previous_job_info": "queued"}, ("body.previous_job_info",)),
    ({"fields": ["status"], "previous_log_serial": "3"}, ("body.previous_log_serial",)),
    ({"fields": ["status"], "previous_log_serial": True}, ("body.previous_log_serial",)),
    ({"fields": ["status"], "timeout": 60}, ("body.timeout",)),
    ({"fields": ["nosuchfield"]}, ("body.fields", "nosuchfield")),
    ([], ("body",)),
])
def test_wait_bad_body_is_400_naming_the_field(api: Api, body: Any,
                                               words: tuple[str, ...]) -> None:
    (job,) = _submit(api.queue)
    _assert_error(api("GET", f"/2/jobs/{job}/wait", body), 400, *words)


def test_wait_bad_json_and_access(api: Api) -> None:
    (job,) = _submit(api.queue)
    _assert_error(api("GET", f"/2/jobs/{job}/wait", raw=b"{fields"), 400, "JSON")
    # as in Ganeti: a blocking call that shows job details needs write access
    _assert_error(api("GET", f"/2/jobs/{job}/wait", {"fields": ["status"]}, user=READER),
                  403)
    assert api.queue.wait_timeouts == []


# --- /2/query/{resource} ---------------------------------------------------------------


def test_query_get_fields_split_as_ganeti(api: Api) -> None:
    _submit(api.queue, 2)
    status, body = api("GET", "/2/query/job", query="fields=id,%20status%09,nosuch%20")
    assert status == 200
    assert [f["name"] for f in body["fields"]] == ["id", "status", "nosuch"]
    assert body["fields"][2]["kind"] == "unknown"
    assert body["data"] == [[[0, 1], [0, "queued"], [query.RS_UNKNOWN, None]],
                            [[0, 2], [0, "queued"], [query.RS_UNKNOWN, None]]]
    # Ganeti's client sends a reason with queries
    assert api("GET", "/2/query/job", query="fields=id&reason=look", user=READER)[0] == 200


def test_query_get_needs_fields(api: Api) -> None:
    _assert_error(api("GET", "/2/query/job"), 400, "fields")
    # GET does not filter (as in Ganeti): a filter parameter is refused, not ignored
    _assert_error(api("GET", "/2/query/job", query="fields=id&filter=x"), 400, "filter")
    _assert_error(api("GET", "/2/query/job", query="fields=id&qfilter=x"), 400, "qfilter")


def test_query_put_with_filter(api: Api) -> None:
    _submit(api.queue, 3)
    api.queue.update(2, constants.OP_STATUS_RUNNING)
    for key in ("qfilter", "filter"):
        status, body = api("PUT", "/2/query/job",
                           {"fields": ["id"], key: ["==", "status", "running"]})
        assert (status, body["data"]) == (200, [[[0, 2]]])
    # what Ganeti's client sends: both names, the same filter; ids may be strings
    flt = ["|", ["=", "id", "1"], ["=", "id", 3]]
    status, body = api("PUT", "/2/query/job", {"fields": ["id"], "qfilter": flt, "filter": flt},
                       user=READER)
    assert (status, body["data"]) == (200, [[[0, 1]], [[0, 3]]])
    # fields from the query string (Ganeti's QA does this), null filter: everything
    status, body = api("PUT", "/2/query/job", {"qfilter": None}, query="fields=id")
    assert (status, len(body["data"])) == (200, 3)


@pytest.mark.parametrize(("body", "words"), [
    ({"fields": ["id"], "qfilter": ["nosuchop", "id", 1]}, ("body.qfilter", "nosuchop")),
    ({"fields": ["id"], "qfilter": ["=", "nosuchfield", 1]}, ("body.qfilter", "nosuchfield")),
    ({"fields": ["id"], "qfilter": ["=~", "status", "("]}, ("body.qfilter",)),
    ({"fields": ["id"], "qfilter": ["<", "id", "x"]}, ("body.qfilter",)),
    ({"fields": ["id"], "qfilter": ["!", ["=", "id", 1], ["=", "id", 2]]}, ("body.qfilter",)),
    ({"fields": ["id"], "qfilter": []}, ("body.qfilter",)),
    ({"fields": ["id"], "qfilter": "status == running"}, ("body.qfilter",)),
    ({"fields": ["id"], "filter": ["=", "nosuchfield", 1]}, ("body.filter", "nosuchfield")),
    ({"fields": ["id"], "qfilter": ["=", "id", 1], "filter": ["=", "id", 2]},
     ("body.filter", "body.qfilter")),
    ({"fields": "id"}, ("body.fields",)),
    ({"fields": ["id"], "sort": "id"}, ("body.sort",)),
    ({}, ("body.fields",)),
    ([["id"]], ("body",)),
    (None, ("body",)),
])
def test_query_put_bad_input_is_400_naming_it(api: Api, body: Any,
                                              words: tuple[str, ...]) -> None:
    _submit(api.queue, 1)
    _assert_error(api("PUT", "/2/query/job", body), 400, *words)
    assert list(api.queue.jobs) == [1]   # nothing was submitted


def test_query_deep_filter_is_400(api: Api) -> None:
    deep: list[Any] = ["=", "id", 1]
    for _ in range(20):
        deep = ["!", deep]
    _assert_error(api("PUT", "/2/query/job", {"fields": ["id"], "qfilter": deep}), 400,
                  "body.qfilter", "deeper")


def test_unknown_query_resource_is_404(api: Api) -> None:
    _assert_error(api("GET", "/2/query/martians", query="fields=name"), 404, "martians")
    _assert_error(api("PUT", "/2/query/martians", {"fields": ["name"]}), 404, "martians")
    _assert_error(api("GET", "/2/query/martians/fields"), 404, "martians")
    _assert_error(api("DELETE", "/2/query/job"), 405)


def test_every_queryable_resource_is_reachable(api: Api) -> None:
    query_resources.register_all()
    status, body = api("GET", "/2/query/lock/fields")
    assert status == 200 and "name" in [f["name"] for f in body["fields"]]
    # the 404 lists what can be queried
    _, body = api("GET", "/2/query/martians/fields")
    for name in ("instance", "node", "job", "export", "group", "network", "lock"):
        assert name in body["explain"]


# --- /2/query/{resource}/fields ----------------------------------------------------------


def test_query_fields(api: Api) -> None:
    status, body = api("GET", "/2/query/job/fields")
    assert status == 200
    names = [f["name"] for f in body["fields"]]
    assert {"id", "status", "ops", "opresult"} <= set(names)
    assert set(body["fields"][0]) == {"name", "title", "kind", "doc"}
    status, body = api("GET", "/2/query/job/fields", query="fields=status,%20_unknown!")
    assert status == 200
    assert [(f["name"], f["kind"]) for f in body["fields"]] == \
        [("status", "text"), ("_unknown!", "unknown")]
    assert api("GET", "/2/query/job/fields", query="fields=id&reason=why",
               user=READER)[0] == 200
    _assert_error(api("GET", "/2/query/job/fields", query="bulk=1"), 400, "bulk")
