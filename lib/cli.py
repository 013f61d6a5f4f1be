"""Shared framework of the gnt-* commands.

Each script declares a table ``{name: Command(...)}``; :func:`generic_main`
turns it into an argparse parser, runs the chosen function and maps errors to
one readable line and an exit code (0 ok, 1 failure, 2 usage).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, TextIO

from ganeti import constants, errors, luxi, pathutils, qlang, query

if TYPE_CHECKING:
    # annotations only: a command that builds opcodes imports ganeti.opcodes (pydantic,
    # ~0.4 s) inside the function that runs, so list commands start fast
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


# The records below are NamedTuples, not dataclasses: importing dataclasses (and the
# inspect module it needs) costs a gnt-* command a tenth of its start-up.


class Option(NamedTuple):
    """One argparse option, declared once and shared between commands."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any] = MappingProxyType({})

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
UNITS_OPT = Option(("--units",), {"default": None, "choices": ["h", "m", "g", "t"],
                                  "help": "Units for sizes (h: human readable)"})

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


class Arg(NamedTuple):
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


def yes_no(value: str) -> bool:
    """An option's yes/no value (also true/false, on/off, 1/0)."""
    if value.lower() in ("yes", "true", "1", "on"):
        return True
    if value.lower() in ("no", "false", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got '{value}'")


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


class OptionGroup:
    """Options made on first use, e.g. from a pydantic model (see :func:`lazy_model_options`).

    A command table lists the group among its options; it is expanded only when that
    command's parser is built, so the script's other commands never import the model.
    """

    def __init__(self, make: Callable[[], Sequence[Option]]) -> None:
        self._make = make
        self._options: tuple[Option, ...] | None = None

    @property
    def options(self) -> tuple[Option, ...]:
        if self._options is None:
            self._options = tuple(self._make())
        return self._options


def lazy_model_options(model: str, prefix: str, dest_prefix: str,
                       names: Sequence[str] | None = None,
                       default_help: str | None = None) -> OptionGroup:
    """:func:`model_options` of the model ``"package.module:Class"``, imported on first use."""
    module_name, _sep, class_name = model.partition(":")

    def make() -> tuple[Option, ...]:
        cls = getattr(importlib.import_module(module_name), class_name)
        return model_options(cls, prefix, dest_prefix, names, default_help)
    return OptionGroup(make)


def _no_func(_opts: argparse.Namespace) -> int:
    raise AssertionError("a deferred command runs the command it loads")


class Command:
    """One entry of a script's command table.

    ``options`` may hold :class:`OptionGroup` entries; ``load`` defers the whole
    command (function, arguments, options) to a module imported only when the
    command runs or its help is shown, keeping the stub's description for the
    script's command list.  Reading ``options`` gives plain Options either way.
    """

    __slots__ = ("_args", "_func", "_load", "_loaded", "_options", "_raw_options",
                 "description")

    def __init__(self, func: Callable[[argparse.Namespace], int] = _no_func,
                 args: tuple[Arg, ...] = (), options: Sequence[Option | OptionGroup] = (),
                 description: str = "", *, load: Callable[[], Command] | None = None
                 ) -> None:
        self._func = func
        self._args = tuple(args)
        self._raw_options = tuple(options)
        self._options: tuple[Option, ...] | None = None
        self._load = load
        self._loaded: Command | None = None
        self.description = description

    def _target(self) -> Command:
        if self._load is None:
            return self
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    @property
    def func(self) -> Callable[[argparse.Namespace], int]:
        return self._target()._func

    @property
    def args(self) -> tuple[Arg, ...]:
        return self._target()._args

    @property
    def options(self) -> tuple[Option, ...]:
        target = self._target()
        if target._options is None:
            target._options = tuple(
                opt for entry in target._raw_options
                for opt in (entry.options if isinstance(entry, OptionGroup) else (entry,)))
        return target._options

    def __repr__(self) -> str:
        return f"Command({getattr(self._func, '__name__', self._func)!r}, {self.description!r})"


def deferred_command(module: str, attr: str, description: str) -> Command:
    """The command ``attr`` of ``module``, imported only when it runs (or shows its help)."""
    def load() -> Command:
        command: Command = getattr(importlib.import_module(module), attr)
        return command
    return Command(description=description, load=load)


def _terminal_columns() -> int:
    """shutil.get_terminal_size().columns without importing shutil (and bz2, lzma)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
        return 80


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, made without importing shutil (argparse makes one per option)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _terminal_columns() - 2 if width is None else width)


def build_parser(prog: str, commands: dict[str, Command], description: str = "",
                 only: str | None = None) -> argparse.ArgumentParser:
    """The parser of a script.

    With ``only`` naming a command, the parser knows just that command (building
    the others could import modules only they need); naming none of them (help,
    a typo), every command is listed without its options.  None builds every
    command fully (man pages, tests).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=HelpFormatter)
    # prog given: argparse would otherwise format a usage line to make it
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, prog=prog)
    for name, cmd in commands.items():
        if only in commands and name != only:
            continue
        cparser = sub.add_parser(name, help=cmd.description, description=cmd.description,
                                 formatter_class=HelpFormatter)
        if only is not None and name != only:
            continue
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
    argv = list(argv)
    # the command name comes first (global options belong to each command)
    parser = build_parser(prog, commands, only=argv[0] if argv else "")
    opts = parser.parse_args(argv)
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


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting for a job: the job is not cancelled, it goes on in the master."""

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def interrupted_lines(job_id: int) -> list[str]:
    """What a command interrupted while it waited for a job tells the user."""
    return [f"Interrupted. Job {job_id} was not cancelled: it goes on in the background.",
            f"Follow it with 'gnt-job watch {job_id}', cancel it with"
            f" 'gnt-job cancel {job_id}'."]


def missing_module_line(prog: str, err: ModuleNotFoundError) -> str:
    """What to do when the environment lacks a dependency (scripts/gnt-* say the same
    when the package itself is missing)."""
    return (f"{prog}: {err} (python: {sys.executable}). Set up the environment first, as"
            " the README says: tools/setup-env, then PATH=CHECKOUT/.venv/bin:$PATH"
            ' (eval "$(.venv/bin/python tools/local-cluster --root DIR env)" does that)')


def _print_traceback() -> None:
    import traceback  # only with --debug (it imports linecache, tokenize, textwrap)
    traceback.print_exc()


def generic_main(prog: str, commands: dict[str, Command],
                 argv: Sequence[str] | None = None) -> int:
    """Run one gnt-* invocation and return its exit code."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        opts = parse_command_line(prog, commands, argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except ModuleNotFoundError as err:  # a command's options need a missing dependency
        if (err.name or "ganeti").startswith("ganeti"):
            raise
        print(missing_module_line(prog, err), file=sys.stderr)
        return EXIT_FAILURE
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    try:
        return int(opts.func(opts))
    except JobSubmitted as sub:
        # as Ganeti's: with --print-jobid the bare id is on stdout already, this on stderr;
        # without it this line is the command's output (scripts read it there)
        print(f"JobID: {sub.job_id}",
              file=sys.stderr if getattr(opts, "print_jobid", False) else sys.stdout)
        return EXIT_SUCCESS
    except JobInterrupted as intr:
        for line in interrupted_lines(intr.job_id):
            print(line, file=sys.stderr)
        return EXIT_FAILURE
    except errors.GenericError as err:
        if opts.debug:
            _print_traceback()
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
            _print_traceback()
        if isinstance(err, ModuleNotFoundError) and \
                not (err.name or "ganeti").startswith("ganeti"):
            # a dependency a command imports when it runs (e.g. pydantic) is missing
            print(missing_module_line(prog, err), file=sys.stderr)
        else:
            print(f"Unexpected error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILURE


# --- talking to the master ----------------------------------------------------------


def get_client(timeout: float = 60) -> luxi.Client:
    return luxi.Client(timeout=timeout)


def set_generic_opcode_opts(op: OpCode | dict[str, Any], opts: argparse.Namespace) -> None:
    """Copy --dry-run, --debug, --priority and --reason into an opcode (object or dict)."""
    fields: dict[str, Any] = {}
    if getattr(opts, "dry_run", False):
        fields["dry_run"] = True
    if getattr(opts, "debug", 0):
        fields["debug_level"] = int(opts.debug)
    priority = getattr(opts, "priority", None)
    if priority is not None:
        fields["priority"] = priority
    reason = getattr(opts, "reason", None)
    if reason:
        trail = op.get("reason", []) if isinstance(op, dict) else op.reason
        fields["reason"] = [*trail, ("gnt:user", str(reason), time.time_ns())]
    for name, value in fields.items():
        if isinstance(op, dict):
            op[name] = value
        else:
            setattr(op, name, value)


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

    Raises the job's own error (typed) when it did not succeed, and
    :class:`JobInterrupted` on Ctrl-C (the job itself goes on).
    """
    feedback = feedback_fn or _print_feedback
    prev_info: list[Any] | None = None
    prev_serial: int | None = None
    try:
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
        rows = cl.query_jobs([job_id], luxi.RESULT_FIELDS)
    except JobInterrupted:
        raise
    except KeyboardInterrupt:
        raise JobInterrupted(job_id) from None
    return luxi.job_results(job_id, rows, "not found")


def submit_opcode(op: OpCode | dict[str, Any], opts: argparse.Namespace | None = None,
                  cl: luxi.Client | None = None,
                  feedback_fn: FeedbackFn | None = None) -> Any:
    """Submit one opcode as a job and wait for it; return the opcode's result.

    ``op`` is an opcode object (checked here, so a bad option fails before anything
    is sent) or, for read-only queries of list commands, a dict with ``OP_ID`` that
    only the master checks (building the object would import pydantic: 0.4 s).
    With --submit this raises :class:`JobSubmitted` right after queueing (having
    printed the bare id first with --print-jobid); Ctrl-C while waiting raises
    :class:`JobInterrupted`.
    """
    if opts is not None:
        set_generic_opcode_opts(op, opts)
    client = cl or get_client()
    job_id = client.submit_job([op])
    try:
        if opts is not None and getattr(opts, "print_jobid", False):
            print(job_id, flush=True)
        if opts is not None and getattr(opts, "submit_only", False):
            raise JobSubmitted(job_id)
        return poll_job(job_id, client, feedback_fn)[0]
    except JobInterrupted:
        raise
    except KeyboardInterrupt:
        raise JobInterrupted(job_id) from None


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


def generate_table(headers: dict[str, str] | None, fields: Sequence[str],
                   separator: str | None, data: Sequence[Sequence[Any]],
                   numfields: Sequence[str] = (), unitfields: Sequence[str] = (),
                   units: str | None = None) -> list[str]:
    """Lines of a table: numbers right-aligned, others left, last column unpadded.

    With a separator, columns are joined by it and never padded (for scripts).
    """
    if units is None:
        units = "m" if separator else "h"
    rows: list[list[str]] = []
    if headers is not None:
        rows.append([headers.get(f, f) for f in fields])
    for row in data:
        cells = []
        for fname, value in zip(fields, row, strict=False):
            if fname in unitfields and isinstance(value, (int, float)) and \
                    not isinstance(value, bool):
                cells.append(format_unit(value, units))
            else:
                cells.append("" if value is None else str(value))
        rows.append(cells)
    if separator is not None:
        return [separator.join(r) for r in rows]
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0)
              for i in range(len(fields))]
    right = {i for i, f in enumerate(fields) if f in numfields or f in unitfields}
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
    unitfields = [f["name"] for f in fdefs if f["kind"] == query.QFT_UNIT]
    formatters = formatters or {}
    rows = []
    for row in result["data"]:
        cells: list[Any] = []
        for fdef, (status, value) in zip(fdefs, row, strict=True):
            if status != query.RS_NORMAL:
                cells.append(_STATUS_TEXT.get(status, "?"))
            elif fdef["name"] in formatters:
                cells.append(formatters[fdef["name"]](value))
            elif fdef["kind"] == query.QFT_UNIT:
                cells.append(value)
            else:
                cells.append(format_query_value(fdef["kind"], value))
        rows.append(cells)
    lines = generate_table(headers, names, separator, rows, numfields, unitfields, units)
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
