"""gnt-debug: engine test commands (delay jobs) and the lock monitor."""

from __future__ import annotations

import argparse
from typing import Any

from ganeti import cli, errors

LOCK_DEFAULT_FIELDS = ("name", "mode", "owner", "pending")


def _duration(value: str) -> float:
    try:
        duration = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration '{value}'") from None
    if duration < 0:
        raise argparse.ArgumentTypeError("duration must not be negative")
    return duration


def delay(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    if opts.no_master and not opts.nodes:
        raise errors.OpPrereqError("With --no-master at least one node (-n) is needed",
                                   errors.ECODE_INVAL)
    op = opcodes.OpTestDelay.create(duration=opts.duration, on_master=not opts.no_master,
                                    on_nodes=list(opts.nodes), repeat=opts.repeat)
    cli.submit_opcode(op, opts)
    return cli.EXIT_SUCCESS


def _format_owner(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _format_pending(value: Any) -> str:
    """Waiters as ``mode:owner1,owner2`` groups separated by spaces."""
    if not value:
        return ""
    parts = []
    for item in value:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            mode, owners = item
            parts.append(f"{mode}:{_format_owner(owners)}")
        else:
            parts.append(str(item))
    return " ".join(parts)


def _format_mode(value: Any) -> str:
    return "" if value is None else str(value)


def list_locks(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, LOCK_DEFAULT_FIELDS)
    formatters = {"owner": _format_owner, "pending": _format_pending, "mode": _format_mode}
    with cli.get_client() as cl:
        return cli.generic_list(cl, "lock", fields, cli.list_filter(opts, opts.names), opts,
                                formatters)


_NO_MASTER_OPT = cli.Option(("--no-master",), {"action": "store_true", "default": False,
                                               "help": "Do not sleep on the master"})
_NODE_OPT = cli.Option(("-n", "--node"), {"dest": "nodes", "action": "append", "default": [],
                                          "metavar": "NODE", "help": "Also sleep on NODE"})
_REPEAT_OPT = cli.Option(("-r", "--repeat"), {"type": int, "default": 0, "metavar": "N",
                                              "help": "Repeat the sleep N more times"})

COMMANDS: dict[str, cli.Command] = {
    "delay": cli.Command(delay, (cli.Arg("duration", convert=_duration),),
                         (_NO_MASTER_OPT, _NODE_OPT, _REPEAT_OPT, *cli.SUBMIT_OPTS),
                         "Run a job that sleeps DURATION seconds (engine test)"),
    "locks": cli.Command(list_locks, (cli.names_arg("names"),), cli.LIST_OPTS,
                         "Show the lock monitor"),
}


def main(argv: list[str] | None = None) -> int:
    return cli.generic_main("gnt-debug", COMMANDS, argv)
