"""ganeti-backup-runner: run due backup schedules as jobs (cron or systemd timer).

One invocation: take the runner lock, find the schedules that are due (a
cron slot since their last run; missed slots are caught up by one run),
skip those whose previous jobs still run, submit one job per instance
(export keeping generations, then prune: a failed export fails the job
before the prune opcode runs), record the job ids, drop the lock, wait for
the jobs and print a summary.  The exit code is 1 when anything failed.

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

from ganeti import cli, constants, errors, luxi, opcodes, pathutils, query
from ganeti.backup import retention
from ganeti.backup import schedule as sched
from ganeti.fileutils import atomic_write

STATE_NAME = "backup-runner.json"
LOCK_NAME = "backup-runner.lock"
LOCK_WAIT = 60.0
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
                last_finished=entry.get("last_finished"))

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
    def submit(self, ops: list[opcodes.OpCode]) -> int: ...
    def unfinished(self, job_ids: list[int]) -> list[int]: ...
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

    def unfinished(self, job_ids: list[int]) -> list[int]:
        rows = self.cl.query_jobs(job_ids, ["id", "status"]) if job_ids else []
        return [int(r[0]) for r in rows
                if r is not None and r[1] not in constants.JOBS_FINALIZED]

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
    status: str = "ok"          # ok, failed, skipped, planned
    detail: str = ""
    job_id: int | None = None


def missed_slots(cron: str, since: float, now: float) -> int:
    count, slot = 0, since
    while count < MAX_COUNTED_SLOTS:
        slot = sched.next_slot(cron, slot)
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


def export_job(schedule: dict[str, Any], instance: str, target: str) -> list[opcodes.OpCode]:
    """Export keeping generations, then prune: the prune only runs if the export succeeded."""
    shutdown = schedule.get("shutdown_mode", "shutdown") == "shutdown"
    ops: list[opcodes.OpCode] = [opcodes.OpBackupExport.create(
        instance_name=instance, target_node=target, shutdown=shutdown, long_sleep=shutdown,
        compress=schedule.get("compress", constants.IEC_NONE), keep_generations=True,
        reason=[("backup-runner", f"schedule {schedule['name']}", time.time_ns())])]
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


def run(master: Master, state: RunnerState, now: float, *, names: Sequence[str] = (),
        dry_run: bool = False, wait: bool = True) -> list[Outcome]:
    """One runner pass; ``names`` forces those schedules to run now (run-now)."""
    outcomes: list[Outcome] = []
    submitted: dict[str, list[Outcome]] = {}
    with state.locked():
        schedules = {s["name"]: s for s in master.schedules()}
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
            since = st.last_run if st.last_run is not None else float(schedule["ctime"])
            if not names and not sched.is_due(schedule["cron"], since, now):
                continue
            running = master.unfinished(st.jobs)
            if running:
                outcomes.append(Outcome(name, status="skipped", detail="previous run still"
                                        f" running (job(s) {', '.join(map(str, running))})"))
                logger.warning("Schedule %s: previous run still running (jobs %s), skipped",
                               name, running)
                continue
            missed = 0 if names else missed_slots(schedule["cron"], since, now)
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
                runs.append(Outcome(name, inst, "ok", f"export to {target}", job_id))
            if dry_run:
                continue
            if not names:   # run-now is out of band: the cron slots stay as they were
                st.last_run = now
            st.jobs = [o.job_id for o in runs if o.job_id is not None]
            submitted[name] = runs
        if not dry_run:
            state.save()
    if not wait or dry_run:
        for runs in submitted.values():
            for out in runs:
                out.status = "submitted"
            outcomes.extend(runs)
        return outcomes
    for name, runs in submitted.items():
        for out in runs:
            assert out.job_id is not None
            result = master.wait(out.job_id)
            if result != "success":
                out.status, out.detail = "failed", f"{out.detail}: {result}"
                logger.error("Schedule %s: job %d (%s) failed: %s", name, out.job_id,
                             out.instance, result)
        outcomes.extend(runs)
    _record_results(state, submitted, time.time())
    return outcomes


def _record_results(state: RunnerState, submitted: dict[str, list[Outcome]],
                    finished: float) -> None:
    with state.locked():
        for name, runs in submitted.items():
            st = state.get(name)
            ids = [o.job_id for o in runs]
            failed = [o.instance for o in runs if o.status == "failed"]
            st.last_result = f"failed: {', '.join(failed)}" if failed else "success"
            st.last_finished = finished
            if st.jobs == ids:
                st.jobs = []
        state.save()


def summary(outcomes: list[Outcome]) -> tuple[list[str], int]:
    lines = []
    for out in outcomes:
        job = f" job {out.job_id}" if out.job_id is not None else ""
        target = f" {out.instance}" if out.instance else ""
        lines.append(f"{out.status.upper():9} {out.schedule}{target}{job}"
                     f"{': ' + out.detail if out.detail else ''}")
    failed = sum(1 for o in outcomes if o.status == "failed")
    ok = sum(1 for o in outcomes if o.status in ("ok", "submitted"))
    skipped = sum(1 for o in outcomes if o.status == "skipped")
    lines.append(f"Summary: {ok} ok, {failed} failed, {skipped} skipped")
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
                        help="Submit the jobs and exit without waiting for them")
    parser.add_argument("--schedule", dest="names", action="append", default=[],
                        metavar="NAME", help="Run this schedule now, due or not")
    parser.add_argument("--syslog", action="store_true", help="Also log to syslog")
    parser.add_argument("--root", default=None, help="Cluster root (sets GANETI_ROOT)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def execute(names: Sequence[str], now: float | None, dry_run: bool, wait: bool) -> int:
    """Shared by the runner and ``gnt-backup schedule run-now``; prints the summary."""
    state = RunnerState(pathutils.current().data_dir)
    with luxi.Client(timeout=60) as client:
        outcomes = run(LuxiMaster(client), state, time.time() if now is None else now,
                       names=names, dry_run=dry_run, wait=wait)
    lines, code = summary(outcomes)
    for line in lines:
        print(line, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    setup_logging(opts.syslog, opts.verbose)
    try:
        return execute(opts.names, opts.now, opts.dry_run, opts.wait)
    except errors.GenericError as err:
        logger.error("%s", errors.format_error(err))
        return cli.EXIT_FAILURE
