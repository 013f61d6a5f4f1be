"""gnt-job: list, inspect, follow, cancel, archive and reprioritise jobs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from ganeti import cli, constants, errors, qlang

DEFAULT_FIELDS = ("id", "status", "summary")

_STATUS_GROUPS: dict[str, tuple[str, ...]] = {
    "running": (constants.OP_STATUS_RUNNING,),
    "pending": (constants.OP_STATUS_QUEUED, constants.OP_STATUS_WAITING,
                constants.OP_STATUS_CANCELING),
    "finished": tuple(sorted(constants.JOBS_FINALIZED)),
}

# --- list ---------------------------------------------------------------------------


def build_job_filter(opts: argparse.Namespace, statuses: Sequence[str]) -> list[Any] | None:
    """Query filter for ``gnt-job list``: the ids (or -F filter) and any of the statuses."""
    status_filter = [qlang.OP_OR, *[[qlang.OP_EQUAL, "status", s] for s in statuses]] \
        if statuses else None
    return cli.list_filter(opts, opts.job_ids, namefield="id", isnumeric=True,
                           qfilter=status_filter)


def _format_summary(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _format_ts(value: Any) -> str:
    return cli.format_timestamp(value) if value else "N/A"


def list_jobs(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, DEFAULT_FIELDS)
    statuses: list[str] = []
    for group in ("running", "pending", "finished"):
        if getattr(opts, group):
            statuses.extend(s for s in _STATUS_GROUPS[group] if s not in statuses)
    formatters = {"summary": _format_summary, "received_ts": _format_ts,
                  "start_ts": _format_ts, "end_ts": _format_ts}
    with cli.get_client() as cl:
        return cli.generic_list(cl, "job", fields, build_job_filter(opts, statuses),
                                opts, formatters)


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
    with cli.get_client() as cl:
        rows = cl.query_jobs(list(opts.job_ids), _INFO_FIELDS)
    _check_found(opts.job_ids, rows)
    for row in rows:
        print("\n".join(format_job_info(row)))
    return cli.EXIT_SUCCESS


def _check_found(job_ids: Sequence[int], rows: Sequence[Any]) -> None:
    """The CLI's one not-found rule (cli.not_found) for jobs asked for by id."""
    missing = [job_id for job_id, row in zip(job_ids, rows, strict=True) if row is None]
    if missing:
        raise cli.not_found("Job", missing)


# --- watch / cancel / archive / priority ------------------------------------------------


def watch_job(opts: argparse.Namespace) -> int:
    job_id = opts.job_id
    with cli.get_client() as cl:
        _check_found([job_id], cl.query_jobs([job_id], ["status"]))
        print(f"Output from job {job_id} follows")
        print("-" * 25, flush=True)
        cli.poll_job(job_id, cl)
    return cli.EXIT_SUCCESS


def _per_job(opts: argparse.Namespace, action: str) -> int:
    code = cli.EXIT_SUCCESS
    with cli.get_client() as cl:
        _check_found(opts.job_ids, cl.query_jobs(list(opts.job_ids), ["id"]))
        for job_id in opts.job_ids:
            if action == "cancel":
                ok, msg = cl.cancel_job(job_id)
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
    return _per_job(opts, "cancel")


def archive_jobs(opts: argparse.Namespace) -> int:
    return _per_job(opts, "archive")


def change_priority(opts: argparse.Namespace) -> int:
    if opts.priority is None:
        print("Missing --priority", file=sys.stderr)
        return cli.EXIT_USAGE
    return _per_job(opts, "priority")


def auto_archive(opts: argparse.Namespace) -> int:
    age = -1 if opts.age == "all" else cli.parse_time_spec(opts.age)
    with cli.get_client() as cl:
        count, left = cl.auto_archive_jobs(age, 60)
    print(f"Archived {count} jobs, {left} unchecked left")
    return cli.EXIT_SUCCESS


_RUNNING_OPT = cli.Option(("--running",), {"action": "store_true", "default": False,
                                           "help": "Only running jobs"})
_PENDING_OPT = cli.Option(("--pending",), {"action": "store_true", "default": False,
                                           "help": "Only queued, waiting and canceling jobs"})
_FINISHED_OPT = cli.Option(("--finished",), {"action": "store_true", "default": False,
                                             "help": "Only finished jobs"})
_JOB_IDS = cli.Arg("job_ids", 1, None, cli.job_id_arg)

COMMANDS: dict[str, cli.Command] = {
    "list": cli.Command(list_jobs, (cli.names_arg("job_ids"),),
                        (*cli.LIST_OPTS, _RUNNING_OPT, _PENDING_OPT, _FINISHED_OPT),
                        "List jobs (all, or the given ids)"),
    "list-fields": cli.list_fields_command("job", "list"),
    "info": cli.Command(show_job_info, (_JOB_IDS,), (), "Show details of jobs"),
    "watch": cli.Command(watch_job, (cli.Arg("job_id", 1, 1, cli.job_id_arg),), (),
                         "Follow a job's log until it finishes"),
    "cancel": cli.Command(cancel_jobs, (_JOB_IDS,), (), "Cancel queued or waiting jobs"),
    "archive": cli.Command(archive_jobs, (_JOB_IDS,), (), "Archive finished jobs"),
    "autoarchive": cli.Command(auto_archive, (cli.Arg("age"),), (),
                               "Archive finished jobs older than AGE (e.g. 1d, 2h, all)"),
    "change-priority": cli.Command(change_priority, (_JOB_IDS,), (cli.PRIORITY_OPT,),
                                   "Change the priority of queued or waiting jobs"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.generic_main("gnt-job", COMMANDS, argv)
