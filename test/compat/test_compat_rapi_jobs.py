"""Ganeti 3.0's own RAPI client (python3-ganeti-rapi) on our jobs and query resources.

GetJobs (bulk and not), GetJobStatus, WaitForJobChange, WaitForJobCompletion,
CancelJob, Query (with filters), QueryFields and client_utils.PollJob (how
move-instance follows its jobs), run in Ganeti's interpreter
against the cluster's ganeti-rapi.  Several calls go in one interpreter run
(each run costs a start of Ganeti's Python).  A job is held waiting behind a
blocker that the test releases (node3's delay RPC, ended by killing node3's
daemon), not behind a fixed sleep.
"""

from __future__ import annotations

import textwrap
import threading
from typing import Any

from support.cluster import E2ECluster
from support.ganeti_oracle import Ganeti3

from ganeti import constants, opcodes, query

WAIT = 60.0
INSTANCE = "g3rapiq1"


def _client_code(cluster: E2ECluster, body: str) -> str:
    host, port = cluster.rapi_address
    return (f"from ganeti.rapi import client\n"
            f"c = client.GanetiRapiClient({host!r}, port={port}, username='admin',"
            f" password='secret')\n"
            "def error_code(call, *args):\n"
            "    try:\n"
            "        call(*args)\n"
            "    except client.GanetiApiError as err:\n"
            "        return [err.code, str(err)]\n"
            "    return None\n"
            + textwrap.dedent(body))


def test_jobs_with_ganetis_client(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    node3_delay = {"on_master": False, "on_nodes": ["node3"]}
    with cluster.luxi_client(timeout=WAIT) as cl:
        quick = cl.submit_job([opcodes.OpTestDelay.create(duration=0)])
        blocker = cl.submit_job([opcodes.OpTestDelay.create(duration=3600, **node3_delay)])
        cluster.wait_job_status(blocker, {constants.OP_STATUS_RUNNING}, timeout=WAIT)
        waiter = cl.submit_job([opcodes.OpTestDelay.create(duration=0, **node3_delay)])
    cluster.wait_job_status(waiter, {constants.OP_STATUS_WAITING}, timeout=WAIT)
    released = False
    try:
        got = ganeti3.eval(_client_code(cluster, f"""
            W, B = {waiter}, {blocker}
            result = {{
                "ids": c.GetJobs(),
                "bulk": c.GetJobs(bulk=True),
                "waiter": c.GetJobStatus(W),
                "change": c.WaitForJobChange(W, ["status", "summary"], None, None),
                "dry_cancel": c.CancelJob(W, dry_run=True),
                "cancel": c.CancelJob(W),
            }}
            prev = ["waiting"]
            while prev[0] not in ("canceled", "success", "error"):
                change = c.WaitForJobChange(W, ["status"], prev, None)
                if change:
                    prev = change["job_info"]
            result["after_cancel"] = prev
            result["cancel_running"] = c.CancelJob(B)
            result["query"] = c.Query("job", ["id", "status"],
                                      ["|", ["=", "id", B], ["=", "id", str(W)]])
            result["fields"] = c.QueryFields("job", ["id", "nosuch"])
            result["all_fields"] = [f["name"] for f in c.QueryFields("job")["fields"]]
            result["missing"] = error_code(c.GetJobStatus, 987654)
            result["bad_id"] = error_code(c.GetJobStatus, "abc")
            """), timeout=120)
        assert waiter in got["ids"] and blocker in got["ids"] and quick in got["ids"]
        assert got["ids"] == sorted(got["ids"])
        bulk = {job["id"]: job for job in got["bulk"]}
        assert bulk[blocker]["status"] == constants.OP_STATUS_RUNNING
        assert set(bulk[waiter]) == {"id", "ops", "status", "summary", "opstatus",
                                     "received_ts", "start_ts", "end_ts"}
        assert got["waiter"]["status"] == constants.OP_STATUS_WAITING
        assert got["waiter"]["ops"][0]["on_nodes"] == ["node3"]
        assert {"oplog", "opresult"} <= set(got["waiter"])
        assert got["change"]["job_info"] == [constants.OP_STATUS_WAITING, ["TEST_DELAY(0.0)"]]
        assert got["dry_cancel"] == [True, f"Job {waiter} would be canceled (dry run)"]
        assert got["cancel"][0] is True and f"Job {waiter}" in got["cancel"][1]
        assert got["after_cancel"] == [constants.OP_STATUS_CANCELED]
        assert got["cancel_running"][0] is False and "running" in got["cancel_running"][1]
        assert got["query"]["data"] == [
            [[query.RS_NORMAL, blocker], [query.RS_NORMAL, constants.OP_STATUS_RUNNING]],
            [[query.RS_NORMAL, waiter], [query.RS_NORMAL, constants.OP_STATUS_CANCELED]]]
        assert [(f["name"], f["kind"]) for f in got["fields"]["fields"]] == \
            [("id", "number"), ("nosuch", "unknown")]
        assert {"id", "status", "opresult", "oplog"} <= set(got["all_fields"])
        assert got["missing"][0] == 404
        assert got["bad_id"][0] == 400 and "job_id" in got["bad_id"][1]

        # Ganeti's client follows the blocker while the test releases it
        followed: list[Any] = []
        follower = threading.Thread(target=lambda: followed.append(ganeti3.eval(
            _client_code(cluster, f"""
                result = {{"quick": c.WaitForJobCompletion({quick}, period=1)}}
                prev = ["running"]
                while prev[0] == "running":
                    change = c.WaitForJobChange({blocker}, ["status"], prev, None)
                    if change:
                        prev = change["job_info"]
                result["blocker"] = prev
                result["blocker_done"] = c.WaitForJobCompletion({blocker}, period=1)
                """), timeout=120)))
        follower.start()
        cluster.kill_noded("node3", WAIT)
        released = True
        follower.join(150)
        assert followed == [{"quick": True, "blocker": [constants.OP_STATUS_ERROR],
                             "blocker_done": False}]
    finally:
        if not released:
            cluster.kill_noded("node3", WAIT)
        cluster.start(log=lambda _msg: None)


def test_query_with_ganetis_client(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", INSTANCE)
    got = ganeti3.eval(_client_code(cluster, f"""
        result = {{
            "instance": c.Query("instance", ["name", "pnode", "disk_template"],
                                ["=", "name", {INSTANCE!r}]),
            "master": c.Query("node", ["name", "master"], ["?", "master"]),
            "nodes": c.Query("node", ["name"]),
            "fields": c.QueryFields("instance", ["name", "pnode"]),
            "bad_filter": error_code(c.Query, "instance", ["name"], ["=", "nosuch", 1]),
            "bad_regexp": error_code(c.Query, "instance", ["name"], ["=~", "name", "(("]),
            "unknown": error_code(c.Query, "martians", ["name"]),
        }}
        """))
    with cluster.luxi_client(timeout=WAIT) as cl:
        ours = cl.query("instance", ["name", "pnode", "disk_template"],
                        ["=", "name", INSTANCE])
    assert got["instance"] == ours
    assert [[v for _, v in row] for row in got["instance"]["data"]] == \
        [[INSTANCE, "node2", "file"]]
    assert got["master"]["data"] == [[[query.RS_NORMAL, "node1"], [query.RS_NORMAL, True]]]
    assert sorted(row[0][1] for row in got["nodes"]["data"]) == ["node1", "node2", "node3"]
    assert [f["name"] for f in got["fields"]["fields"]] == ["name", "pnode"]
    assert got["bad_filter"][0] == 400 and "qfilter" in got["bad_filter"][1]
    assert "nosuch" in got["bad_filter"][1]
    assert got["bad_regexp"][0] == 400 and "qfilter" in got["bad_regexp"][1]
    assert got["unknown"][0] == 404 and "martians" in got["unknown"][1]


def test_poll_job_as_move_instance_does(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    # move-instance follows its jobs with ganeti.rapi.client_utils.PollJob (full 3.0 package)
    with cluster.luxi_client(timeout=WAIT) as cl:
        good = cl.submit_job([opcodes.OpTestDelay.create(duration=0, repeat=2)])
        bad = cl.submit_job([opcodes.OpTestDelay.create(duration=0, fail=True)])
    got = ganeti3.eval(_client_code(cluster, f"""
        from ganeti import cli, errors
        from ganeti.rapi import client_utils

        class Report(cli.JobPollReportCbBase):
            def __init__(self):
                cli.JobPollReportCbBase.__init__(self)
                self.messages = []

            def ReportLogMessage(self, job_id, serial, timestamp, log_type, log_msg):
                self.messages.append(log_msg)

            def ReportNotChanged(self, job_id, status):
                pass

        report = Report()
        result = {{"good": client_utils.PollJob(c, {good}, report)}}
        result["messages"] = report.messages
        try:
            client_utils.PollJob(c, {bad}, Report())
        except errors.OpExecError as err:
            result["bad"] = str(err)
        """))
    assert got["good"] == [True]
    assert [m for m in got["messages"] if "iteration" in m] == \
        ["Test delay iteration 1/2", "Test delay iteration 2/2"]
    assert "Test delay was asked to fail" in got["bad"]
