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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
                 "_reports_dry_run", "description")

    def __init__(self, func: Callable[[argparse.Namespace], int] = _no_func,
                 args: tuple[Arg, ...] = (), options: Sequence[Option | OptionGroup] = (),
                 description: str = "", *, load: Callable[[], Command] | None = None,
                 reports_dry_run: bool = False) -> None:
        self._func = func
        self._args = tuple(args)
        self._raw_options = tuple(options)
        self._options: tuple[Option, ...] | None = None
        self._load = load
        self._loaded: Command | None = None
        self.description = description
        # the command says itself what its --dry-run would do (else generic_main says
        # that the checks passed, see dry_run_message)
        self._reports_dry_run = reports_dry_run

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

    @property
    def reports_dry_run(self) -> bool:
        return self._target()._reports_dry_run

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
        cparser.set_defaults(func=cmd.func, _arg_specs=cmd.args, _options=cmd.options,
                             _dry_run_text=None if cmd.reports_dry_run else
                             cmd.description)
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
    _OPTION_FLAGS.clear()
    _OPTION_FLAGS.update(option_flags(getattr(opts, "_options", ())))
    try:
        code = int(opts.func(opts))
        if code == EXIT_SUCCESS and getattr(opts, "dry_run", False) and \
                getattr(opts, "_dry_run_text", None) is not None:
            print(dry_run_message(prog, opts))
        return code
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
        print(format_error(err), file=sys.stderr)
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


# --- messages naming opcode fields (errors.field_ref) ---------------------------------

_FIELD_REF_RE = re.compile(r"`([a-z][a-z0-9_]*)`")
# opcode field -> the option of the running command that sets it (set by generic_main)
_OPTION_FLAGS: dict[str, str] = {}


def option_flags(options: Sequence[Option]) -> dict[str, str]:
    """Field (the option's dest) -> its long flag, for the options of one command.

    Options storing the opposite of a field (``--noshutdown``) do not name it.
    """
    flags: dict[str, str] = {}
    for opt in options:
        longs = [f for f in opt.flags if f.startswith("--")]
        if not longs or opt.kwargs.get("action") == "store_false":
            continue
        dest = str(opt.kwargs.get("dest") or longs[0][2:].replace("-", "_"))
        flags.setdefault(dest, longs[0])
    return flags


def render_field_refs(text: str, flags: Mapping[str, str] | None = None) -> str:
    """A master's message with its opcode field references (errors.field_ref) shown
    as the options of this command (the bare field name where it has none)."""
    table = _OPTION_FLAGS if flags is None else flags
    return _FIELD_REF_RE.sub(lambda m: table.get(m.group(1), m.group(1)), text)


def format_error(err: BaseException) -> str:
    """errors.format_error, with field references as this command's options."""
    return render_field_refs(errors.format_error(err))


def dry_run_message(prog: str, opts: argparse.Namespace) -> str:
    """What a successful --dry-run prints: the checks passed, what the command would
    have done (its description), and that nothing changed."""
    args: list[str] = []
    for spec in getattr(opts, "_arg_specs", ()):
        value = getattr(opts, spec.name, None)
        args.extend(str(v) for v in (value if isinstance(value, list) else [value])
                    if v is not None)
    text = str(opts._dry_run_text or "run")
    what = " ".join([prog, opts.command, *args])
    return (f"Dry run: the checks passed; {what} would {text[:1].lower()}{text[1:]}."
            " Nothing was changed.")


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
        text = render_field_refs(message)
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
    """Field list from -o: ``None`` -> defaults, ``+a,b`` -> defaults plus a, b.

    A field given twice is shown once (``-g -o +generation``); ``-o ''`` is refused
    (Ganeti queries the empty name and fails on it) rather than printing blank lines.
    """
    if selected is None:
        return list(default)
    if selected.startswith("+"):
        fields = [*default, *[f for f in selected[1:].split(",") if f.strip()]]
    else:
        fields = [f for f in selected.split(",") if f.strip()]
    if not fields:
        raise errors.OpPrereqError("-o/--output: no fields given (leave -o out for the"
                                   " default fields, '+FIELD' adds to them)",
                                   errors.ECODE_INVAL)
    return list(dict.fromkeys(f.strip() for f in fields))


# --- the one rule for misses: unknown fields, objects that are not there ----------------


def not_found(kind: str, names: Sequence[Any]) -> errors.OpPrereqError:
    """The error every command raises for objects that do not exist (Ganeti's wording,
    ``Node 'x' not known``); the command prints nothing else and exits 1."""
    quoted = ", ".join(f"'{n}'" for n in names)
    return errors.OpPrereqError(f"{kind} {quoted} not known", errors.ECODE_NOENT)


def unknown_fields(names: Sequence[str], list_fields_cmd: str | None = None
                   ) -> errors.OpPrereqError:
    """The error every list command raises for output fields it does not know."""
    hint = f" (see '{list_fields_cmd}')" if list_fields_cmd else ""
    return errors.OpPrereqError(f"Unknown output fields selected: {', '.join(names)}{hint}",
                                errors.ECODE_INVAL)


def check_fields(fields: Sequence[str], known: Iterable[str],
                 list_fields_cmd: str | None = None) -> None:
    """Refuse ``fields`` not in ``known`` (for lists a client builds itself)."""
    known_set = set(known)
    unknown = [f for f in fields if f not in known_set]
    if unknown:
        raise unknown_fields(unknown, list_fields_cmd)


# resource -> (what one item is called, the field that names it)
RESOURCE_ITEMS: dict[str, tuple[str, str]] = {
    query.RESOURCE_INSTANCE: ("Instance", "name"),
    query.RESOURCE_NODE: ("Node", "name"),
    query.RESOURCE_JOB: ("Job", "id"),
    query.RESOURCE_LOCK: ("Lock", "name"),
    query.RESOURCE_EXPORT: ("Export", "export"),
    "group": ("Node group", "name"),
    "network": ("Network", "name"),
}


def _item_kind(resource: str) -> tuple[str, str]:
    return RESOURCE_ITEMS.get(resource, (resource.capitalize(), "name"))


def requested_names(qfilter: Any, field: str) -> list[Any] | None:
    """The names a filter asks for when it is only equalities on ``field`` (as the
    NAMES of a list command become, or ``-F 'name == "x"'``); None otherwise.

    As in Ganeti, exactly these queries fail when a name is missing; globs,
    other conditions and status options select, they do not name.
    """
    if not isinstance(qfilter, list) or not qfilter:
        return None
    if qfilter[0] in ("=", "==") and len(qfilter) == 3 and qfilter[1] == field:
        return [qfilter[2]]
    if qfilter[0] == "|" and len(qfilter) > 1:
        names: list[Any] = []
        for sub in qfilter[1:]:
            part = requested_names(sub, field)
            if part is None:
                return None
            names.extend(part)
        return names
    return None


def _matches(wanted: Any, value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(wanted) == str(value)
    return isinstance(value, str) and isinstance(wanted, str) and \
        query.name_matches(value, frozenset({wanted}))


def missing_names(wanted: Sequence[Any], found: Iterable[Any]) -> list[Any]:
    """The names of ``wanted`` no found value answers (host names: "web1" is
    web1.example.com, as the master's name equality has it)."""
    values = list(found)
    return [w for w in dict.fromkeys(wanted) if not any(_matches(w, v) for v in values)]


def query_items(cl: luxi.Client, resource: str, fields: Sequence[str],
                names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Field values of the named items (all without names), for ``info`` commands;
    a name that is not there fails the command (:func:`not_found`)."""
    kind, namefield = _item_kind(resource)
    wanted = list(dict.fromkeys(names or ()))
    qfields = list(dict.fromkeys([namefield, *fields]))
    qfilter = [qlang.OP_OR, *[[qlang.OP_EQUAL, namefield, n] for n in wanted]] \
        if wanted else None
    result = cl.query(resource, qfields, qfilter)
    unknown = [f["name"] for f in result["fields"] if f["kind"] == query.QFT_UNKNOWN]
    if unknown:
        raise unknown_fields(unknown)
    rows = [{f: value for f, (_status, value) in zip(qfields, row, strict=True)}
            for row in result["data"]]
    missing = missing_names(wanted, (r[namefield] for r in rows))
    if missing:
        raise not_found(kind, missing)
    if not wanted:
        return rows
    # in the order asked for, as Ganeti's info commands print them
    return [r for w in wanted for r in rows if _matches(w, r[namefield])]


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
    # one formatter per column, chosen once: a big list is tens of thousands of cells
    def column(fname: str) -> Callable[[Any], str]:
        if fname in unitfields or fname in bytefields:
            in_bytes = fname in bytefields
            return lambda value: format_sizes(value, units, separator, in_bytes)
        return lambda value: "" if value is None else str(value)

    formats = [column(f) for f in fields]
    rows: list[list[str]] = []
    if headers is not None:
        rows.append([headers.get(f, f) for f in fields])
    rows.extend([fmt(value) for fmt, value in zip(formats, row, strict=False)]
                for row in data)
    if separator is not None:
        return [separator.join(r) for r in rows]
    ncols = len(fields)
    widths = [max((len(r[i]) for r in rows if i < len(r)), default=0) for i in range(ncols)]
    right = {i for i, f in enumerate(fields)
             if f in numfields or f in unitfields or f in bytefields}
    # str.rjust / ljust per column, the last left-aligned column unpadded
    def pad(i: int) -> Callable[[str], str]:
        width = widths[i]
        return (lambda c: c.rjust(width)) if i in right else (lambda c: c.ljust(width))

    pads = [pad(i) for i in range(ncols)]
    lines = []
    for r in rows:
        last = len(r) - 1
        parts = [cell if i == last and i not in right else pads[i](cell)
                 for i, cell in enumerate(r)]
        lines.append(" ".join(parts).rstrip())
    return lines


InfoValue = Any  # str, number, dict, list, or a list of (key, value) pairs (ordered)


def format_generic_info(data: InfoValue) -> list[str]:
    """Lines of ``info`` output laid out as Ganeti's PrintGenericInfo does: ``Key: value``,
    nested parts indented by two spaces, dicts sorted, lists as ``- item``; a list of
    (key, value) pairs keeps its order."""
    lines: list[str] = []
    _info_lines(lines, data, 0, None)
    return lines


def _is_pairs(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and \
        all(isinstance(d, tuple) and len(d) == 2 for d in data)


def _info_lines(lines: list[str], data: Any, level: int, key: str | None) -> None:
    indent = "  " * level
    head = f"{indent}{key}:" if key is not None else None
    child = level + 1 if key is not None else level
    if isinstance(data, dict) or _is_pairs(data):
        pairs = sorted(data.items()) if isinstance(data, dict) else data
        if head is not None:
            lines.append(head)
        for sub_key, value in pairs:
            _info_lines(lines, value, child, str(sub_key))
    elif isinstance(data, (list, tuple)):
        if head is not None:
            lines.append(head)
        for item in data:
            if isinstance(item, (dict, list, tuple)):
                lines.append(f"{'  ' * child}-")
                _info_lines(lines, item, child + 1, None)
            else:
                lines.append(f"{'  ' * child}- {_info_scalar(item)}")
    elif head is not None:
        lines.append(f"{head} {_info_scalar(data)}".rstrip())
    else:
        lines.append(f"{indent}{_info_scalar(data)}")


def _info_scalar(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


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


def format_time(ts: float | None) -> str:
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM:SS`` (Ganeti's FormatTime)."""
    if ts is None or isinstance(ts, bool) or not isinstance(ts, (int, float)):
        return "N/A"
    return time.strftime("%F %T", time.localtime(ts))


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
    raw = set(unitfields) | set(bytefields)  # generate_table formats these

    def column(fdef: dict[str, Any]) -> Callable[[Any], Any]:
        name, kind = fdef["name"], fdef["kind"]
        if name in formatters:
            return formatters[name]
        if name in raw:
            return lambda value: value
        if kind in (query.QFT_TEXT, query.QFT_NUMBER):
            # the common case, without format_query_value's type checks for scalars
            return lambda value: value if isinstance(value, (str, int, float)) \
                and not isinstance(value, bool) else format_query_value(kind, value)
        return lambda value: format_query_value(kind, value)

    columns = [column(f) for f in fdefs]
    normal = query.RS_NORMAL
    rows = [[fmt(value) if status == normal else _STATUS_TEXT.get(status, "?")
             for fmt, (status, value) in zip(columns, row, strict=True)]
            for row in result["data"]]
    lines = generate_table(headers, names, separator, rows, numfields, unitfields, units,
                           bytefields)
    unknown = [f["name"] for f in fdefs if f["kind"] == query.QFT_UNKNOWN]
    return (EXIT_FAILURE if unknown else EXIT_SUCCESS), lines


def generic_list(cl: luxi.Client, resource: str, fields: list[str], qfilter: Any,
                 opts: argparse.Namespace,
                 formatters: Mapping[str, Callable[[Any], Any]] | None = None,
                 out: TextIO | None = None) -> int:
    """The body of every ``list`` command: query, print; the one rule for misses.

    Unknown fields and names that are not there (when the filter names items,
    see :func:`requested_names`) fail the command before anything is printed.
    """
    kind, namefield = _item_kind(resource)
    wanted = requested_names(qfilter, namefield)
    extra = wanted is not None and namefield not in fields
    result = cl.query(resource, [*fields, namefield] if extra else fields, qfilter)
    unknown = [f["name"] for f in result["fields"] if f["kind"] == query.QFT_UNKNOWN]
    if unknown:
        raise unknown_fields(unknown)
    if wanted is not None:
        index = len(fields) if extra else fields.index(namefield)
        missing = missing_names(wanted, (row[index][1] for row in result["data"]))
        if missing:
            raise not_found(kind, missing)
        if extra:
            result = {"fields": result["fields"][:-1],
                      "data": [row[:-1] for row in result["data"]]}
    code, lines = format_query_result(result, separator=getattr(opts, "separator", None),
                                      header=not getattr(opts, "no_headers", False),
                                      formatters=formatters,
                                      units=getattr(opts, "units", None))
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


# --- confirmation ----------------------------------------------------------------

# Exit code of a command the user did not confirm (Ganeti's EXIT_CONFIRMATION)
EXIT_CONFIRMATION = 13
TTY_PATH = "/dev/tty"


def ask_user(question: str) -> bool:
    """A yes/no question on the controlling terminal; without one (cron, a pipe under
    nohup) the answer is no, as in Ganeti.

    The terminal, not stdin/stdout: output piped into a file or another program
    still shows the question to the person who typed the command.
    """
    try:
        # unbuffered bytes: a terminal cannot seek, which buffered "r+" needs
        tty = open(TTY_PATH, "r+b", buffering=0)  # noqa: SIM115
    except OSError:
        return False
    with tty:
        while True:
            tty.write(f"{question}\ny/[n]/?: ".encode())
            line = tty.readline()
            answer = line.decode(errors="replace").strip().lower()
            if answer in ("y", "yes"):
                return True
            if not line or answer in ("", "n", "no"):
                return False
            tty.write(b" y - Perform the operation\n n - Do not perform the operation\n")
