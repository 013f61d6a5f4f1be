"""Ganeti's tag commands (add-tags, list-tags, remove-tags), one definition shared by
gnt-instance, gnt-node and gnt-cluster.

Adding and removing are jobs (OP_TAGS_SET, OP_TAGS_DEL); listing asks the
master directly (LUXI's QueryTags), as in Ganeti.  Tags come from the command
line and, with ``--from FILE``, one per line from a file (``-``: stdin).
"""

from __future__ import annotations

import argparse
import sys

from ganeti import cli, constants, errors

FROM_OPT = cli.Option(("--from",), {"dest": "tags_source", "default": None,
                                    "metavar": "FILE",
                                    "help": "Also read tags from FILE, one per line"
                                            " (-: standard input)"})


def _tags(opts: argparse.Namespace) -> list[str]:
    tags = list(opts.tags)
    if opts.tags_source is not None:
        try:
            if opts.tags_source == "-":
                text = sys.stdin.read()
            else:
                with open(opts.tags_source, encoding="utf-8") as fh:
                    text = fh.read()
        except OSError as err:
            raise errors.OpPrereqError(f"--from: cannot read {opts.tags_source}: {err}",
                                       errors.ECODE_INVAL) from None
        tags += [line.strip() for line in text.splitlines() if line.strip()]
    if not tags:
        raise errors.OpPrereqError("tags: no tags given", errors.ECODE_INVAL)
    return tags


def commands(kind: str, what: str | None) -> dict[str, cli.Command]:
    """The three commands for objects of ``kind``; ``what`` names the object's
    argument (None: the cluster, which has no name)."""
    target = () if what is None else (cli.Arg(what),)
    of = "the cluster" if what is None else f"an {what}" if what[0] in "aeiou" \
        else f"a {what}"

    def name(opts: argparse.Namespace) -> str | None:
        return None if what is None else str(getattr(opts, what))

    def add_tags(opts: argparse.Namespace) -> int:
        from ganeti import opcodes
        cli.submit_opcode(opcodes.OpTagsSet.create(kind=kind, name=name(opts),
                                                   tags=_tags(opts)), opts)
        return cli.EXIT_SUCCESS

    def remove_tags(opts: argparse.Namespace) -> int:
        from ganeti import opcodes
        cli.submit_opcode(opcodes.OpTagsDel.create(kind=kind, name=name(opts),
                                                   tags=_tags(opts)), opts)
        return cli.EXIT_SUCCESS

    def list_tags(opts: argparse.Namespace) -> int:
        with cli.get_client() as cl:
            for tag in sorted(cl.query_tags(kind, name(opts))):
                print(tag)
        return cli.EXIT_SUCCESS

    tags_arg = cli.Arg("tags", min=0, max=None)
    return {
        "add-tags": cli.Command(add_tags, (*target, tags_arg), (FROM_OPT, *cli.SUBMIT_OPTS),
                                f"Add tags to {of}"),
        "list-tags": cli.Command(list_tags, target, (), f"List the tags of {of}"),
        "remove-tags": cli.Command(remove_tags, (*target, tags_arg),
                                   (FROM_OPT, *cli.SUBMIT_OPTS), f"Remove tags from {of}"),
    }


INSTANCE = commands(constants.TAG_INSTANCE, "instance")
NODE = commands(constants.TAG_NODE, "node")
CLUSTER = commands(constants.TAG_CLUSTER, None)
