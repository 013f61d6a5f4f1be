"""gnt-job: list, inspect, follow, cancel, archive and reprioritise jobs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ganeti import cli, constants, errors, qlang

DEFAULT_FIELDS = ("id", "status", "summary")
# the job field whose selection lists archived jobs too (lib/query_resources/job.py)
ARCHIVED_FIELD = "archived"

# The status options (--pending, ...) and the job statuses each selects; several
# options select the union (Ganeti 3.0 keeps only the last one given)
_STATUS_GROUPS: dict[str, tuple[str, ...]] = {
    "running": (constants.OP_STATUS_RUNNING,),
    "pending": (constants.OP_STATUS_QUEUED, constants.OP_STATUS_WAITING,
                constants.OP_STATUS_CANCELING),
    "queued": (constants.OP_STATUS_QUEUED,),
    "waiting": (constants.OP_STATUS_WAITING,),
    "error": (constants.OP_STATUS_ERROR,),
    "finished": tuple(sorted(constants.JOBS_FINALIZED)),
}


def selected_statuses(opts: argparse.Namespace) -> list[str]:
    """The job statuses the status options on the command line select, in table order."""
    statuses: list[str] = []
    for group, members in _STATUS_GROUPS.items():
        if getattr(opts, group, False):
            statuses.extend(s for s in members if s not in statuses)
    return statuses


def status_filter(statuses: Sequence[str]) -> list[Any] | None:
    return [qlang.OP_OR, *[[qlang.OP_EQUAL, "status", s] for s in statuses]] \
        if statuses else None

# --- list ---------------------------------------------------------------------------


def build_job_filter(opts: argparse.Namespace, statuses: Sequence[str]) -> list[Any] | None:
    """Query filter for ``gnt-job list``: the ids (or -F filter) and any of the statuses."""
    return cli.list_filter(opts, opts.job_ids, namefield="id", isnumeric=True,
                           qfilter=status_filter(statuses))


def _format_summary(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _format_ts(value: Any) -> str:
    return cli.format_timestamp(value) if value else "N/A"


_LIST_FORMATTERS = {"summary": _format_summary, "received_ts": _format_ts,
                    "start_ts": _format_ts, "end_ts": _format_ts}


def list_jobs(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, DEFAULT_FIELDS)
    if opts.archived and ARCHIVED_FIELD not in fields:
        # asking for the field is what brings the archive in (as in Ganeti 3.0)
        fields.append(ARCHIVED_FIELD)
    with cli.get_client() as cl:
        return cli.generic_list(cl, "job", fields,
                                build_job_filter(opts, selected_statuses(opts)),
                                opts, _LIST_FORMATTERS)


# --- info ---------------------------------------------------------------------------

_INFO_FIELDS = ["id", "status", "priority", "ops", "opstatus", "opresult", "oplog",
                "opstart", "opexec", "opend", "oppriority", "received_ts", "start_ts",
                "end_ts"]


def _delta(start: Any, end: Any) -> str:
    if not start or not end:
        return ""
    seconds = cli.merge_time(end) - cli.merge_time(start)
    return f" (delta {seconds:.6f}s)"


def format_job_info(row: Sequence[Any]) -> list[str]:
    """Human-readable description of one job (``gnt-job info``)."""
    info = dict(zip(_INFO_FIELDS, row, strict=True))
    lines = [f"- Job ID: {info['id']}",
             f"  Status: {info['status']}",
             f"  Priority: {info['priority']}",
             f"  Received:         {_format_ts(info['received_ts'])}",
             f"  Processing start: {_format_ts(info['start_ts'])}"
             f"{_delta(info['received_ts'], info['start_ts'])}",
             f"  Processing end:   {_format_ts(info['end_ts'])}"
             f"{_delta(info['start_ts'], info['end_ts'])}"]
    if info["received_ts"] and info["end_ts"]:
        total = cli.merge_time(info["end_ts"]) - cli.merge_time(info["received_ts"])
        lines.append(f"  Total processing time: {total:.6f} seconds")
    lines.append("  Opcodes:")
    per_op = zip(info["ops"], info["opstatus"], info["opresult"], info["oplog"],
                 info["opstart"], info["opexec"], info["opend"], info["oppriority"],
                 strict=True)
    for op, status, result, log, start, exec_ts, end, prio in per_op:
        lines.append(f"    - Opcode: {op.get('OP_ID', '?')}")
        lines.append(f"      Status: {status}")
        lines.append(f"      Priority: {prio}")
        lines.append(f"      Processing start: {_format_ts(start)}")
        lines.append(f"      Execution start:  {_format_ts(exec_ts)}")
        lines.append(f"      Processing end:   {_format_ts(end)}")
        lines.append("      Input fields:")
        for key in sorted(k for k in op if k != "OP_ID"):
            lines.append(f"        {key}: {json.dumps(op[key], sort_keys=True)}")
        if status == constants.OP_STATUS_ERROR and isinstance(result, list) \
                and len(result) == 2 and isinstance(result[0], str):
            result_text = errors.format_error(errors.decode(result)).replace("\n", " ")
        else:
            result_text = json.dumps(result, sort_keys=True)
        lines.append(f"      Result: {result_text}")
        lines.append("      Execution log:")
        for entry in log:
            lines.append(f"        - {cli.format_log_entry(entry)}")
    return lines


def show_job_info(opts: argparse.Namespace) -> int:
    """``info [ID...]``: the given jobs, or every job in the queue (as Ganeti)."""
    with cli.get_client() as cl:
        rows = cl.query_jobs(list(opts.job_ids) or None, _INFO_FIELDS)
    if opts.job_ids:
        _check_found(opts.job_ids, rows)
    for row in rows:
        if row is not None:
            print("\n".join(format_job_info(row)))
    return cli.EXIT_SUCCESS


def _check_found(job_ids: Sequence[int], rows: Sequence[Any]) -> None:
    """The CLI's one not-found rule (cli.not_found) for jobs asked for by id."""
    missing = [job_id for job_id, row in zip(job_ids, rows, strict=True) if row is None]
    if missing:
        raise cli.not_found("Job", missing)


# --- watch / cancel / archive / priority ------------------------------------------------


def _follow(cl: Any, job_id: int, feedback_fn: cli.FeedbackFn | None) -> int:
    """Poll a job to its end; ``Job N failed: ...`` and a non-zero exit if it did not
    succeed (Ganeti's wording)."""
    try:
        cli.poll_job(job_id, cl, feedback_fn)
    except errors.GenericError as err:
        print(f"Job {job_id} failed: {errors.format_error(err)}", file=sys.stderr)
        return cli.EXIT_FAILURE
    return cli.EXIT_SUCCESS


def _check_job_exists(cl: Any, job_id: int) -> None:
    _check_found([job_id], cl.query_jobs([job_id], ["status"]))


def watch_job(opts: argparse.Namespace) -> int:
    job_id = opts.job_id
    with cli.get_client() as cl:
        _check_job_exists(cl, job_id)
        header = f"Output from job {job_id} follows"
        print(header)
        print("-" * len(header), flush=True)
        return _follow(cl, job_id, None)


def wait_job(opts: argparse.Namespace) -> int:
    """``wait ID``: block until the job ends, printing nothing unless it failed."""
    with cli.get_client() as cl:
        _check_job_exists(cl, opts.job_id)
        return _follow(cl, opts.job_id, lambda _entry: None)


def _select_jobs(opts: argparse.Namespace, cl: Any, question: str) -> list[int] | None:
    """The jobs a cancel/change-priority acts on: its ids, or every job in the selected
    statuses (listed, then confirmed unless --force). None: the user said no."""
    statuses = selected_statuses(opts)
    if bool(opts.job_ids) == bool(statuses):
        raise errors.OpPrereqError("Either a status filter (--pending, --queued, --waiting)"
                                   " or job ID(s) must be given, and never both",
                                   errors.ECODE_INVAL)
    if not statuses:
        _check_found(opts.job_ids, cl.query_jobs(list(opts.job_ids), ["id"]))
        return list(opts.job_ids)
    result = cl.query("job", ["id", "status", "summary"], status_filter(statuses))
    jobs = [int(row[0][1]) for row in result["data"]]
    if not jobs:
        raise errors.OpPrereqError("No jobs with the requested status have been found",
                                   errors.ECODE_STATE)
    if not opts.force:
        _code, lines = cli.format_query_result(result, formatters=_LIST_FORMATTERS)
        print("\n".join(lines), flush=True)
        if not cli.ask_user(question):
            return None
    return jobs


def _per_job(opts: argparse.Namespace, action: str) -> int:
    code = cli.EXIT_SUCCESS
    with cli.get_client() as cl:
        if action == "archive":
            job_ids = list(opts.job_ids)
            _check_found(job_ids, cl.query_jobs(job_ids, ["id"]))
        else:
            verb = {"cancel": "Cancel", "kill": "Kill",
                    "priority": "Change the priority of"}[action]
            selected = _select_jobs(opts, cl, f"{verb} the job(s) listed above?")
            if selected is None:
                return cli.EXIT_CONFIRMATION
            job_ids = selected
        for job_id in job_ids:
            if action in ("cancel", "kill"):
                ok, msg = cl.cancel_job(job_id, kill=action == "kill")
            elif action == "archive":
                ok = cl.archive_job(job_id)
                msg = f"Job {job_id} archived" if ok else f"Failed to archive job {job_id}"
            else:
                ok, msg = cl.change_job_priority(job_id, opts.priority)
            print(msg, file=sys.stdout if ok else sys.stderr)
            if not ok:
                code = cli.EXIT_FAILURE
    return code


def cancel_jobs(opts: argparse.Namespace) -> int:
    if opts.kill and not opts.yes_do_it:
        raise errors.OpPrereqError("The --kill option must be confirmed with --yes-do-it",
                                   errors.ECODE_INVAL)
    return _per_job(opts, "kill" if opts.kill else "cancel")


def archive_jobs(opts: argparse.Namespace) -> int:
    return _per_job(opts, "archive")


def change_priority(opts: argparse.Namespace) -> int:
    if opts.priority is None:
        print("The --priority option must be given", file=sys.stderr)
        return cli.EXIT_USAGE
    return _per_job(opts, "priority")


def auto_archive(opts: argparse.Namespace) -> int:
    age = -1 if opts.age == "all" else cli.parse_time_spec(opts.age)
    with cli.get_client() as cl:
        count, left = cl.auto_archive_jobs(age, 60)
    print(f"Archived {count} jobs, {left} unchecked left")
    return cli.EXIT_SUCCESS


def _status_opt(flag: str, text: str) -> cli.Option:
    return cli.Option((flag,), {"action": "store_true", "default": False, "help": text})


_RUNNING_OPT = _status_opt("--running", "Only running jobs")
_PENDING_OPT = _status_opt("--pending", "Only jobs pending execution: queued, waiting"
                           " (for locks) or being canceled")
_QUEUED_OPT = _status_opt("--queued", "Only queued jobs (not started yet)")
_WAITING_OPT = _status_opt("--waiting", "Only jobs waiting for their locks")
_ERROR_OPT = _status_opt("--error", "Only failed jobs (status error; -o +opresult shows"
                         " the errors)")
_FINISHED_OPT = _status_opt("--finished", "Only finished jobs (success, error, canceled)")
_ARCHIVED_OPT = cli.Option(("--archived",), {
    "action": "store_true", "default": False,
    "help": "Include archived jobs (adds the Archived column; reads the whole archive,"
            " which is slow when it is big)"})
_FORCE_OPT = cli.Option(("-f", "--force"), {
    "action": "store_true", "default": False,
    "help": "Do not ask for confirmation when a status option selects the jobs"})
_KILL_OPT = cli.Option(("--kill",), {
    "action": "store_true", "default": False,
    "help": "Ganeti kills running jobs with SIGKILL; here a job's opcode runs in a thread"
            " of the master daemon, which cannot be killed without taking the master"
            " down, so running jobs are refused (and named), and jobs not yet running"
            " are canceled. Needs --yes-do-it"})
_YES_DO_IT_OPT = cli.Option(("--yes-do-it", "--ya-rly"), {
    "dest": "yes_do_it", "action": "store_true", "default": False,
    "help": "Confirm --kill"})
_JOB_IDS = cli.Arg("job_ids", 1, None, cli.job_id_arg)
# ids, or none with a status option (cancel, change-priority) or for every job (info)
_ANY_JOB_IDS = cli.Arg("job_ids", 0, None, cli.job_id_arg)
_JOB_ID = cli.Arg("job_id", 1, 1, cli.job_id_arg)

COMMANDS: dict[str, cli.Command] = {
    "list": cli.Command(list_jobs, (cli.names_arg("job_ids"),),
                        (*cli.LIST_OPTS, _RUNNING_OPT, _PENDING_OPT, _ERROR_OPT,
                         _FINISHED_OPT, _ARCHIVED_OPT),
                        "List jobs (all, or the given ids)"),
    "list-fields": cli.list_fields_command("job", "list"),
    "info": cli.Command(show_job_info, (_ANY_JOB_IDS,), (),
                        "Show details of jobs (all jobs when no id is given)"),
    "watch": cli.Command(watch_job, (_JOB_ID,), (), "Follow a job's log until it finishes"),
    "wait": cli.Command(wait_job, (_JOB_ID,), (),
                        "Wait for a job to finish, printing nothing unless it fails"),
    "cancel": cli.Command(cancel_jobs, (_ANY_JOB_IDS,),
                          (_FORCE_OPT, _KILL_OPT, _YES_DO_IT_OPT, _PENDING_OPT, _QUEUED_OPT,
                           _WAITING_OPT),
                          "Cancel queued or waiting jobs: the given ids, or all jobs in"
                          " the selected statuses"),
    "archive": cli.Command(archive_jobs, (_JOB_IDS,), (), "Archive finished jobs"),
    "autoarchive": cli.Command(auto_archive, (cli.Arg("age"),), (),
                               "Archive finished jobs older than AGE (e.g. 1d, 2h, all)"),
    "change-priority": cli.Command(change_priority, (_ANY_JOB_IDS,),
                                   (cli.PRIORITY_OPT, _FORCE_OPT, _PENDING_OPT, _QUEUED_OPT,
                                    _WAITING_OPT),
                                   "Change the priority of queued or waiting jobs: the"
                                   " given ids, or all jobs in the selected statuses"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.generic_main("gnt-job", COMMANDS, argv)
