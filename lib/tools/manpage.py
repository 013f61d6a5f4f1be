"""Generate roff man pages for the gnt-* commands from their command tables.

The pages are built (``make``) from the same tables the commands parse with,
so options documented and options accepted never drift apart.
"""

from __future__ import annotations

import argparse
import importlib
import sys
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


def _roff(text: str) -> str:
    return text.replace("\\", "\\\\").replace("-", "\\-").replace("'", "\\(aq")


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()[1:])


def render(prog: str, module_name: str, summary: str) -> str:
    commands: dict[str, cli.Command] = importlib.import_module(module_name).COMMANDS
    parser = cli.build_parser(prog, commands)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = [f'.TH {prog.upper()} 8 "" "ganeti-ng {__version__}" "Ganeti administration"',
             ".SH NAME", f"{_roff(prog)} \\- {_roff(summary)}",
             ".SH SYNOPSIS", f".B {_roff(prog)}", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
             ".SH COMMANDS"]
    for name, cmd in commands.items():
        cparser = sub.choices[name]
        lines += [".SS " + _roff(name), _roff(_usage(cparser)), ".PP",
                  _roff(cmd.description or "")]
        for action in cparser._actions:
            if not action.option_strings or action.dest in ("help",):
                continue
            flags = ", ".join(action.option_strings)
            metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            lines += [".TP", f"\\fB{_roff(flags)}\\fR{_roff(str(metavar))}",
                      _roff(action.help or "")]
    if any(cli.FILTER_OPT in cmd.options for cmd in commands.values()):
        lines += [".SH QUERY FILTERS", _roff(
            "The list commands take names, glob patterns (* and ?, within one DNS label)"
            " or one filter in Ganeti's query language, e.g. 'name =~ m/^web/ and status"
            " == \"running\"' (-F reads the argument as a filter); operators: == != < <="
            " > >= =~ !~ =* !* in, not in, and, or, not. See doc/query-language.md.")]
    lines += [".SH EXIT STATUS", "0 on success, 1 when the operation failed, 2 on a usage"
              " error.", ".SH ENVIRONMENT", ".TP", "\\fBGANETI_ROOT\\fR",
              "Run with every path under this directory (local and test clusters)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: manpage OUTPUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    for prog, (module_name, summary) in SCRIPTS.items():
        (out / f"{prog}.8").write_text(render(prog, module_name, summary))
    return 0
