"""The job archive as queries read it: a real queue on sqlite, archived jobs listed on
request (the ``archived`` field), with their results and logs, after a restart too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.jqueue_fakes import FakeExecutor, op, running_queue, wait_status

from ganeti import constants, errors, query, query_resources
from ganeti.jqueue import JobQueue, OpExecCallbacks
from ganeti.server.luxi_methods import MasterBackend

SUCCESS = constants.OP_STATUS_SUCCESS
ERROR = constants.OP_STATUS_ERROR


def _jobs(queue: JobQueue, fields: list[str], qfilter: Any = None) -> list[list[Any]]:
    query_resources.register_all()
    result = query.query("job", fields, qfilter, MasterBackend(queue))
    return [[value for _status, value in row] for row in result["data"]]


def test_archived_jobs_are_listed_when_the_field_is_asked(tmp_path: Path) -> None:
    executor = FakeExecutor()

    def noisy(_op: Any, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        cbs.feedback(constants.ELOG_MESSAGE, "working hard")
        raise errors.OpExecError("it broke")
    executor.scripts["bad"] = noisy
    with running_queue(tmp_path / "queue.db", executor) as queue:
        old = queue.submit_job([op("bad")])
        assert wait_status(queue, old) == ERROR
        live = queue.submit_job([op("good")])
        assert wait_status(queue, live) == SUCCESS
        assert queue.archive_job(old)
        # without the field: only the live job, and the archive is not read
        assert _jobs(queue, ["id"]) == [[live]]
        rows = _jobs(queue, ["id", "status", "archived", "opresult", "oplog"])
        assert [r[:3] for r in rows] == [[old, ERROR, True], [live, SUCCESS, False]]
        assert rows[0][3] == [["OpExecError", ["it broke"]]]
        assert [entry[3] for entry in rows[0][4][0]] == ["working hard"]
        # a filter on the archive column, and ids of archived jobs
        assert _jobs(queue, ["id"], ["?", "archived"]) == [[old]]
        assert _jobs(queue, ["id", "archived"], ["==", "id", old]) == [[old, True]]
        assert queue.query_archived_jobs(["id", "summary"]) == [[old, ["TEST_DELAY(0.0)"]]]
        # the live query still says the archived job is gone
        assert queue.query_jobs([old], ["id"]) == [None]
    # after a restart the archive is still readable, and still apart from the live jobs
    with running_queue(tmp_path / "queue.db", executor) as queue:
        assert _jobs(queue, ["id"]) == [[live]]
        assert _jobs(queue, ["id", "archived"]) == [[old, True], [live, False]]


def test_archive_read_skips_logs_unless_asked(tmp_path: Path) -> None:
    executor = FakeExecutor()

    def chatty(_op: Any, cbs: OpExecCallbacks) -> Any:
        cbs.notify_start()
        cbs.feedback(constants.ELOG_MESSAGE, "hello")
        return True
    executor.scripts["chatty"] = chatty
    with running_queue(tmp_path / "queue.db", executor) as queue:
        job_id = queue.submit_job([op("chatty")])
        assert wait_status(queue, job_id) == SUCCESS
        assert queue.archive_job(job_id)
        store = queue._store
        (with_log,) = store.load_archived_jobs(with_log=True)
        (without,) = store.load_archived_jobs(with_log=False)
        assert [e.message for e in with_log.ops[0].log] == ["hello"]
        assert without.ops[0].log == [] and without.archived and with_log.archived


class _ArchivedInBetween:
    """A queue whose job 1 is archived between the live read and the archive read."""

    def query_jobs(self, job_ids: Any, fields: list[str]) -> list[Any]:
        return [[{"id": 1, "archived": False, "status": SUCCESS}[f] for f in fields],
                [{"id": 2, "archived": False, "status": SUCCESS}[f] for f in fields]]

    def query_archived_jobs(self, fields: list[str]) -> list[Any]:
        return [[{"id": 1, "archived": True, "status": SUCCESS}[f] for f in fields]]


def test_a_job_archived_during_the_query_is_listed_once_as_archived() -> None:
    query_resources.register_all()
    backend = MasterBackend(_ArchivedInBetween())  # type: ignore[arg-type]
    rows = query.query("job", ["id", "archived"], None, backend)["data"]
    assert [[value for _status, value in row] for row in rows] == [[1, True], [2, False]]
