"""Jobs: `/2/jobs`, `/2/jobs/{job_id}` and the long poll `/2/jobs/{job_id}/wait`.

Shapes are Ganeti 3.0's (rlib2's `J_FIELDS`/`J_FIELDS_BULK`, the `{"id",
"uri"}` list, `{"job_info", "log_entries"}` or null from the wait), so its
client library works unchanged.  Every answer comes from masterd over LUXI;
the wait is one blocking WaitForJobChange call of at most
:data:`WAIT_TIMEOUT` seconds, woken by the queue's change notification: the
daemon holds no state and polls nothing itself.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ganeti import constants, errors, luxi
from ganeti.rapi import http, routes

# the fields of a job as GET /2/jobs?bulk=1 answers them (rlib2.J_FIELDS_BULK) ...
J_FIELDS_BULK: tuple[str, ...] = (
    "id", "ops", "status", "summary", "opstatus", "received_ts", "start_ts", "end_ts")
# ... and as GET /2/jobs/{job_id} does (rlib2.J_FIELDS)
J_FIELDS: tuple[str, ...] = (*J_FIELDS_BULK, "oplog", "opresult")

# How long one /wait request may wait for a change (Ganeti's _WFJC_TIMEOUT);
# clients poll again after a null answer
WAIT_TIMEOUT = 10.0

# At most this many /wait requests hold a connection to masterd at once: each one
# holds a connection (and a masterd thread) for up to WAIT_TIMEOUT, and masterd
# serves LUXI_MAX_CONNECTIONS in all; with more waiters it refused the gnt-*
# commands and every other RAPI request (measured: 300 waits made it 503 all of
# them, and the refused waiters re-polled in a busy loop).  A wait that finds
# no free slot within WAIT_TIMEOUT answers null (no change seen): its client
# polls again, as after any quiet 10 s.
MAX_WAITERS = constants.LUXI_MAX_CONNECTIONS // 2
_WAIT_SLOTS = threading.BoundedSemaphore(MAX_WAITERS)

# statuses a job can still be canceled in (what CancelJob accepts; see JobQueue.cancel_job)
_CANCELABLE = frozenset({constants.OP_STATUS_QUEUED, constants.OP_STATUS_WAITING,
                         constants.OP_STATUS_CANCELING})

_BULK = routes.Param("bulk", bool, "Answer every job's details instead of ids and URIs",
                     False)
_DRY_RUN = routes.Param(
    "dry-run", bool, "Only say whether the job would be canceled (Ganeti cancels anyway)",
    False)


# job ids are serial numbers; a longer one is a typo (and int() of thousands of digits fails)
_MAX_JOB_ID = 2**63 - 1


def job_id(req: routes.Request) -> int:
    """The path's job id; a 400 naming it unless it is a decimal number."""
    text = req.args["job_id"]
    if not (text.isascii() and text.isdigit() and len(text) <= 19
            and int(text) <= _MAX_JOB_ID):
        raise http.HttpBadRequest(f"job_id: {text!r:.40} is not a job id (a decimal number"
                                  f" up to {_MAX_JOB_ID})")
    return int(text)


def job_uri(job: int) -> str:
    return f"/2/jobs/{job}"


@routes.route("/2/jobs", "GET", access=routes.READ, params=(_BULK,),
              result="[{id, uri}, ...], or with bulk=1 a dict per job (J_FIELDS_BULK)")
def list_jobs(req: routes.Request) -> Any:
    """The jobs of the queue (archived ones are not listed), by id.

    With `bulk=1` each job's id, ops, status, summary, opstatus and
    timestamps instead of `{"id", "uri"}`.
    """
    fields = list(J_FIELDS_BULK) if req.params["bulk"] else ["id"]
    with req.client() as cl:
        rows = [row for row in cl.query_jobs(None, fields) if row is not None]
    if req.params["bulk"]:
        return [dict(zip(fields, row, strict=True)) for row in rows]
    return [{"id": row[0], "uri": job_uri(row[0])} for row in sorted(rows)]


@routes.route("/2/jobs/{job_id}", "GET", access=routes.READ,
              result="the job's fields (J_FIELDS) as a dict")
def get_job(req: routes.Request) -> Any:
    """One job: id, ops, status, summary, opstatus, timestamps, oplog and opresult.

    404 when the queue has no such job (or it was archived).
    """
    job = job_id(req)
    with req.client() as cl:
        (row,) = cl.query_jobs([job], list(J_FIELDS))
    if row is None:
        raise http.HttpNotFound(f"Job {job} not found")
    return dict(zip(J_FIELDS, row, strict=True))


@routes.route("/2/jobs/{job_id}", "DELETE", access=routes.WRITE, params=(_DRY_RUN,),
              result="[success, message]")
def cancel_job(req: routes.Request) -> Any:
    """Cancel a job that has not started yet; `[success, message]` as Ganeti answers.

    A running or finished job is not canceled (`[false, why]`, still 200, as
    in Ganeti; so is an unknown job).  With `dry-run=1` nothing is canceled:
    the answer says whether it would be (Ganeti 3.0 ignores the parameter and
    cancels).
    """
    job = job_id(req)
    with req.client() as cl:
        if not req.params["dry-run"]:
            ok, message = cl.cancel_job(job)
            return [ok, message]
        (row,) = cl.query_jobs([job], ["status"])
    if row is None:
        return [False, f"Job {job} not found"]
    if row[0] in _CANCELABLE:
        return [True, f"Job {job} would be canceled (dry run)"]
    return [False, f"Job {job} is {row[0]} and would not be canceled (dry run)"]


class WaitBody(BaseModel):
    """What Ganeti's client sends to /wait (a GET with a JSON body)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    fields: list[str] = Field(description="The job fields to watch for changes")
    previous_job_info: list[Any] | None = Field(
        None, description="The field values received last (null: none yet)")
    previous_log_serial: int | None = Field(
        None, description="The highest log serial received so far (null: none yet)")


@routes.route("/2/jobs/{job_id}/wait", "GET", access=routes.WRITE,
              body=routes.Body(WaitBody, description="Fields and what was seen so far"),
              result="{job_info, log_entries}, or null when nothing changed in 10 s")
def wait_for_job_change(req: routes.Request) -> Any:
    """Wait up to 10 seconds for a job's fields or log to change (a long poll).

    Answers as soon as the job's `fields` differ from `previous_job_info`
    or it logged past `previous_log_serial` (or it is finished):
    `{"job_info": [values...], "log_entries": [...]}`; null after 10 seconds
    without a change (ask again).  404 for an unknown job.  Needs write access,
    as in Ganeti: each waiting request holds a connection to the master.  At
    most 128 requests (half of masterd's connection limit) wait in the master
    at once; one more waits up to 10 seconds for a turn, else answers null.
    """
    job = job_id(req)
    assert isinstance(req.data, WaitBody)
    body = req.data
    if not _WAIT_SLOTS.acquire(timeout=WAIT_TIMEOUT):
        return None
    try:
        with req.client() as cl:
            result = cl.wait_for_job_change_once(job, body.fields, body.previous_job_info,
                                                 body.previous_log_serial, WAIT_TIMEOUT)
    except errors.OpPrereqError as err:
        # the job id and the body's types are checked: the master refused a field name
        if err.ecode != errors.ECODE_INVAL:
            raise
        raise http.HttpBadRequest(f"body.fields: {err.args[0]}") from None
    finally:
        _WAIT_SLOTS.release()
    if result is None:
        raise http.HttpNotFound(f"Job {job} not found")
    if result == luxi.JOB_NOTCHANGED:
        return None
    job_info, log_entries = result
    return {"job_info": job_info, "log_entries": log_entries}
