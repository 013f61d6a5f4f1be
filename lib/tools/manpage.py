"""Generate roff man pages for the gnt-* commands from their command tables.

The pages are generated from the same tables the commands parse with, so
options documented and options accepted never drift apart.  They are
committed in doc/man/ (readable from a checkout: ``man -l doc/man/gnt-backup.8``);
after changing a command table, regenerate them with one command::

    .venv/bin/python -m ganeti.tools.manpage doc/man

(``make man`` runs the same); test_cli_docs_manpages fails while a page is stale.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

from ganeti import __version__, cli

SCRIPTS = {
    "gnt-backup": ("ganeti.client.gnt_backup", "export, import, list and remove instance backups"),
    "gnt-cluster": ("ganeti.client.gnt_cluster", "cluster administration"),
    "gnt-debug": ("ganeti.client.gnt_debug", "debugging commands"),
    "gnt-instance": ("ganeti.client.gnt_instance", "instance administration"),
    "gnt-job": ("ganeti.client.gnt_job", "job queue commands"),
    "gnt-node": ("ganeti.client.gnt_node", "node administration"),
}
# nested command tables: "gnt-backup schedule add ..." is the command "schedule" of
# gnt-backup handing its arguments to another table (its main() dispatches)
NESTED = {
    "gnt-backup": {"schedule": "ganeti.client.gnt_backup_schedule"},
}


def command_tables(prog: str) -> Iterator[tuple[str, dict[str, cli.Command]]]:
    """(program, COMMANDS) of a script, then of each of its nested tables
    (program "gnt-backup schedule"): every table the script parses with."""
    yield prog, importlib.import_module(SCRIPTS[prog][0]).COMMANDS
    for name, module_name in NESTED.get(prog, {}).items():
        yield f"{prog} {name}", importlib.import_module(module_name).COMMANDS


def all_command_tables() -> Iterator[tuple[str, dict[str, cli.Command]]]:
    for prog in SCRIPTS:
        yield from command_tables(prog)


def _roff(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-").replace("'", "\\(aq")


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()[1:])


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _command_lines(prog: str, commands: dict[str, cli.Command]) -> list[str]:
    """One .SS section per command of one table (``prog`` prefixes nested names)."""
    parsers = _subparsers(cli.build_parser(prog, commands))
    prefix = prog.split(" ", 1)[1] + " " if " " in prog else ""
    lines: list[str] = []
    for name, cmd in commands.items():
        cparser = parsers[name]
        lines += [".SS " + _roff(prefix + name), _roff(_usage(cparser)), ".PP",
                  _roff(cmd.description or "")]
        for action in cparser._actions:
            if not action.option_strings or action.dest in ("help",):
                continue
            flags = ", ".join(action.option_strings)
            metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            lines += [".TP", f"\\fB{_roff(flags)}\\fR{_roff(str(metavar))}",
                      _roff(action.help or "")]
    return lines


def render(prog: str, module_name: str, summary: str) -> str:
    tables = dict(command_tables(prog))
    lines = [f'.TH {prog.upper()} 8 "" "ganeti-ng {__version__}" "Ganeti administration"',
             ".SH NAME", f"{_roff(prog)} \\- {_roff(summary)}",
             ".SH SYNOPSIS", f".B {_roff(prog)}", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
             ".SH COMMANDS"]
    for table_prog, commands in tables.items():
        lines += _command_lines(table_prog, commands)
    if any(cli.FILTER_OPT in cmd.options
           for commands in tables.values() for cmd in commands.values()):
        lines += [".SH QUERY FILTERS", _roff(
            "The list commands take names, glob patterns (* and ?, within one DNS label)"
            " or one filter in Ganeti's query language, e.g. 'name =~ m/^web/ and status"
            " == \"running\"' (-F reads the argument as a filter); operators: == != < <="
            " > >= =~ !~ =* !* in, not in, and, or, not. See doc/query-language.md.")]
    lines += [".SH EXIT STATUS", "0 on success, 1 when the operation failed, 2 on a usage"
              " error.", ".SH ENVIRONMENT", ".TP", "\\fBGANETI_ROOT\\fR",
              "Run with every path under this directory (local and test clusters)."]
    return "\n".join(lines) + "\n"


def render_all() -> dict[str, str]:
    """{file name: page} of every gnt-* script (what doc/man/ must hold)."""
    return {f"{prog}.8": render(prog, module_name, summary)
            for prog, (module_name, summary) in SCRIPTS.items()}


def stale_pages(out: Path) -> list[str]:
    """Pages in ``out`` that differ from (or lack) the generator's output."""
    return [name for name, page in render_all().items()
            if not (out / name).is_file() or (out / name).read_text() != page]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ganeti.tools.manpage",
        description="Write the gnt-* man pages into OUTPUT_DIR (e.g. doc/man)")
    parser.add_argument("--check", action="store_true",
                        help="Write nothing; exit 1 naming the pages that are stale")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR")
    opts = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(opts.output_dir)
    if opts.check:
        stale = stale_pages(out)
        for name in stale:
            print(f"{out / name} is stale: run python -m ganeti.tools.manpage {out}",
                  file=sys.stderr)
        return 1 if stale else 0
    out.mkdir(parents=True, exist_ok=True)
    for name, page in render_all().items():
        (out / name).write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
