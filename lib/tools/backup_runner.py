"""ganeti-backup-runner: run due backup schedules as jobs (cron or systemd timer).

One invocation: take the runner lock; collect the outcome of the jobs
earlier passes left running (``--no-wait``), record it as the schedule's
last result and notify; find the schedules that are due (a cron slot, in
the schedule's time zone, since their last run; missed slots are caught up
by one run); skip those whose previous jobs still run; submit one job per
instance (export keeping generations with the schedule's bandwidth and I/O
priority, then, when the schedule says so, verify the new export, then
prune: a failed export or a bad verify fails the job before the prune
opcode runs); record the job ids and drop the lock.  Then either wait for
the jobs, record and notify (the default), or return at once
(``--no-wait``, what the timer and cron examples use, so a long export
never holds back another schedule's slot).  A summary is printed when
anything ran or finished (``--always-report``: every pass), so cron mails
nothing for idle passes.  The exit code is 1 when a job, a submission or a
notification failed.

State (last run, running jobs, last result per schedule) lives in the
master's data dir next to the config, guarded by an ``flock`` so two
runners started at once never submit the same schedule twice.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ganeti import cli, constants, errors, luxi, objects, opcodes, pathutils, query
from ganeti.backup import notify, retention
from ganeti.backup import schedule as sched
from ganeti.fileutils import atomic_write

STATE_NAME = "backup-runner.json"
LOCK_NAME = "backup-runner.lock"
LOCK_WAIT = 60.0
SENDMAIL_ENV = "GANETI_BACKUP_SENDMAIL"
# cap for counting missed slots in the report (a per-minute schedule over months)
MAX_COUNTED_SLOTS = 10000
logger = logging.getLogger("ganeti-backup-runner")


# --- state ---------------------------------------------------------------------------


@dataclass
class ScheduleState:
    last_run: float | None = None
    jobs: list[int] = field(default_factory=list)
    last_result: str = ""
    last_finished: float | None = None
    # the run in progress: job id (as text) -> instance, and instance -> result so far
    job_instances: dict[str, str] = field(default_factory=dict)
    results: dict[str, str] = field(default_factory=dict)
    result_jobs: dict[str, int] = field(default_factory=dict)


class RunnerState:
    """The runner's JSON state file and its lock (``with state.locked(): ...``)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_NAME
        self.lock_path = data_dir / LOCK_NAME
        self.schedules: dict[str, ScheduleState] = {}

    @contextlib.contextmanager
    def locked(self, wait: float = LOCK_WAIT) -> Iterator[RunnerState]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise errors.LockError(
                            f"Another backup runner holds {self.lock_path}") from None
                    time.sleep(0.1)
            self.load()
            yield self
        finally:
            os.close(fd)

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except ValueError as err:
            raise errors.ConfigurationError(f"Corrupt runner state {self.path}: {err}") from None
        self.schedules = {}
        for name, entry in dict(data.get("schedules", {})).items():
            self.schedules[str(name)] = ScheduleState(
                last_run=entry.get("last_run"), jobs=[int(j) for j in entry.get("jobs", [])],
                last_result=str(entry.get("last_result", "")),
                last_finished=entry.get("last_finished"),
                job_instances={str(k): str(v)
                               for k, v in dict(entry.get("job_instances", {})).items()},
                results={str(k): str(v) for k, v in dict(entry.get("results", {})).items()},
                result_jobs={str(k): int(v)
                             for k, v in dict(entry.get("result_jobs", {})).items()})

    def save(self) -> None:
        data = {"schedules": {name: vars(st) for name, st in sorted(self.schedules.items())}}
        atomic_write(self.path, json.dumps(data, indent=1, sort_keys=True), 0o600)

    def get(self, name: str) -> ScheduleState:
        return self.schedules.setdefault(name, ScheduleState())


def load_state(paths: pathutils.Paths | None = None) -> RunnerState:
    """Read-only view (no lock) for listings."""
    state = RunnerState((paths or pathutils.current()).data_dir)
    with contextlib.suppress(errors.ConfigurationError):
        state.load()
    return state


# --- the master ------------------------------------------------------------------------


class Master(Protocol):
    """What the runner needs from the master (LUXI; a fake in unit tests)."""

    def schedules(self) -> list[dict[str, Any]]: ...
    def instances(self) -> list[tuple[str, list[str], str]]: ...
    def nodes(self) -> list[tuple[str, bool]]: ...
    def export_counts(self) -> tuple[dict[str, list[str]], dict[str, int]]: ...
    def cluster_info(self) -> dict[str, Any]: ...
    def submit(self, ops: list[opcodes.OpCode]) -> int: ...
    def job_outcomes(self, job_ids: list[int]) -> dict[int, str | None]: ...
    def wait(self, job_id: int) -> str: ...


def _values(result: dict[str, Any]) -> list[list[Any]]:
    return [[value if status == query.RS_NORMAL else None for status, value in row]
            for row in result["data"]]


class LuxiMaster:
    def __init__(self, client: luxi.Client) -> None:
        self.cl = client

    def schedules(self) -> list[dict[str, Any]]:
        op = opcodes.OpBackupScheduleQuery.create()
        return list(cli.submit_opcode(op, cl=self.cl, feedback_fn=lambda _e: None))

    def instances(self) -> list[tuple[str, list[str], str]]:
        rows = _values(self.cl.query("instance", ["name", "tags", "pnode"]))
        return [(str(n), list(t or []), str(p)) for n, t, p in rows]

    def nodes(self) -> list[tuple[str, bool]]:
        rows = _values(self.cl.query("node", ["name", "offline", "drained"]))
        return [(str(n), not (off or dr)) for n, off, dr in rows]

    def export_counts(self) -> tuple[dict[str, list[str]], dict[str, int]]:
        holders: dict[str, list[str]] = {}
        counts: dict[str, int] = {}
        for node, names in self.cl.query_exports([], False).items():
            counts[node] = len(names) if names else 0
            for name in names or []:
                holders.setdefault(name, []).append(node)
        return holders, counts

    def submit(self, ops: list[opcodes.OpCode]) -> int:
        return self.cl.submit_job(ops)

    def cluster_info(self) -> dict[str, Any]:
        return dict(self.cl.query_cluster_info())

    def job_outcomes(self, job_ids: list[int]) -> dict[int, str | None]:
        """Per job: None while it runs, else "success" or its error text."""
        rows = self.cl.query_jobs(job_ids, luxi.RESULT_FIELDS) if job_ids else []
        outcomes: dict[int, str | None] = {}
        for job_id, row in zip(job_ids, rows, strict=True):
            if row is None:
                outcomes[job_id] = f"job {job_id} not found (archived or lost)"
            elif row[0] not in constants.JOBS_FINALIZED:
                outcomes[job_id] = None
            elif row[0] == constants.OP_STATUS_SUCCESS:
                outcomes[job_id] = "success"
            else:
                outcomes[job_id] = errors.format_error(luxi.job_failure(job_id, *row))
        return outcomes

    def wait(self, job_id: int) -> str:
        """"success" or the job's error text."""
        try:
            cli.poll_job(job_id, self.cl, lambda _e: None)
        except errors.GenericError as err:
            return errors.format_error(err)
        return "success"


# --- planning --------------------------------------------------------------------------


@dataclass
class Outcome:
    schedule: str
    instance: str = ""
    status: str = "ok"          # ok, failed, skipped, planned, submitted
    detail: str = ""
    job_id: int | None = None


def missed_slots(cron: str, since: float, now: float, tz: str = "UTC") -> int:
    count, slot = 0, since
    while count < MAX_COUNTED_SLOTS:
        slot = sched.next_slot(cron, slot, tz)
        if slot > now:
            break
        count += 1
    return count


def choose_target(schedule: dict[str, Any], instance: str, primary: str,
                  online: list[str], holders: dict[str, list[str]],
                  counts: dict[str, int]) -> str | None:
    """Target node per the schedule's policy; None when no node qualifies."""
    policy = schedule.get("node_policy", "fixed")
    if policy == "fixed":
        return str(schedule["target_node"])
    if policy == "primary":
        return primary
    others = [n for n in online if n != primary]
    if not others:
        return None
    # stay where the older generations are; else the node with the fewest exports
    sticky = [n for n in holders.get(instance, []) if n in others]
    if sticky:
        return sorted(sticky)[0]
    return min(others, key=lambda n: (counts.get(n, 0), n))


# the backup settings an export opcode takes itself (None there: the cluster default)
EXPORT_OVERRIDES = tuple(name for name in objects.BackupDefaults.model_fields
                         if name in opcodes.OpBackupExport.model_fields)


def export_job(schedule: dict[str, Any], instance: str, target: str) -> list[opcodes.OpCode]:
    """Export keeping generations, verify (if asked), then prune: each opcode runs only if
    the ones before it succeeded, so a bad new export never costs an older generation."""
    shutdown = schedule.get("shutdown_mode", "shutdown") == "shutdown"
    overrides = dict(schedule.get("overrides") or {})
    ops: list[opcodes.OpCode] = [opcodes.OpBackupExport.create(
        instance_name=instance, target_node=target, shutdown=shutdown, long_sleep=shutdown,
        compress=schedule.get("compress", constants.IEC_NONE), keep_generations=True,
        reason=[("backup-runner", f"schedule {schedule['name']}", time.time_ns())],
        **{name: overrides.get(name) for name in EXPORT_OVERRIDES})]
    if schedule.get("verify"):
        ops.append(opcodes.OpBackupVerify.create(exports=[instance], nodes=[target],
                                                 newest_only=True, fail_on_problems=True))
    policy = dict(schedule.get("retention") or {})
    if not retention.is_keep_all(policy):
        ops.append(opcodes.OpBackupPrune.create(instances=[instance], nodes=[target],
                                                **policy))
    return ops


def select_instances(schedule: dict[str, Any], instances: list[tuple[str, list[str], str]]
                     ) -> tuple[list[tuple[str, str]], list[str]]:
    """([(instance, primary)], named instances that no longer exist)."""
    chosen = [(name, pnode) for name, tags, pnode in instances
              if sched.selects(schedule, name, tags)]
    known = {name for name, _t, _p in instances}
    missing = [n for n in schedule.get("instances", []) if n not in known]
    return chosen, missing


@dataclass
class Pass:
    """What one runner pass did: outcomes to print, runs that completed, notify errors."""

    outcomes: list[Outcome] = field(default_factory=list)
    # (schedule, outcomes of a run of it that completed in this pass: all jobs finished)
    completed: list[tuple[str, list[Outcome]]] = field(default_factory=list)
    notify_failures: list[str] = field(default_factory=list)


def finish_job(st: ScheduleState, job_id: int, result: str) -> Outcome | None:
    """Record one finished job of the run in progress; its outcome (None: not ours)."""
    if job_id not in st.jobs:
        return None
    st.jobs.remove(job_id)
    instance = st.job_instances.pop(str(job_id), f"job {job_id}")
    st.results[instance] = result
    st.result_jobs[instance] = job_id
    return Outcome("", instance, "ok" if result == "success" else "failed",
                   "" if result == "success" else result, job_id)


def _planning_failures(outcomes: list[Outcome], name: str) -> list[Outcome]:
    """This pass's failures of schedule ``name`` before any job ran (no job id)."""
    return [o for o in outcomes
            if o.schedule == name and o.status == "failed" and o.job_id is None]


def complete_run(st: ScheduleState, finished: float) -> list[Outcome] | None:
    """When the run's last job finished: its last_result; the run's outcomes."""
    if st.jobs:
        return None
    failed = sorted(i for i, r in st.results.items() if r != "success")
    st.last_result = f"failed: {', '.join(failed)}" if failed else "success"
    st.last_finished = finished
    runs = [Outcome("", i, "ok" if r == "success" else "failed", "" if r == "success" else r,
                    st.result_jobs.get(i)) for i, r in sorted(st.results.items())]
    st.results = {}
    st.result_jobs = {}
    st.job_instances = {}
    return runs


def resolve(state: RunnerState, master: Master, now: float
            ) -> tuple[list[Outcome], list[tuple[str, list[Outcome]]]]:
    """Collect the jobs earlier passes left running (state locked by the caller)."""
    outcomes: list[Outcome] = []
    completed: list[tuple[str, list[Outcome]]] = []
    for name, st in sorted(state.schedules.items()):
        if not st.jobs:
            continue
        for job_id, result in master.job_outcomes(list(st.jobs)).items():
            if result is None:
                continue
            out = finish_job(st, job_id, result)
            if out is None:
                continue
            out.schedule = name
            out.detail = f"collected{': ' + out.detail if out.detail else ''}"
            outcomes.append(out)
            if out.status == "failed":
                logger.error("Schedule %s: job %d (%s) failed: %s", name, job_id,
                             out.instance, result)
        runs = complete_run(st, now)
        if runs is not None:
            completed.append((name, [Outcome(name, o.instance, o.status, o.detail, o.job_id)
                                     for o in runs]))
    return outcomes, completed


def run(master: Master, state: RunnerState, now: float, *, names: Sequence[str] = (),
        dry_run: bool = False, wait: bool = True, sendmail: str = notify.DEFAULT_SENDMAIL,
        report: Pass | None = None) -> list[Outcome]:
    """One runner pass; ``names`` forces those schedules to run now (run-now)."""
    result = report if report is not None else Pass()
    outcomes = result.outcomes
    submitted: dict[str, list[Outcome]] = {}
    with state.locked():
        schedules = {s["name"]: s for s in master.schedules()}
        info = master.cluster_info() if schedules or state.schedules else {}
        defaults = dict(info.get("backup_defaults") or {})
        if not dry_run:
            collected, completed = resolve(state, master, now)
            outcomes.extend(collected)
            result.completed.extend(completed)
        for gone in [n for n, st in state.schedules.items()
                     if n not in schedules and not st.jobs]:
            del state.schedules[gone]      # the schedule was removed
        unknown = [n for n in names if n not in schedules]
        for name in unknown:
            outcomes.append(Outcome(name, status="failed", detail="no such schedule"))
        instances = master.instances() if schedules else []
        online = [n for n, ok in master.nodes() if ok] if schedules else []
        exports: tuple[dict[str, list[str]], dict[str, int]] | None = None
        for name in sorted(schedules):
            schedule = schedules[name]
            st = state.get(name)
            if names and name not in names:
                continue
            if not names and not schedule.get("enabled", True):
                continue
            tz = sched.settings(defaults, schedule).timezone
            since = st.last_run if st.last_run is not None else float(schedule["ctime"])
            if not names and not sched.is_due(schedule["cron"], since, now, tz):
                continue
            running = [j for j, r in master.job_outcomes(st.jobs).items() if r is None]
            if running:
                outcomes.append(Outcome(name, status="skipped", detail="previous run still"
                                        f" running (job(s) {', '.join(map(str, running))})"))
                logger.warning("Schedule %s: previous run still running (jobs %s), skipped",
                               name, running)
                continue
            missed = 0 if names else missed_slots(schedule["cron"], since, now, tz)
            if missed > 1:
                logger.info("Schedule %s: %d slots since the last run, running once", name,
                            missed)
            chosen, missing = select_instances(schedule, instances)
            for inst in missing:
                outcomes.append(Outcome(name, inst, "failed", "instance does not exist"))
            if not chosen and not missing:
                outcomes.append(Outcome(name, status="ok", detail="no instance selected"))
            if exports is None and schedule.get("node_policy") == "other":
                exports = master.export_counts()
            holders, counts = exports or ({}, {})
            runs: list[Outcome] = []
            for inst, primary in chosen:
                target = choose_target(schedule, inst, primary, online, holders, counts)
                if target is None:
                    outcomes.append(Outcome(name, inst, "failed", "no target node available"))
                    continue
                counts[target] = counts.get(target, 0) + 1
                if dry_run:
                    outcomes.append(Outcome(name, inst, "planned", f"export to {target}"))
                    continue
                try:
                    job_id = master.submit(export_job(schedule, inst, target))
                except errors.GenericError as err:
                    outcomes.append(Outcome(name, inst, "failed",
                                            f"submit: {errors.format_error(err)}"))
                    continue
                logger.info("Schedule %s: export of %s to %s submitted as job %d", name,
                            inst, target, job_id)
                runs.append(Outcome(name, inst, "submitted", f"export to {target}", job_id))
            if dry_run:
                continue
            if not names:   # run-now is out of band: the cron slots stay as they were
                st.last_run = now
            st.jobs = [o.job_id for o in runs if o.job_id is not None]
            st.job_instances = {str(o.job_id): o.instance for o in runs}
            failures = _planning_failures(outcomes, name)
            st.results = {o.instance: o.detail for o in failures}
            if not runs and complete_run(st, now) is not None and failures:
                result.completed.append((name, failures))
            submitted[name] = runs
        if not dry_run:
            state.save()
    if wait and not dry_run:
        for name, runs in submitted.items():
            for out in runs:
                assert out.job_id is not None
                outcome = master.wait(out.job_id)
                out.status = "ok" if outcome == "success" else "failed"
                if outcome != "success":
                    out.detail = f"{out.detail}: {outcome}"
                    logger.error("Schedule %s: job %d (%s) failed: %s", name, out.job_id,
                                 out.instance, outcome)
        _record_results(state, submitted, time.time(), result)
    for runs in submitted.values():
        outcomes.extend(runs)
    if not dry_run:
        _notify(result, info, schedules, defaults, sendmail)
    return outcomes


def _record_results(state: RunnerState, submitted: dict[str, list[Outcome]],
                    finished: float, result: Pass) -> None:
    with state.locked():
        for name, runs in submitted.items():
            st = state.get(name)
            # a runner pass meanwhile may have collected (recorded, notified) them already
            ours = [out for out in runs if out.job_id is not None and finish_job(
                st, out.job_id, "success" if out.status == "ok" else out.detail)]
            if ours and complete_run(st, finished) is not None:
                result.completed.append((name, [*_planning_failures(result.outcomes, name),
                                                *runs]))
        state.save()


def _notify(result: Pass, info: dict[str, Any], schedules: dict[str, dict[str, Any]],
            defaults: dict[str, Any], sendmail: str) -> None:
    """Mail and webhook per completed run, as its settings ask; failures are counted."""
    for name, runs in result.completed:
        settings = sched.settings(defaults, schedules.get(name, {"name": name}))
        failed = [o for o in runs if o.status == "failed"]
        payload = {
            "cluster": info.get("cluster_name", ""), "schedule": name,
            "status": "failed" if failed else "ok", "failed": len(failed),
            "counts": {"ok": sum(1 for o in runs if o.status == "ok"), "failed": len(failed)},
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "outcomes": [{"instance": o.instance, "status": o.status, "detail": o.detail,
                          "job_id": o.job_id} for o in runs],
        }
        body = "\n".join(summary(runs)[0]) + "\n"
        for problem in notify.deliver(settings, payload, body, sendmail):
            logger.error("Schedule %s: notification failed: %s", name, problem)
            result.notify_failures.append(f"{name}: {problem}")


def summary(outcomes: list[Outcome], notify_failures: Sequence[str] = ()
            ) -> tuple[list[str], int]:
    lines = []
    for out in outcomes:
        job = f" job {out.job_id}" if out.job_id is not None else ""
        target = f" {out.instance}" if out.instance else ""
        lines.append(f"{out.status.upper():9} {out.schedule}{target}{job}"
                     f"{': ' + out.detail if out.detail else ''}")
    for problem in notify_failures:
        lines.append(f"{'NOTIFY':9} {problem}")
    counts = {status: sum(1 for o in outcomes if o.status == status)
              for status in ("ok", "failed", "skipped", "submitted")}
    line = (f"Summary: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']}"
            f" skipped")
    if counts["submitted"]:
        line += f", {counts['submitted']} submitted"
    if notify_failures:
        line += f", {len(notify_failures)} notification(s) failed"
    lines.append(line)
    failed = counts["failed"] or notify_failures
    return lines, (cli.EXIT_FAILURE if failed else cli.EXIT_SUCCESS)


# --- command line ----------------------------------------------------------------------


def parse_now(text: str) -> float:
    """Epoch seconds or ISO 8601 (``Z``/offset; naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--now: expected epoch seconds or ISO 8601 time, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class _JournalFormatter(logging.Formatter):
    """``<N>message``: journald reads the syslog priority from the prefix."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
                  logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITIES.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(use_syslog: bool, verbose: bool) -> None:
    logger.handlers.clear()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s ganeti-backup-runner[{os.getpid()}] %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    if use_syslog and os.path.exists("/dev/log"):
        sys_handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        sys_handler.setFormatter(logging.Formatter("ganeti-backup-runner: %(message)s"))
        logger.addHandler(sys_handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganeti-backup-runner",
        description="Run the due backup schedules of this cluster (call from cron or a"
                    " systemd timer on the master node)")
    parser.add_argument("--now", type=parse_now, default=None, metavar="TIME",
                        help="Pretend the current time is TIME (epoch or ISO 8601)")
    parser.add_argument("--dry-run", action="store_true",
                        help="Only show what would be submitted")
    parser.add_argument("--no-wait", dest="wait", action="store_false",
                        help="Submit the jobs and exit without waiting for them; the next"
                             " pass collects their outcomes, records and notifies")
    parser.add_argument("--always-report", action="store_true",
                        help="Print the summary even when nothing ran (default: a pass"
                             " that did nothing prints nothing, so cron mails nothing)")
    parser.add_argument("--sendmail", default=None, metavar="PATH",
                        help=f"sendmail program for mail notifications (default:"
                             f" ${SENDMAIL_ENV} or {notify.DEFAULT_SENDMAIL})")
    parser.add_argument("--schedule", dest="names", action="append", default=[],
                        metavar="NAME", help="Run this schedule now, due or not")
    parser.add_argument("--syslog", action="store_true", help="Also log to syslog")
    parser.add_argument("--root", default=None, help="Cluster root (sets GANETI_ROOT)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="Debug logging; implies --always-report")
    return parser


def run_pass(client: luxi.Client, names: Sequence[str] = (), *, now: float | None = None,
             dry_run: bool = False, wait: bool = True, sendmail: str | None = None) -> Pass:
    """One pass through ``client``: the runner's, run-now's and RAPI's (which passes
    ``wait=False``: it answers with the submitted jobs, the next pass collects them)."""
    state = RunnerState(pathutils.current().data_dir)
    report = Pass()
    run(LuxiMaster(client), state, time.time() if now is None else now, names=names,
        dry_run=dry_run, wait=wait, report=report,
        sendmail=sendmail or os.environ.get(SENDMAIL_ENV, notify.DEFAULT_SENDMAIL))
    return report


def resolved_state(client: luxi.Client) -> RunnerState:
    """The state with the finished jobs of ``--no-wait`` runs resolved, for listings (not
    saved: the next pass records them and sends the notifications)."""
    state = load_state()
    pending = [st for st in state.schedules.values() if st.jobs]
    if pending:
        master = LuxiMaster(client)
        for st in pending:
            for job_id, result in master.job_outcomes(list(st.jobs)).items():
                if result is not None:
                    finish_job(st, job_id, result)
            complete_run(st, time.time())
    return state


def execute(names: Sequence[str], now: float | None, dry_run: bool, wait: bool,
            always_report: bool = True, sendmail: str | None = None) -> int:
    """Shared by the runner and ``gnt-backup schedule run-now``; prints the summary.

    Without ``always_report`` a pass that did nothing prints nothing (cron mails output).
    """
    with luxi.Client(timeout=60) as client:
        report = run_pass(client, names, now=now, dry_run=dry_run, wait=wait,
                          sendmail=sendmail)
    lines, code = summary(report.outcomes, report.notify_failures)
    if report.outcomes or report.notify_failures or always_report:
        for line in lines:
            print(line, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    setup_logging(opts.syslog, opts.verbose)
    try:
        return execute(opts.names, opts.now, opts.dry_run, opts.wait,
                       opts.always_report or opts.verbose or opts.dry_run, opts.sendmail)
    except errors.GenericError as err:
        logger.error("%s", errors.format_error(err))
        return cli.EXIT_FAILURE
