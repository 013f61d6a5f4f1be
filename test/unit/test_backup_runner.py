"""Schedules and the backup runner with a controllable clock and a fake master."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ganeti import errors, opcodes
from ganeti.backup import schedule as sched
from ganeti.tools import backup_runner as br


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --- due computation -----------------------------------------------------------------


def test_due_only_after_a_slot_passed() -> None:
    created = ts("2026-01-01 12:00")
    assert not sched.is_due("0 3 * * *", created, ts("2026-01-02 02:59:59"))
    assert sched.is_due("0 3 * * *", created, ts("2026-01-02 03:00"))
    # after running at 03:00 the next slot is tomorrow
    assert not sched.is_due("0 3 * * *", ts("2026-01-02 03:00"), ts("2026-01-02 23:59"))


def test_slots_and_missed_slot_count() -> None:
    assert sched.next_slot("*/15 * * * *", ts("2026-01-01 10:07")) == ts("2026-01-01 10:15")
    assert sched.next_slot("*/15 * * * *", ts("2026-01-01 10:15")) == ts("2026-01-01 10:30")
    assert sched.last_slot("0 3 * * 1", ts("2026-01-07 00:00")) == ts("2026-01-05 03:00")
    assert sched.last_slot("0 3 * * *", ts("2026-01-07 03:00")) == ts("2026-01-07 03:00")
    assert br.missed_slots("0 * * * *", ts("2026-01-01 00:30"), ts("2026-01-01 05:00")) == 5


@pytest.mark.parametrize(("call", "field"), [
    (lambda: sched.check_cron("0 3 * *"), "cron"),
    (lambda: sched.check_cron("0 24 * * *"), "cron"),
    (lambda: sched.check_cron("x 3 * * *"), "cron"),
    (lambda: sched.check_name("bad name"), "name"),
    (lambda: sched.check_retention({"keep_daly": 1}), "keep_daly"),
    (lambda: sched.check_retention({"keep_daily": -2}), "keep_daily"),
    (lambda: sched.check_target("fixed", None), "target_node"),
    (lambda: sched.check_target("other", "node2"), "target_node"),
    (lambda: sched.check_target("random", None), "node_policy"),
    (lambda: sched.check_selection([], [], False), "instances"),
    (lambda: sched.check_selection(["a"], [], True), "all_instances"),
])
def test_validation_errors_name_the_field(call: Any, field: str) -> None:
    with pytest.raises(errors.OpPrereqError) as err:
        call()
    assert f"'{field}'" in str(err.value.args[0])
    assert err.value.args[1] == errors.ECODE_INVAL


def test_opcode_refuses_bad_keep_count_naming_the_field() -> None:
    with pytest.raises(errors.OpPrereqError) as err:
        opcodes.OpBackupPrune.create(keep_daily=-1)
    assert "keep_daily" in str(err.value)


def test_selection_by_name_tag_and_all() -> None:
    assert sched.selects({"instances": ["a"], "tags": []}, "a", [])
    assert sched.selects({"instances": [], "tags": ["db"]}, "b", ["web", "db"])
    assert not sched.selects({"instances": ["a"], "tags": ["db"]}, "c", ["web"])
    assert sched.selects({"all_instances": True}, "z", [])


# --- the runner ----------------------------------------------------------------------


class FakeMaster:
    """Records submitted jobs; jobs finish as told by ``results`` (default success)."""

    def __init__(self, schedules: list[dict[str, Any]]) -> None:
        self.sched = schedules
        self.jobs: dict[int, list[opcodes.OpCode]] = {}
        self.running: set[int] = set()
        self.results: dict[str, str] = {}
        self.wait_hold = False
        self.defaults: dict[str, Any] = {}

    def schedules(self) -> list[dict[str, Any]]:
        return self.sched

    def instances(self) -> list[tuple[str, list[str], str]]:
        return [("web1", ["web"], "node1"), ("web2", ["web"], "node2"), ("db1", [], "node1")]

    def nodes(self) -> list[tuple[str, bool]]:
        return [("node1", True), ("node2", True), ("node3", True), ("node4", False)]

    def export_counts(self) -> tuple[dict[str, list[str]], dict[str, int]]:
        return {"web2": ["node3"]}, {"node3": 1}

    def submit(self, ops: list[opcodes.OpCode]) -> int:
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = ops
        self.running.add(job_id)
        return job_id

    def cluster_info(self) -> dict[str, Any]:
        return {"cluster_name": "cluster.test", "backup_defaults": self.defaults}

    def _result(self, job_id: int) -> str:
        op = self.jobs[job_id][0]
        assert isinstance(op, opcodes.OpBackupExport)
        return self.results.get(op.instance_name, "success")

    def job_outcomes(self, job_ids: list[int]) -> dict[int, str | None]:
        return {j: None if j in self.running else self._result(j) for j in job_ids}

    def wait(self, job_id: int) -> str:
        if self.wait_hold:
            return "success"
        self.running.discard(job_id)
        return self._result(job_id)


def schedule(**fields: Any) -> dict[str, Any]:
    base = {"name": "nightly", "instances": ["web1"], "tags": [], "all_instances": False,
            "node_policy": "fixed", "target_node": "node3", "cron": "0 3 * * *",
            "compress": "none", "shutdown_mode": "shutdown", "retention": {"keep_last": 2},
            "enabled": True, "ctime": ts("2026-01-01 12:00")}
    return {**base, **fields}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[br.RunnerState]:
    """The runner's state directory, on tmpfs where there is one: every pass saves the
    state with two fsyncs, and the DST tests make 864 passes (a minute of fsyncs on a
    busy disk) to check the schedule arithmetic, not the disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield br.RunnerState(tmp_path)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="runner-state-", dir=shm))
    try:
        yield br.RunnerState(data_dir)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def test_nothing_runs_before_the_first_slot(state: br.RunnerState) -> None:
    master = FakeMaster([schedule()])
    assert br.run(master, state, ts("2026-01-02 02:00")) == []
    assert master.jobs == {}


def test_due_schedule_exports_then_prunes_in_one_job(state: br.RunnerState) -> None:
    master = FakeMaster([schedule()])
    out = br.run(master, state, ts("2026-01-02 03:00"))
    assert [(o.instance, o.status) for o in out] == [("web1", "ok")]
    export, prune = master.jobs[1]
    assert isinstance(export, opcodes.OpBackupExport)
    assert (export.instance_name, export.target_node, export.keep_generations) == (
        "web1", "node3", True)
    # the prune opcode follows the export in the same job: the queue never runs it when
    # the export failed, so a failed export cannot prune good generations
    assert isinstance(prune, opcodes.OpBackupPrune)
    assert (prune.instances, prune.nodes, prune.keep_last) == (["web1"], ["node3"], 2)
    br.RunnerState(state.path.parent).load()
    assert state.get("nightly").jobs == [] and state.get("nightly").last_result == "success"


def test_no_retention_means_no_prune(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(retention={})])
    br.run(master, state, ts("2026-01-02 03:00"))
    assert [type(op).__name__ for op in master.jobs[1]] == ["OpBackupExport"]


def test_verify_schedule_verifies_the_new_export_before_the_prune(
        state: br.RunnerState) -> None:
    master = FakeMaster([schedule(verify=True)])
    br.run(master, state, ts("2026-01-02 03:00"))
    export, verify, prune = master.jobs[1]
    assert isinstance(export, opcodes.OpBackupExport)
    # the newest generation on the export's target, failing the job when it is bad: the
    # prune after it then never runs, so a bad new export costs no good older generation
    assert isinstance(verify, opcodes.OpBackupVerify)
    assert (verify.exports, verify.nodes, verify.newest_only, verify.fail_on_problems) == (
        ["web1"], ["node3"], True, True)
    assert isinstance(prune, opcodes.OpBackupPrune)
    master = FakeMaster([schedule(verify=True, retention={})])
    br.run(master, br.RunnerState(state.path.parent / "other"), ts("2026-01-02 03:00"))
    assert [type(op).__name__ for op in master.jobs[1]] == ["OpBackupExport",
                                                            "OpBackupVerify"]


def test_missed_slots_are_caught_up_once(state: br.RunnerState) -> None:
    master = FakeMaster([schedule()])
    br.run(master, state, ts("2026-01-02 03:00"))
    # the master was down for five days: one run, not five
    br.run(master, state, ts("2026-01-07 10:00"))
    assert len(master.jobs) == 2
    br.run(master, state, ts("2026-01-07 11:00"))
    assert len(master.jobs) == 2
    br.run(master, state, ts("2026-01-08 03:00"))
    assert len(master.jobs) == 3


def test_running_previous_jobs_block_a_new_run(state: br.RunnerState) -> None:
    master = FakeMaster([schedule()])
    master.wait_hold = True   # jobs stay running after the runner stopped waiting
    br.run(master, state, ts("2026-01-02 03:00"), wait=False)
    out = br.run(master, state, ts("2026-01-03 03:00"))
    assert [o.status for o in out] == ["skipped"]
    assert "still running" in out[0].detail and len(master.jobs) == 1
    lines, code = br.summary(out)
    assert code == 0 and lines[-1] == "Summary: 0 ok, 0 failed, 1 skipped"
    master.running.clear()
    # the skipped slot is not lost: the next pass catches it up
    out = br.run(master, state, ts("2026-01-03 03:01"))
    assert [(o.status, o.job_id, o.detail) for o in out] == [
        ("ok", 1, "collected"), ("ok", 2, "export to node3")]
    assert len(master.jobs) == 2


def test_two_runners_at_once_never_submit_twice(state: br.RunnerState) -> None:
    master = FakeMaster([schedule()])
    master.wait_hold = True
    inside, release = threading.Event(), threading.Event()
    real_submit = master.submit

    def slow_submit(ops: list[opcodes.OpCode]) -> int:
        inside.set()
        release.wait(5)
        return real_submit(ops)

    master.submit = slow_submit  # type: ignore[method-assign]
    first = threading.Thread(target=br.run, args=(master, state, ts("2026-01-02 03:00")),
                             kwargs={"wait": False})
    first.start()
    inside.wait(5)
    second_state = br.RunnerState(state.path.parent)
    results: list[list[br.Outcome]] = []
    second = threading.Thread(target=lambda: results.append(
        br.run(master, second_state, ts("2026-01-02 03:00"), wait=False)))
    second.start()
    release.set()
    first.join()
    second.join()
    # the second runner waited for the lock and then saw the slot already taken
    assert len(master.jobs) == 1 and results == [[]]


def test_lock_held_elsewhere_times_out_with_a_clear_error(state: br.RunnerState) -> None:
    with state.locked(), pytest.raises(errors.LockError, match="Another backup runner"), \
            br.RunnerState(state.path.parent).locked(wait=0.2):
        pass


def test_failed_export_is_reported_and_exit_code_is_nonzero(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(instances=["web1", "db1"])])
    master.results["db1"] = "Failure: hook failed"
    out = br.run(master, state, ts("2026-01-02 03:00"))
    assert {(o.instance, o.status) for o in out} == {("web1", "ok"), ("db1", "failed")}
    lines, code = br.summary(out)
    assert code == 1 and lines[-1] == "Summary: 1 ok, 1 failed, 0 skipped"
    assert any(line.startswith("FAILED") and "db1" in line and "hook failed" in line
               for line in lines)
    assert state.get("nightly").last_result == "failed: db1"


def test_missing_instance_and_disabled_schedule(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(instances=["gone"]), schedule(name="off", enabled=False)])
    out = br.run(master, state, ts("2026-01-02 03:00"))
    assert [(o.schedule, o.instance, o.status) for o in out] == [
        ("nightly", "gone", "failed")]
    # run-now runs a disabled schedule, and does not move its cron slots
    out = br.run(master, state, ts("2026-01-02 04:00"), names=["off"])
    assert [(o.schedule, o.instance) for o in out] == [("off", "web1")]
    assert state.get("off").last_run is None


def test_state_of_removed_schedules_is_dropped(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(), schedule(name="old")])
    br.run(master, state, ts("2026-01-02 03:00"))
    master.sched = [schedule()]
    br.run(master, state, ts("2026-01-02 04:00"))
    state.load()
    assert sorted(state.schedules) == ["nightly"]


def test_tags_and_node_policies(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(instances=[], tags=["web"], node_policy="other",
                                  target_node=None),
                         schedule(name="local", instances=["db1"], node_policy="primary",
                                  target_node=None)])
    br.run(master, state, ts("2026-01-02 03:00"))
    targets = sorted((ops[0].instance_name, ops[0].target_node)  # type: ignore[attr-defined]
                     for ops in master.jobs.values())
    # web2 stays on node3 where its exports are; web1 goes to the least used other node;
    # node4 is offline; db1 goes to its primary
    assert targets == [("db1", "node1"), ("web1", "node2"), ("web2", "node3")]


def test_dry_run_submits_and_records_nothing(state: br.RunnerState) -> None:
    master = FakeMaster([schedule()])
    out = br.run(master, state, ts("2026-01-02 03:00"), dry_run=True)
    assert [(o.status, o.detail) for o in out] == [("planned", "export to node3")]
    assert master.jobs == {} and not state.path.exists()


def test_now_accepts_epoch_and_iso() -> None:
    assert br.parse_now("2026-01-02T03:00:00Z") == ts("2026-01-02 03:00")
    assert br.parse_now("2026-01-02 03:00") == ts("2026-01-02 03:00")
    assert br.parse_now("1767322800") == 1767322800.0
    with pytest.raises(Exception, match="--now"):
        br.parse_now("tomorrow")


def test_log_lines_carry_journald_priorities(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    br.setup_logging(False, False)
    br.logger.error("export failed")
    br.logger.warning("skipped")
    br.logger.info("submitted")
    assert capsys.readouterr().err.splitlines() == ["<3>export failed", "<4>skipped",
                                                    "<6>submitted"]
    monkeypatch.delenv("JOURNAL_STREAM")
    br.setup_logging(False, False)
    br.logger.info("plain")
    assert "ganeti-backup-runner[" in capsys.readouterr().err


# --- --no-wait and collection ------------------------------------------------------------


def sendmail_stub(tmp_path: Path, rc: int = 0) -> tuple[str, Path]:
    """A sendmail stand-in: the sendmail interface (-t -oi, message on stdin) into a file."""
    spool = tmp_path / "mail"
    script = tmp_path / "sendmail"
    script.write_text(f"#!/bin/sh\n[ \"$1 $2\" = '-t -oi' ] || exit 64\n"
                      f"cat >> '{spool}'\necho '--end--' >> '{spool}'\nexit {rc}\n")
    script.chmod(0o755)
    return str(script), spool


def test_no_wait_submits_and_the_next_pass_collects_a_failure(
        state: br.RunnerState, tmp_path: Path) -> None:
    sendmail, spool = sendmail_stub(tmp_path)
    master = FakeMaster([schedule(instances=["web1", "db1"])])
    master.defaults = {"notify": "failure", "mail_to": ["ops@example.org"]}
    out = br.run(master, state, ts("2026-01-02 03:00"), wait=False, sendmail=sendmail)
    lines, code = br.summary(out)
    # submitted is not success: nothing is known yet
    assert {o.status for o in out} == {"submitted"} and code == 0
    assert lines[-1] == "Summary: 0 ok, 0 failed, 0 skipped, 2 submitted"
    assert state.get("nightly").jobs == [1, 2] and not spool.exists()
    # the target went offline: both jobs fail while no runner waits
    master.results = {"web1": "Failure: node3 is offline", "db1": "Failure: node3 is offline"}
    master.running.clear()
    report = br.Pass()
    out = br.run(master, state, ts("2026-01-02 03:05"), sendmail=sendmail, report=report)
    assert [(o.instance, o.status, o.job_id) for o in out] == [
        ("web1", "failed", 1), ("db1", "failed", 2)]
    assert all("collected" in o.detail and "offline" in o.detail for o in out)
    lines, code = br.summary(out, report.notify_failures)
    assert code == 1 and lines[-1] == "Summary: 0 ok, 2 failed, 0 skipped"
    st = br.RunnerState(state.path.parent)
    st.load()
    assert st.get("nightly").jobs == [] and st.get("nightly").last_result == "failed: db1, web1"
    mail = spool.read_text()
    assert "To: ops@example.org" in mail and "schedule nightly FAILED" in mail
    assert "FAILED    nightly web1 job 1: Failure: node3 is offline" in mail
    assert mail.count("--end--") == 1
    # collected once: a later pass reports nothing more
    assert br.run(master, state, ts("2026-01-02 03:10"), sendmail=sendmail) == []
    assert spool.read_text().count("--end--") == 1


def test_partly_finished_run_stays_running_until_its_last_job(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(instances=["web1", "db1"])])
    br.run(master, state, ts("2026-01-02 03:00"), wait=False)
    master.running.discard(1)
    out = br.run(master, state, ts("2026-01-02 03:05"))
    assert [(o.instance, o.status) for o in out] == [("web1", "ok")]
    assert state.get("nightly").jobs == [2] and state.get("nightly").last_result == ""
    master.results["db1"] = "Failure: disk full"
    master.running.clear()
    out = br.run(master, state, ts("2026-01-02 03:10"))
    assert [(o.instance, o.status) for o in out] == [("db1", "failed")]
    assert state.get("nightly").last_result == "failed: db1"


# --- notifications -------------------------------------------------------------------


class Hook:
    """A real HTTP endpoint on 127.0.0.1 recording the JSON bodies it receives."""

    def __init__(self, status: int = 200) -> None:
        import http.server
        import json as json_mod
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"type": self.headers["Content-Type"],
                                 **json_mod.loads(body)})
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Any:
    endpoint = Hook()
    yield endpoint
    endpoint.close()


def test_webhook_and_mail_per_schedule_override(state: br.RunnerState, tmp_path: Path,
                                                hook: Hook) -> None:
    sendmail, spool = sendmail_stub(tmp_path)
    master = FakeMaster([
        schedule(overrides={"notify": "always", "webhook_url": hook.url}),
        schedule(name="quiet", instances=["db1"], overrides={"notify": "never"})])
    master.defaults = {"notify": "failure", "mail_to": ["root@localhost"]}
    master.results["db1"] = "Failure: hook failed"
    report = br.Pass()
    br.run(master, state, ts("2026-01-02 03:00"), sendmail=sendmail, report=report)
    # nightly succeeded and notifies always (webhook and the cluster's mail address);
    # quiet failed but never notifies
    assert report.notify_failures == []
    [payload] = hook.received
    assert payload["type"] == "application/json"
    assert (payload["cluster"], payload["schedule"], payload["status"]) == (
        "cluster.test", "nightly", "ok")
    assert [(o["instance"], o["status"], o["job_id"]) for o in payload["outcomes"]] == [
        ("web1", "ok", 1)]
    mail = spool.read_text()
    assert mail.count("--end--") == 1 and "schedule nightly ok" in mail


def test_failed_notification_is_counted_and_hides_nothing(state: br.RunnerState,
                                                          tmp_path: Path) -> None:
    sendmail, _spool = sendmail_stub(tmp_path, rc=75)
    broken = Hook(status=500)
    try:
        master = FakeMaster([schedule(overrides={"webhook_url": broken.url})])
        master.defaults = {"notify": "always", "mail_to": ["root@localhost"]}
        report = br.Pass()
        out = br.run(master, state, ts("2026-01-02 03:00"), sendmail=sendmail, report=report)
    finally:
        broken.close()
    assert [(o.instance, o.status) for o in out] == [("web1", "ok")]
    assert len(report.notify_failures) == 2
    assert any("HTTP 500" in p for p in report.notify_failures)
    assert any("exit 75" in p for p in report.notify_failures)
    lines, code = br.summary(out, report.notify_failures)
    assert code == 1 and lines[0].startswith("OK        nightly web1")
    assert lines[-1] == "Summary: 1 ok, 0 failed, 0 skipped, 2 notification(s) failed"
    assert state.get("nightly").last_result == "success"


# --- selection, settings, time zones -----------------------------------------------


def test_exclude_by_name_and_tag() -> None:
    rule = {"all_instances": True, "exclude": ["db1", "tag:web"]}
    assert not sched.selects(rule, "db1", [])
    assert not sched.selects(rule, "web9", ["web"])
    assert sched.selects(rule, "other", ["db"])
    tagged = {"tags": ["web"], "exclude": ["web2"]}
    assert sched.selects(tagged, "web1", ["web"]) and not sched.selects(tagged, "web2", ["web"])
    with pytest.raises(errors.OpPrereqError, match=r"'exclude'.*web1 also selected"):
        sched.check_exclude(["web1"], ["web1"])


def test_schedule_bandwidth_and_io_priority_reach_the_export(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(overrides={"bwlimit": 2048, "ionice_class": "idle"}),
                         schedule(name="plain", instances=["db1"])])
    master.defaults = {"bwlimit": 100, "ionice_class": "best-effort", "ionice_level": 4}
    br.run(master, state, ts("2026-01-02 03:00"))
    exports = [ops[0] for ops in master.jobs.values()]
    by_instance = {op.instance_name: op for op in exports
                   if isinstance(op, opcodes.OpBackupExport)}
    assert len(by_instance) == len(exports)
    web1, db1 = by_instance["web1"], by_instance["db1"]
    assert (web1.bwlimit, web1.ionice_class, web1.ionice_level) == (2048, "idle", None)
    # no override: None, the export applies the cluster default itself
    assert (db1.bwlimit, db1.ionice_class, db1.ionice_level) == (None, None, None)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"notify": "sometimes"}, "overrides.notify"),
    ({"timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"ionice_level": 9}, "overrides.ionice_level"),
    ({"bwlimit": -1}, "overrides.bwlimit"),
    ({"colour": "red"}, "overrides.colour"),
    ({"webhook_url": "ftp://x"}, "overrides.webhook_url"),
])
def test_overrides_are_checked_by_the_defaults_model(overrides: dict[str, Any],
                                                     field: str) -> None:
    with pytest.raises(errors.OpPrereqError, match=field.replace(".", r"\.")) as err:
        sched.check_overrides(overrides)
    assert err.value.args[1] == errors.ECODE_INVAL


def test_shortcuts() -> None:
    assert sched.check_cron("@Daily") == "@daily"
    assert sched.next_slot("@daily", ts("2026-01-01 12:00")) == ts("2026-01-02 00:00")
    assert sched.next_slot("@hourly", ts("2026-01-01 12:00")) == ts("2026-01-01 13:00")
    assert sched.next_slot("@weekly", ts("2026-01-01 12:00")) == ts("2026-01-04 00:00")
    assert sched.next_slot("@monthly", ts("2026-01-01 12:00")) == ts("2026-02-01 00:00")
    assert sched.next_slot("@yearly", ts("2026-01-01 12:00")) == ts("2027-01-01 00:00")
    assert sched.expand("@annually") == sched.expand("@yearly")
    assert sched.expand("@midnight") == sched.expand("@daily")
    with pytest.raises(errors.OpPrereqError, match=r"'cron'.*@reboot"):
        sched.check_cron("@reboot")


def passes(master: FakeMaster, state: br.RunnerState, start: str, hours: int
           ) -> list[float]:
    """A fake clock: one runner pass every 5 minutes; the times exports were submitted."""
    runs = []
    now = ts(start)
    for _ in range(hours * 12):
        before = len(master.jobs)
        br.run(master, state, now)
        if len(master.jobs) > before:
            runs.append(now)
        now += 300
    return runs


def local(stamp: float, tz: str = "Europe/Berlin") -> str:
    from zoneinfo import ZoneInfo
    return datetime.fromtimestamp(stamp, ZoneInfo(tz)).strftime("%m-%d %H:%M %Z")


def test_cluster_time_zone_and_schedule_override(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(ctime=ts("2026-01-01 00:00")),
                         schedule(name="ny", instances=["db1"], ctime=ts("2026-01-01 00:00"),
                                  overrides={"timezone": "America/New_York"})])
    master.defaults = {"timezone": "Europe/Berlin"}
    runs = passes(master, state, "2026-01-01 00:00", 24)
    # 03:00 in Berlin is 02:00 UTC; 03:00 in New York is 08:00 UTC
    assert [local(r, "UTC") for r in runs] == ["01-01 02:00 UTC", "01-01 08:00 UTC"]


def test_dst_spring_missing_slot_runs_once(state: br.RunnerState) -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist
    master = FakeMaster([schedule(cron="30 2 * * *", ctime=ts("2026-03-28 00:00"))])
    master.defaults = {"timezone": "Europe/Berlin"}
    runs = passes(master, state, "2026-03-28 00:00", 72)
    assert [local(r) for r in runs] == ["03-28 02:30 CET", "03-29 03:00 CEST",
                                        "03-30 02:30 CEST"]


def test_dst_autumn_repeated_hour_runs_once(state: br.RunnerState) -> None:
    # 2026-10-25 in Berlin: 03:00 CEST goes back to 02:00 CET, 02:30 happens twice
    master = FakeMaster([schedule(cron="30 2 * * *", ctime=ts("2026-10-24 00:00"))])
    master.defaults = {"timezone": "Europe/Berlin"}
    runs = passes(master, state, "2026-10-24 00:00", 72)
    assert [local(r) for r in runs] == ["10-24 02:30 CEST", "10-25 02:30 CEST",
                                        "10-26 02:30 CET"]
    # created during the repeated hour (02:10 CET, after the first 02:30): the slot that
    # went by in the first pass of the hour is not run again in the second
    late = FakeMaster([schedule(cron="30 2 * * *", ctime=ts("2026-10-25 01:10"))])
    late.defaults = {"timezone": "Europe/Berlin"}
    runs = passes(late, br.RunnerState(state.path.parent / "late"), "2026-10-25 01:10", 30)
    assert [local(r) for r in runs] == ["10-26 02:30 CET"]


def test_dst_autumn_hourly_follows_real_time(state: br.RunnerState) -> None:
    master = FakeMaster([schedule(cron="@hourly", ctime=ts("2026-10-24 21:30"))])
    master.defaults = {"timezone": "Europe/Berlin"}
    runs = passes(master, state, "2026-10-24 22:00", 5)
    # the repeated hour is a real hour: every hour once, none twice, none lost
    assert [local(r) for r in runs] == [
        "10-25 00:00 CEST", "10-25 01:00 CEST", "10-25 02:00 CEST", "10-25 02:00 CET",
        "10-25 03:00 CET"]


def test_examples_submit_and_return_and_only_set_what_reaches_the_copy() -> None:
    examples = Path(__file__).resolve().parents[2] / "doc" / "examples"
    service = (examples / "ganeti-backup.service").read_text()
    cron = (examples / "ganeti-backup.cron").read_text()
    # Nice=/IOSchedulingClass= would only reach the runner, never the node daemons' copy
    settings = [line.split("=")[0] for line in service.splitlines()
                if line and not line.startswith(("#", "["))]
    assert not {"Nice", "IOSchedulingClass", "IOSchedulingPriority"} & set(settings)
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    cron_line = next(line for line in cron.splitlines() if line.startswith("*/5"))
    for command in (exec_start.split("=", 1)[1], cron_line.split("&& ", 1)[1]):
        argv = command.split()
        assert argv[0].endswith("ganeti-backup-runner")
        # a oneshot pass submits and returns; the next pass collects the outcomes
        assert br.build_parser().parse_args(argv[1:]).wait is False


def test_jobs_collected_by_another_pass_are_recorded_and_notified_once(
        state: br.RunnerState, tmp_path: Path) -> None:
    sendmail, spool = sendmail_stub(tmp_path)
    master = FakeMaster([schedule()])
    master.defaults = {"notify": "always", "mail_to": ["root@localhost"]}
    master.results["web1"] = "Failure: disk full"
    real_wait = master.wait

    def wait_while_a_timer_pass_collects(job_id: int) -> str:
        outcome = real_wait(job_id)
        # a --no-wait pass of the timer runs while this runner waits (nothing due)
        br.run(master, br.RunnerState(state.path.parent), ts("2026-01-02 02:00"),
               wait=False, sendmail=sendmail)
        return outcome

    master.wait = wait_while_a_timer_pass_collects  # type: ignore[method-assign]
    out = br.run(master, state, ts("2026-01-02 03:00"), names=["nightly"], sendmail=sendmail)
    assert [(o.instance, o.status) for o in out] == [("web1", "failed")]
    state.load()
    assert state.get("nightly").last_result == "failed: web1"
    assert spool.read_text().count("--end--") == 1
