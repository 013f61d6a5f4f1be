"""Schedules and the backup runner with a controllable clock and a fake master."""

from __future__ import annotations

import threading
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

    def unfinished(self, job_ids: list[int]) -> list[int]:
        return [j for j in job_ids if j in self.running]

    def wait(self, job_id: int) -> str:
        if self.wait_hold:
            return "success"
        self.running.discard(job_id)
        op = self.jobs[job_id][0]
        assert isinstance(op, opcodes.OpBackupExport)
        return self.results.get(op.instance_name, "success")


def schedule(**fields: Any) -> dict[str, Any]:
    base = {"name": "nightly", "instances": ["web1"], "tags": [], "all_instances": False,
            "node_policy": "fixed", "target_node": "node3", "cron": "0 3 * * *",
            "compress": "none", "shutdown_mode": "shutdown", "retention": {"keep_last": 2},
            "enabled": True, "ctime": ts("2026-01-01 12:00")}
    return {**base, **fields}


@pytest.fixture
def state(tmp_path: Path) -> br.RunnerState:
    return br.RunnerState(tmp_path)


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
    assert [o.status for o in out] == ["ok"] and len(master.jobs) == 2


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
