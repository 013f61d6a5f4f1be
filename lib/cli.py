"""Shared framework of the gnt-* commands.

Each script declares a table ``{name: Command(...)}``; :func:`generic_main`
turns it into an argparse parser, runs the chosen function and maps errors to
one readable line and an exit code (0 ok, 1 failure, 2 usage).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from ganeti import constants, errors, luxi, pathutils, qlang, query
from ganeti.opcodes import OpCode

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PRIORITY_NAMES: dict[str, int] = {
    "low": constants.OP_PRIO_LOW,
    "normal": constants.OP_PRIO_NORMAL,
    "high": constants.OP_PRIO_HIGH,
}

# --- options ---------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One argparse option, declared once and shared between commands."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(*self.flags, **self.kwargs)


def _priority(value: str) -> int:
    try:
        return PRIORITY_NAMES[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"invalid priority '{value}' (choose from {', '.join(PRIORITY_NAMES)})") from None


DEBUG_OPT = Option(("-d", "--debug"), {"action": "count", "default": 0,
                                       "help": "Show tracebacks and debug output"})
ROOT_OPT = Option(("--root",), {"metavar": "DIR", "default": None,
                                "help": "Cluster root directory (sets GANETI_ROOT)"})
DRY_RUN_OPT = Option(("--dry-run",), {"action": "store_true", "default": False,
                                      "help": "Only check the prerequisites, change nothing"})
PRIORITY_OPT = Option(("--priority",), {"type": _priority, "default": None,
                                        "metavar": "|".join(PRIORITY_NAMES),
                                        "help": "Priority of the submitted job"})
SUBMIT_OPT = Option(("--submit",), {"dest": "submit_only", "action": "store_true",
                                    "default": False,
                                    "help": "Print the job id and exit without waiting"})
PRINT_JOBID_OPT = Option(("--print-jobid",), {"action": "store_true", "default": False,
                                              "help": "Print the job id before waiting"})
REASON_OPT = Option(("--reason",), {"default": None, "help": "Reason for this operation"})
FIELDS_OPT = Option(("-o", "--output"), {"dest": "output", "default": None,
                                         "metavar": "FIELDS",
                                         "help": "Comma-separated fields to show"
                                                 " ('+f1,f2' adds to the defaults)"})
NOHDR_OPT = Option(("--no-headers",), {"dest": "no_headers", "action": "store_true",
                                       "default": False, "help": "Do not print a header"})
SEP_OPT = Option(("--separator",), {"default": None, "metavar": "SEP",
                                    "help": "Separate columns by SEP instead of padding"})
FILTER_OPT = Option(("-F", "--filter"), {
    "dest": "force_filter", "action": "store_true", "default": False,
    "help": "Read the argument as a query filter (e.g. 'name =~ m/^web/ and status =="
            " \"running\"', see doc/query-language.md); without -F an argument holding"
            " blanks, quotes, brackets, =, <, >, !, ~ or / is read as one too, and names"
            " with * or ? are glob patterns"})
UNITS_OPT = Option(("--units",), {
    "default": None, "choices": ["h", "m", "g", "t"],
    "help": "Units of every size column (disk sizes and export sizes too): h (readable,"
            " the default in a table), m, g or t (MiB, GiB, TiB); without it --separator"
            " output shows plain numbers (MiB, or bytes where a field counts bytes)"})

# Options every command of every script understands
GLOBAL_OPTS: tuple[Option, ...] = (DEBUG_OPT, ROOT_OPT)
# Options of commands that submit a job
SUBMIT_OPTS: tuple[Option, ...] = (DRY_RUN_OPT, PRIORITY_OPT, SUBMIT_OPT, PRINT_JOBID_OPT,
                                   REASON_OPT)
# Options of every list command (their NAMES argument goes through list_filter)
LIST_OPTS: tuple[Option, ...] = (FIELDS_OPT, NOHDR_OPT, SEP_OPT, FILTER_OPT)


class _Unset:
    def __repr__(self) -> str:
        return "(unchanged)"


_UNSET: Any = _Unset()


def _field_parser(name: str, annotation: Any) -> tuple[Callable[[str], Any], str, list[str]]:
    """(string -> value, metavar, choices) for one model field; "none" clears an optional."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    base = args[0] if optional and len(args) == 1 else annotation
    origin = typing.get_origin(base)
    while origin is typing.Annotated:
        base = typing.get_args(base)[0]
        origin = typing.get_origin(base)
    choices: list[str] = []

    def convert(text: str) -> Any:
        if optional and text.lower() in ("", "none", "default"):
            return None
        if base is int:
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{name}: expected a whole number, got '{text}'") from None
        if origin is list:
            return [v for v in text.split(",") if v]
        if origin is typing.Literal and text not in choices:
            raise argparse.ArgumentTypeError(
                f"{name}: choose from {', '.join(choices)}, got '{text}'")
        return text

    if origin is typing.Literal:
        choices = [str(c) for c in typing.get_args(base)]
        return convert, "|".join(choices + (["none"] if optional else [])), choices
    metavar = "N" if base is int else ("A,B" if origin is list else "VALUE")
    return convert, metavar, choices


def model_options(model: type[Any], prefix: str, dest_prefix: str,
                  names: Sequence[str] | None = None,
                  default_help: str | None = None) -> tuple[Option, ...]:
    """One ``--PREFIX-FIELD`` option per field of a pydantic model, help from its description.

    Keeps a settings model the single definition of its options (see model_values).
    ``names`` picks some fields; an empty ``prefix`` gives plain ``--FIELD`` flags;
    ``default_help`` replaces the model's default in the help (e.g. where unset
    means "the cluster's default").
    """
    options = []
    for name, info in model.model_fields.items():
        if names is not None and name not in names:
            continue
        convert, metavar, _choices = _field_parser(name, info.annotation)
        flag = f"--{prefix + '-' if prefix else ''}{name.replace('_', '-')}"
        default = info.get_default(call_default_factory=True)
        shown = ",".join(default) if isinstance(default, list) else default
        default_text = default_help or ("none" if shown in (None, "") else str(shown))
        options.append(Option((flag,), {"dest": f"{dest_prefix}{name}", "type": convert,
                                        "default": _UNSET, "metavar": metavar,
                                        "help": f"{info.description} (default:"
                                                f" {default_text})"}))
    return tuple(options)


def model_values(opts: argparse.Namespace, model: type[Any], dest_prefix: str
                 ) -> dict[str, Any]:
    """The fields of ``model`` the user set through :func:`model_options`."""
    return {name: getattr(opts, f"{dest_prefix}{name}") for name in model.model_fields
            if getattr(opts, f"{dest_prefix}{name}", _UNSET) is not _UNSET}


# --- positional arguments ----------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """Positional argument(s): ``min``..``max`` values (max None: unbounded)."""

    name: str
    min: int = 1
    max: int | None = 1
    convert: Callable[[str], Any] | None = None

    @property
    def nargs(self) -> str | int | None:
        if self.min == 1 and self.max == 1:
            return None
        if self.min == 0 and self.max == 1:
            return "?"
        if self.max is None:
            return "+" if self.min >= 1 else "*"
        return self.max if self.min == self.max else "*"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        kwargs: dict[str, Any] = {"metavar": self.name.upper()}
        if self.convert is not None:
            kwargs["type"] = self.convert
        if self.nargs is not None:
            kwargs["nargs"] = self.nargs
        parser.add_argument(self.name, **kwargs)


def job_id_arg(value: str) -> int:
    try:
        job_id = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid job id '{value}'") from None
    if job_id < 0:
        raise argparse.ArgumentTypeError(f"invalid job id '{value}'")
    return job_id


def names_arg(what: str) -> Arg:
    """The NAMES argument of a list command: names, glob patterns or one filter (-F)."""
    return Arg(what, min=0, max=None)


def list_filter(opts: argparse.Namespace, names: Sequence[str] | None,
                namefield: str = "name", isnumeric: bool = False,
                qfilter: list[Any] | None = None) -> list[Any] | None:
    """The Query filter of a list command: its names (or -F filter) and ``qfilter``."""
    return qlang.and_filters(
        qlang.make_filter(list(names or ()), bool(getattr(opts, "force_filter", False)),
                          namefield=namefield, isnumeric=isnumeric),
        qfilter)


@dataclass(frozen=True)
class Command:
    """One entry of a script's command table."""

    func: Callable[[argparse.Namespace], int]
    args: tuple[Arg, ...] = ()
    options: tuple[Option, ...] = ()
    description: str = ""


def build_parser(prog: str, commands: dict[str, Command],
                 description: str = "") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in commands.items():
        cparser = sub.add_parser(name, help=cmd.description, description=cmd.description)
        for opt in (*GLOBAL_OPTS, *cmd.options):
            opt.add_to(cparser)
        for arg in cmd.args:
            arg.add_to(cparser)
        # argparse cannot express every count range; parse_command_line checks them
        cparser.set_defaults(func=cmd.func, _arg_specs=cmd.args)
    return parser


def parse_command_line(prog: str, commands: dict[str, Command],
                       argv: Sequence[str]) -> argparse.Namespace:
    """Parse argv (without the program name); argparse exits 2 on misuse."""
    parser = build_parser(prog, commands)
    opts = parser.parse_args(list(argv))
    for spec in getattr(opts, "_arg_specs", ()):
        values = getattr(opts, spec.name, None)
        if not isinstance(values, list):
            continue
        if len(values) < spec.min:
            parser.error(f"{spec.name}: at least {spec.min} value(s) needed")
        if spec.max is not None and len(values) > spec.max:
            parser.error(f"{spec.name}: at most {spec.max} value(s) allowed")
    return opts


class JobSubmitted(Exception):
    """Raised in --submit mode once the job is queued; carries the job id."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def generic_main(prog: str, commands: dict[str, Command],
                 argv: Sequence[str] | None = None) -> int:
    """Run one gnt-* invocation and return its exit code."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        opts = parse_command_line(prog, commands, argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    try:
        return int(opts.func(opts))
    except JobSubmitted as sub:
        print(f"JobID: {sub.job_id}")
        return EXIT_SUCCESS
    except errors.GenericError as err:
        if opts.debug:
            traceback.print_exc()
        print(errors.format_error(err), file=sys.stderr)
        if isinstance(err, errors.QueryFilterParseError):
            for line in qlang.filter_details(err):
                print(f"  {line}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("Aborted. Note that if the operation created any jobs, they might have been"
              " submitted and will continue to run in the background.", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_FAILURE
    except Exception as err:  # a bug, not a cluster error: still one line unless --debug
        if opts.debug:
            traceback.print_exc()
        print(f"Unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE


# --- talking to the master ----------------------------------------------------------


def get_client(timeout: float = 60) -> luxi.Client:
    return luxi.Client(timeout=timeout)


def set_generic_opcode_opts(op: OpCode, opts: argparse.Namespace) -> None:
    """Copy --dry-run, --debug, --priority and --reason into an opcode."""
    if getattr(opts, "dry_run", False):
        op.dry_run = True
    if getattr(opts, "debug", 0):
        op.debug_level = int(opts.debug)
    priority = getattr(opts, "priority", None)
    if priority is not None:
        op.priority = priority
    reason = getattr(opts, "reason", None)
    if reason:
        op.reason = [*op.reason, ("gnt:user", str(reason), time.time_ns())]


def format_log_entry(entry: Sequence[Any]) -> str:
    """``<local time> <message>`` for one job log entry ``[serial, ts, type, msg]``."""
    _serial, ts, log_type, message = entry
    when = time.ctime(merge_time(ts)) if ts else "?"
    if isinstance(message, str):
        text = message
    else:
        text = f"{log_type}: {json.dumps(message, sort_keys=True)}"
    return f"{when} {text}"


def merge_time(ts: Sequence[int] | float) -> float:
    if isinstance(ts, (int, float)):
        return float(ts)
    sec, usec = ts
    return sec + usec / 1_000_000


FeedbackFn = Callable[[Sequence[Any]], None]


def _print_feedback(entry: Sequence[Any]) -> None:
    print(format_log_entry(entry), flush=True)


def poll_job(job_id: int, cl: luxi.Client, feedback_fn: FeedbackFn | None = None) -> list[Any]:
    """Follow a job, handing each log entry to ``feedback_fn``; return its results.

    Raises the job's own error (typed) when it did not succeed.
    """
    feedback = feedback_fn or _print_feedback
    prev_info: list[Any] | None = None
    prev_serial: int | None = None
    while True:
        change = cl.wait_for_job_change_once(job_id, ["status"], prev_info, prev_serial)
        if change is None:
            raise errors.JobLost(f"Job {job_id} not found")
        if change == luxi.JOB_NOTCHANGED:
            continue
        job_info, log_entries = change
        for entry in log_entries:
            feedback(entry)
            prev_serial = max(prev_serial or 0, int(entry[0]))
        prev_info = job_info
        if job_info[0] in constants.JOBS_FINALIZED:
            break
    return luxi.job_results(job_id, cl.query_jobs([job_id], luxi.RESULT_FIELDS), "not found")


def submit_opcode(op: OpCode, opts: argparse.Namespace | None = None,
                  cl: luxi.Client | None = None,
                  feedback_fn: FeedbackFn | None = None) -> Any:
    """Submit one opcode as a job and wait for it; return the opcode's result.

    With --submit this raises :class:`JobSubmitted` right after queueing.
    """
    if opts is not None:
        set_generic_opcode_opts(op, opts)
    client = cl or get_client()
    job_id = client.submit_job([op])
    if opts is not None and getattr(opts, "submit_only", False):
        raise JobSubmitted(job_id)
    if opts is not None and getattr(opts, "print_jobid", False):
        print(job_id, flush=True)
    return poll_job(job_id, client, feedback_fn)[0]


# --- parsing helpers ---------------------------------------------------------------


def parse_fields(selected: str | None, default: Sequence[str]) -> list[str]:
    """Field list from -o: ``None`` -> defaults, ``+a,b`` -> defaults plus a, b."""
    if selected is None:
        return list(default)
    if selected.startswith("+"):
        return [*default, *[f for f in selected[1:].split(",") if f]]
    return [f for f in selected.split(",") if f]


_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time_spec(value: str) -> int:
    """Seconds from ``30``, ``30s``, ``5m``, ``2h``, ``1d`` or ``1w``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", value)
    if not match:
        raise errors.OpPrereqError(f"Invalid time specification '{value}'", errors.ECODE_INVAL)
    return int(match.group(1)) * _TIME_UNITS[match.group(2) or "s"]


# --- output -------------------------------------------------------------------------


def format_unit(mib: float, units: str) -> str:
    """Format a size in MiB: ``h`` picks a readable unit, ``m``/``g``/``t`` force one."""
    if units == "m" or (units == "h" and mib < 1024):
        return f"{round(mib)}" if units == "m" else f"{round(mib)}M"
    if units == "g" or (units == "h" and mib < 1024 * 1024):
        text = f"{mib / 1024:0.1f}"
        return text if units == "g" else text + "G"
    text = f"{mib / 1024 / 1024:0.1f}"
    return text if units == "t" else text + "T"


MIB = 1 << 20


def format_sizes(value: Any, units: str | None, separator: str | None = None,
                 in_bytes: bool = False) -> str:
    """The one formatter of sizes in list output (a number or a list of them).

    ``units`` is --units (h, m, g, t); without it a table shows readable units and a
    --separator output the raw number (MiB, or bytes for byte counts), for scripts.
    """
    if isinstance(value, (list, tuple)):
        return ",".join(format_sizes(v, units, separator, in_bytes) for v in value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "" if value is None else str(value)
    if units is None and separator is not None:
        return str(value)
    if in_bytes and units in (None, "h"):
        # readable byte counts go below a MiB (12K, 0B), as the transfer logs write them
        from ganeti.transfer.master.coordinator import format_size
        return format_size(value)
    return format_unit(value / MIB if in_bytes else value, units or "h")


def generate_table(headers: dict[str, str] | None, fields: Sequence[str],
                   separator: str | None, data: Sequence[Sequence[Any]],
                   numfields: Sequence[str] = (), unitfields: Sequence[str] = (),
                   units: str | None = None, bytefields: Sequence[str] = ()) -> list[str]:
    """Lines of a table: numbers right-aligned, others left, last column unpadded.

    With a separator, columns are joined by it and never padded (for scripts).
    ``unitfields`` hold sizes in MiB, ``bytefields`` in bytes (see format_sizes).
    """
    rows: list[list[str]] = []
    if headers is not None:
        rows.append([headers.get(f, f) for f in fields])
    for row in data:
        cells = []
        for fname, value in zip(fields, row, strict=False):
            if fname in unitfields or fname in bytefields:
                cells.append(format_sizes(value, units, separator, fname in bytefields))
            else:
                cells.append("" if value is None else str(value))
        rows.append(cells)
    if separator is not None:
        return [separator.join(r) for r in rows]
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0)
              for i in range(len(fields))]
    right = {i for i, f in enumerate(fields)
             if f in numfields or f in unitfields or f in bytefields}
    lines = []
    for r in rows:
        parts = []
        for i, cell in enumerate(r):
            last = i == len(r) - 1
            if i in right:
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell if last else cell.ljust(widths[i]))
        lines.append(" ".join(parts).rstrip())
    return lines


_STATUS_TEXT = {
    query.RS_UNKNOWN: "??",
    query.RS_NODATA: "(nodata)",
    query.RS_UNAVAIL: "(unavail)",
    query.RS_OFFLINE: "(offline)",
}


def format_query_value(kind: str, value: Any) -> Any:
    if kind == query.QFT_BOOL:
        return "Y" if value else "N"
    if kind == query.QFT_TIMESTAMP and isinstance(value, (int, float, list, tuple)):
        return format_timestamp(value)
    if isinstance(value, (list, tuple)):
        return ",".join(str(format_query_value(query.QFT_OTHER, v)) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def format_timestamp(ts: Sequence[int] | float | None) -> str:
    if ts is None:
        return "N/A"
    when = merge_time(ts)
    return time.strftime("%F %T", time.localtime(when)) + f".{int(when * 1e6) % 1_000_000:06d}"


def format_query_result(result: dict[str, Any], separator: str | None = None,
                        header: bool = True,
                        formatters: Mapping[str, Callable[[Any], Any]] | None = None,
                        units: str | None = None) -> tuple[int, list[str]]:
    """Turn a Query answer into table lines; exit code 1 if a field was unknown."""
    fdefs = result["fields"]
    names = [f["name"] for f in fdefs]
    headers = {f["name"]: f["title"] for f in fdefs} if header else None
    numfields = [f["name"] for f in fdefs if f["kind"] == query.QFT_NUMBER]
    unitfields = [f["name"] for f in fdefs if f["kind"] == query.QFT_UNIT
                  or (units is not None and f["name"] in query.SIZE_LIST_FIELDS)]
    # byte counts stay plain numbers unless --units asks for sizes
    bytefields = [f["name"] for f in fdefs
                  if units is not None and f["name"] in query.BYTE_FIELDS]
    formatters = formatters or {}
    rows = []
    for row in result["data"]:
        cells: list[Any] = []
        for fdef, (status, value) in zip(fdefs, row, strict=True):
            if status != query.RS_NORMAL:
                cells.append(_STATUS_TEXT.get(status, "?"))
            elif fdef["name"] in formatters:
                cells.append(formatters[fdef["name"]](value))
            elif fdef["name"] in unitfields or fdef["name"] in bytefields:
                cells.append(value)
            else:
                cells.append(format_query_value(fdef["kind"], value))
        rows.append(cells)
    lines = generate_table(headers, names, separator, rows, numfields, unitfields, units,
                           bytefields)
    unknown = [f["name"] for f in fdefs if f["kind"] == query.QFT_UNKNOWN]
    return (EXIT_FAILURE if unknown else EXIT_SUCCESS), lines


def generic_list(cl: luxi.Client, resource: str, fields: list[str], qfilter: Any,
                 opts: argparse.Namespace,
                 formatters: Mapping[str, Callable[[Any], Any]] | None = None,
                 out: TextIO | None = None) -> int:
    """The body of every ``list`` command: query, warn about unknown fields, print."""
    result = cl.query(resource, fields, qfilter)
    code, lines = format_query_result(result, separator=getattr(opts, "separator", None),
                                      header=not getattr(opts, "no_headers", False),
                                      formatters=formatters,
                                      units=getattr(opts, "units", None))
    unknown = [f["name"] for f in result["fields"] if f["kind"] == query.QFT_UNKNOWN]
    if unknown:
        print(f"Warning: Unknown output field(s) selected: {', '.join(unknown)}",
              file=sys.stderr)
    stream = out or sys.stdout
    for line in lines:
        stream.write(line + "\n")
    return code


# --- list-fields -----------------------------------------------------------------------

# how list-fields names each field kind (Ganeti's words)
FIELD_KIND_NAMES: dict[str, str] = {
    query.QFT_UNKNOWN: "Unknown",
    query.QFT_TEXT: "Text",
    query.QFT_BOOL: "Boolean",
    query.QFT_NUMBER: "Number",
    query.QFT_UNIT: "Storage size",
    query.QFT_TIMESTAMP: "Timestamp",
    query.QFT_OTHER: "Custom",
}

# field definitions as QueryFields returns them: name, title, kind, doc
FieldDefs = Sequence[Mapping[str, str]]


def select_field_defs(table: FieldDefs, names: Sequence[str] | None) -> list[dict[str, str]]:
    """``names`` from a local field table (all, in table order, when none); unknown
    names get kind "unknown", as the master's QueryFields answers them."""
    if not names:
        return [dict(f) for f in table]
    by_name = {f["name"]: f for f in table}
    return [dict(by_name[n]) if n in by_name else
            {"name": n, "title": n, "kind": query.QFT_UNKNOWN, "doc": "Unknown field"}
            for n in names]


def print_field_defs(fdefs: FieldDefs, opts: argparse.Namespace,
                     out: TextIO | None = None) -> int:
    """The body of every ``list-fields``: Name, Type, Title, Description.

    An unknown field is named on stderr and makes the exit code 1; the known ones
    are still listed.
    """
    known = [f for f in fdefs if f["kind"] != query.QFT_UNKNOWN]
    unknown = [f["name"] for f in fdefs if f["kind"] == query.QFT_UNKNOWN]
    columns = ["name", "kind", "title", "doc"]
    headers = None if getattr(opts, "no_headers", False) else {
        "name": "Name", "kind": "Type", "title": "Title", "doc": "Description"}
    rows = [[f["name"], FIELD_KIND_NAMES.get(f["kind"], f["kind"]), f["title"], f["doc"]]
            for f in known]
    stream = out or sys.stdout
    if rows or not unknown:
        for line in generate_table(headers, columns, getattr(opts, "separator", None), rows):
            stream.write(line + "\n")
    if unknown:
        print(f"Unknown field(s): {', '.join(unknown)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_SUCCESS


def list_fields_command(source: str | Callable[[], FieldDefs], what: str) -> Command:
    """``list-fields [FIELD...]`` for a list command.

    ``source`` is a Query resource (the master's QueryFields answers) or a function
    giving a local field table (lists the client builds itself).  ``what`` says
    whose fields they are, for the help.
    """
    def run(opts: argparse.Namespace) -> int:
        names = list(opts.fields or ())
        if callable(source):
            fdefs: FieldDefs = select_field_defs(source(), names)
        else:
            with get_client() as cl:
                fdefs = cl.query_fields(source, names or None)["fields"]
        return print_field_defs(fdefs, opts)

    return Command(run, (Arg("fields", min=0, max=None),), (NOHDR_OPT, SEP_OPT),
                   f"List the fields of '{what}' (all, or those named): name, type, title"
                   " and description")
