"""gnt-backup: export instances, import exports, list, protect, annotate and remove them."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ganeti import cli, constants, errors, qlang, query
from ganeti.backup import exportmeta
from ganeti.client import gnt_instance

if TYPE_CHECKING:
    from ganeti import opcodes

# gnt-backup schedule and prune (their module needs pydantic): imported when they run
_SCHEDULE_MODULE = "ganeti.client.gnt_backup_schedule"

# (name, title, kind, description) of the fields `gnt-backup list` knows; the size
# fields are storage sizes counted in bytes (--units formats them, see cli.format_sizes)
_T, _U, _B = query.QFT_TEXT, query.QFT_UNIT, query.QFT_BOOL
LIST_FIELDS = (
    ("node", "Node", _T, "Node holding the export"),
    ("export", "Export", _T, "Name of the exported instance"),
    ("generation", "Generation", _T, "UTC time naming the export (import NAME@GENERATION)"),
    ("timestamp", "Timestamp", query.QFT_TIMESTAMP, "When the export was taken (UTC)"),
    ("size", "Size", _U, "Bytes of the export's files (their apparent size)"),
    ("used", "Used", _U, "Bytes the export occupies on disk (holes cost nothing; compressed"
                         " where the filesystem compresses); unique + shared"),
    ("unique", "Unique", _U, "Bytes of used that no other generation of the instance on"
                             " that node uses (what removing it frees)"),
    ("shared", "Shared", _U, "Bytes of used that other generations of the instance on that"
                             " node use too (unchanged data of incremental exports)"),
    ("newest", "Newest", _B, "Whether this is the newest export (the Ganeti-visible one)"),
    ("protected", "Protected", _B, "Whether prune and remove skip it (gnt-backup protect)"),
    ("note", "Note", _T, "Free-text note (gnt-backup export/modify --note)"),
    ("verified", "Verified", _T, "Last gnt-backup verify: ok or BAD (problems) and when"
                                 " (UTC); -: never verified"),
)


def _field_defs() -> list[dict[str, str]]:
    return [{"name": n, "title": t, "kind": k, "doc": d} for n, t, k, d in LIST_FIELDS]


# fields only the detailed generations query knows
GENERATION_FIELDS = ("generation", "timestamp", "size", "used", "unique", "shared", "newest",
                     "protected", "note", "verified")
# byte counts: human units in a table, plain bytes with --separator (for scripts)
SIZE_FIELDS = ("size", "used", "unique", "shared")
LIST_DEFAULT_FIELDS = ("node", "export")
LIST_GENERATIONS_FIELDS = ("node", "export", "generation", "timestamp", "size", "used",
                           "unique", "shared", "verified", "protected", "note")

# "disk/0 sent 268M, 44.6 MiB/s, 12%, ETA 49m 1s" -- redrawn in place on a terminal
_PROGRESS_RE = re.compile(r"^disk/\d+ sent ")


class ProgressPrinter:
    """Job log printer: progress lines overwrite each other on a tty, plain otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._pending = False

    def __call__(self, entry: Sequence[Any]) -> None:
        line = cli.format_log_entry(entry)
        message = entry[3] if isinstance(entry[3], str) else ""
        if self.tty and _PROGRESS_RE.match(message):
            self.stream.write("\r\x1b[K" + line)
            self._pending = True
        else:
            if self._pending:
                self.stream.write("\n")
                self._pending = False
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._pending:
            self.stream.write("\n")
            self._pending = False


def _submit(op: opcodes.OpCode, opts: argparse.Namespace) -> Any:
    printer = ProgressPrinter()
    try:
        return cli.submit_opcode(op, opts, feedback_fn=printer)
    finally:
        printer.close()


# Ganeti's --zero-free-space boots the instance with a helper that overwrites the
# guest's free space with zeros, so its deleted files compress away; there is no such
# helper here, and what zeroing buys Ganeti the copy already does for free space that
# is unallocated or zero
_NO_ZEROING = ("zeroing free space needs a helper running inside the guest, which this"
               " cluster does not have; exports copy sparsely (holes and all-zero blocks"
               " are neither sent nor stored), so free space that is unallocated or"
               " already zero costs nothing")
_ZEROING_OPTS = (("--zero-free-space", "zero_free_space"),
                 ("--zeroing-timeout-fixed", "zeroing_timeout_fixed"),
                 ("--zeroing-timeout-per-mib", "zeroing_timeout_per_mib"))


def _refuse_zeroing(opts: argparse.Namespace) -> None:
    given = [flag for flag, dest in _ZEROING_OPTS if getattr(opts, dest) not in (None, False)]
    if given:
        raise errors.OpPrereqError(f"{', '.join(given)}: not supported: {_NO_ZEROING}",
                                   errors.ECODE_INVAL)


def export(opts: argparse.Namespace) -> int:
    from ganeti import objects, opcodes
    _refuse_zeroing(opts)
    op = opcodes.OpBackupExport.create(
        instance_name=opts.instance, target_node=opts.node, shutdown=opts.shutdown,
        shutdown_timeout=opts.shutdown_timeout, remove_instance=opts.remove_instance,
        ignore_remove_failures=opts.ignore_remove_failures, long_sleep=opts.long_sleep,
        compress=opts.transport_compression, keep_generations=opts.keep_generations,
        note=opts.note, full=opts.full,
        **cli.model_values(opts, objects.BackupDefaults, _LIMIT_DEST))
    result = _submit(op, opts)
    if opts.dry_run:
        return cli.EXIT_SUCCESS
    finalize_ok, disks_ok = result
    if not finalize_ok or not all(disks_ok):
        return cli.EXIT_FAILURE
    return cli.EXIT_SUCCESS


def import_instance(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    fields = gnt_instance.create_fields(opts, default_nic=False)
    src_path = opts.src_dir
    if opts.generation:
        src_path = f"{(src_path or opts.instance).rstrip('/')}@{opts.generation}"
    fields.update(mode=constants.INSTANCE_IMPORT, src_node=opts.src_node,
                  src_path=src_path, identify_defaults=opts.identify_defaults,
                  compress=opts.transport_compression,
                  osparams=gnt_instance.parse_keyval(opts.osparams or "", "OS"),
                  osparams_private=gnt_instance.parse_keyval(opts.osparams_private or "",
                                                             "private OS"))
    _submit(opcodes.OpInstanceCreate.create(**fields), opts)
    return cli.EXIT_SUCCESS


def _export_rows(cl: Any, nodes: list[str], qfilter: list[Any] | None
                 ) -> tuple[list[list[str]], list[str]]:
    """(node, export) rows and the nodes that did not answer.

    Unfiltered: OpBackupQuery (which also refreshes the master's export index);
    with names or -F: the master's Query("export") evaluates the filter.
    """
    rows: list[list[str]] = []
    unreachable: list[str] = []
    if qfilter is None:
        answers = cl.query_exports(nodes, False)
        for node in sorted(answers):
            names = answers[node]
            if names is False:
                unreachable.append(node)
                continue
            rows.extend([node, name] for name in sorted(names))
        return rows, unreachable
    node_filter = qlang.make_filter(nodes, False, namefield="node") if nodes else None
    result = cl.query(query.RESOURCE_EXPORT, ["node", "export"],
                      qlang.and_filters(node_filter, qfilter))
    for (_nstatus, node), (status, name) in result["data"]:
        if status == query.RS_NORMAL:
            rows.append([node, name])
        elif status != query.RS_OFFLINE:  # offline nodes are not asked (as above)
            unreachable.append(node)
    return sorted(rows), sorted(set(unreachable))


# kinds and raw values of the generation fields, for -F filters (evaluated here: the
# generations come from an opcode, not from a Query resource)
_GENERATION_FILTER_SPECS: dict[str, tuple[str, query.Getter]] = {
    "export": (query.QFT_TEXT, lambda _s, g: g["instance"]),
    "timestamp": (query.QFT_TIMESTAMP, lambda _s, g: g["timestamp"]),
    "newest": (query.QFT_BOOL, lambda _s, g: bool(g["newest"])),
    "protected": (query.QFT_BOOL, lambda _s, g: bool(g.get("protected"))),
    "note": (query.QFT_TEXT, lambda _s, g: g.get("note") or ""),
    "verified": (query.QFT_TEXT, lambda _s, g: verified_text(g.get("verify"))),
    **{n: (query.QFT_NUMBER, query.item_getter(n)) for n in SIZE_FIELDS},
}


def _generation_filter_field(name: str, title: str, _kind: str, doc: str) -> query.FieldDef:
    kind, getter = _GENERATION_FILTER_SPECS.get(name, (query.QFT_TEXT, query.item_getter(name)))
    return query.FieldDef(name, title, kind, doc, getter)


_GENERATION_FILTER_FIELDS = tuple(_generation_filter_field(*f) for f in LIST_FIELDS)


def list_exports(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, LIST_GENERATIONS_FIELDS if opts.generations
                              else LIST_DEFAULT_FIELDS)
    known = {name: title for name, title, _kind, _doc in LIST_FIELDS}
    cli.check_fields(fields, known, "gnt-backup list-fields")
    qfilter = cli.list_filter(opts, opts.exports, namefield="export")
    wanted = set(fields) | query.filter_fields(qfilter)
    if opts.generations or wanted & set(GENERATION_FIELDS):
        by_field, unreachable = _generation_rows(opts, qfilter)
    else:
        with cli.get_client() as cl:
            rows, unreachable = _export_rows(cl, opts.nodes, qfilter)
        by_field = [dict(zip(("node", "export"), row, strict=True)) for row in rows]
    named = cli.requested_names(qfilter, "export")
    missing = cli.missing_names(named or [], [row["export"] for row in by_field])
    if missing and not unreachable:  # an unreachable node may hold them
        raise cli.not_found("Export", missing)
    for node in unreachable:
        print(f"Warning: could not list the exports of node {node}", file=sys.stderr)
        if opts.verbose:
            # as Ganeti's verbose special states: the node's row says why it is empty
            by_field.append({f: "(unavail)" if f != "node" else node for f in fields})
    data = [[row.get(f) for f in fields] for row in by_field]
    headers = None if opts.no_headers else known
    for line in cli.generate_table(headers, fields, opts.separator, data,
                                   units=opts.units, bytefields=SIZE_FIELDS):
        print(line)
    return cli.EXIT_FAILURE if unreachable else cli.EXIT_SUCCESS


def verified_text(record: dict[str, Any] | None) -> str:
    """``ok 2026-12-01 13:05``, ``BAD (2 problems) 2026-12-01 13:05`` or ``-``."""
    if not record:
        return "-"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(record["time"]))
    if record["ok"]:
        return f"ok {when}"
    count = len(record.get("problems") or [])
    return f"BAD ({count} problem{'' if count == 1 else 's'}) {when}"


def _generation_rows(opts: argparse.Namespace, qfilter: list[Any] | None = None
                     ) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the detailed query; older generations only with --generations."""
    keep = query.compile_local_filter("export generation", _GENERATION_FILTER_FIELDS,
                                      qfilter)
    # a read-only query, sent as a dict the master validates (OpBackupListGenerations):
    # building the opcode object would make listing import pydantic
    op = {"OP_ID": "OP_BACKUP_LIST_GENERATIONS", "nodes": list(opts.nodes)}
    result = cli.submit_opcode(op, feedback_fn=lambda _e: None)
    rows = []
    for gen in sorted(result["generations"],
                      key=lambda g: (g["node"], g["instance"], -g["timestamp"])):
        if not (gen["newest"] or opts.generations) or not keep(gen):
            continue
        rows.append({"node": gen["node"], "export": gen["instance"],
                     "generation": gen["generation"],
                     "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ",
                                                time.gmtime(gen["timestamp"])),
                     **{name: gen.get(name) for name in SIZE_FIELDS},
                     "newest": "Y" if gen["newest"] else "N",
                     "protected": "Y" if gen.get("protected") else "N",
                     "note": gen.get("note") or "",
                     "verified": verified_text(gen.get("verify"))})
        if gen.get("meta_problem"):
            print(f"Warning: {gen['instance']}@{gen['generation']} on {gen['node']}:"
                  f" {gen['meta_problem']}", file=sys.stderr)
    return rows, list(result["unreachable"])


def verify(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    op = opcodes.OpBackupVerify.create(exports=opts.exports, nodes=opts.nodes,
                                       newest_only=opts.newest)
    result = _submit(op, opts)
    if opts.dry_run:
        return cli.EXIT_SUCCESS
    for gen in result["generations"]:
        if not gen["ok"]:
            print(f"{gen['instance']}@{gen['generation']} on {gen['node']}: BAD")
            for problem in gen["problems"]:
                print(f"  {problem}")
    for node in result["unreachable"]:
        print(f"Warning: could not list the exports of node {node}", file=sys.stderr)
    return cli.EXIT_SUCCESS if result["ok"] and not result["unreachable"] \
        else cli.EXIT_FAILURE


def _address(opts: argparse.Namespace) -> tuple[str, str | None]:
    """NAME, NAME@GENERATION or NAME --generation GENERATION (None: the newest)."""
    name, _sep, generation = opts.instance.partition("@")
    return name, opts.generation or generation or None


def _set_params(opts: argparse.Namespace, protected: bool | None, note: str | None) -> int:
    from ganeti import opcodes
    name, generation = _address(opts)
    op = opcodes.OpBackupSetGenerationParams.create(
        instance_name=name, generation=generation, protected=protected, note=note)
    cli.submit_opcode(op, opts)
    return cli.EXIT_SUCCESS


def protect(opts: argparse.Namespace) -> int:
    return _set_params(opts, True, None)


def unprotect(opts: argparse.Namespace) -> int:
    return _set_params(opts, False, None)


def modify(opts: argparse.Namespace) -> int:
    return _set_params(opts, opts.protected, opts.note)


def remove(opts: argparse.Namespace) -> int:
    from ganeti import opcodes
    name, generation = _address(opts)
    if generation:
        op: opcodes.OpCode = opcodes.OpBackupRemoveGeneration.create(
            instance_name=name, generation=generation)
    else:
        op = opcodes.OpBackupRemove.create(instance_name=name)
    cli.submit_opcode(op, opts)
    return cli.EXIT_SUCCESS


def _compression(value: str) -> str:
    if value not in constants.IEC_DEFAULT_TOOLS:
        raise argparse.ArgumentTypeError(
            f"unknown compression '{value}' (choose from"
            f" {', '.join(constants.IEC_DEFAULT_TOOLS)})")
    return value


_COMPRESS_OPT = cli.Option(("--transport-compression", "--compress"), {
    "dest": "transport_compression", "type": _compression, "default": constants.IEC_NONE,
    "metavar": "TOOL", "help": "Compress the disk streams (none, zstd, gzip)"})

_NOTE_OPT = cli.Option(("--note",), {
    "default": None, "metavar": "TEXT",
    "help": f"Note kept with the export (one line, at most {exportmeta.NOTE_MAX}"
            " characters; '' clears it)"})
_GENERATION_OPT = cli.Option(("--generation",), {
    "default": None, "metavar": "GENERATION",
    "help": "An older generation instead of the newest export (also INSTANCE@GENERATION)"})
# NAME, NAME@GENERATION: the newest export or one generation
_EXPORT_ARG = (cli.Arg("instance"),)
# --bwlimit, --ionice-class, --ionice-level: defined by the cluster's backup
# defaults (the opcode fields of the same names override them)
_LIMIT_DEST = "limit_"
LIMIT_OPTS = cli.lazy_model_options(
    "ganeti.objects:BackupDefaults", "", _LIMIT_DEST, ("bwlimit", "ionice_class", "ionice_level"),
    default_help="the cluster's backup default, see gnt-cluster modify")

_EXPORT_OPTS = (
    cli.Option(("-n", "--node"), {"required": True, "metavar": "NODE",
                                  "help": "Node that receives the export"}),
    cli.Option(("--noshutdown",), {"dest": "shutdown", "action": "store_false",
                                   "default": True,
                                   "help": "Do not shut the instance down (needs disks that"
                                           " can be snapshotted live)"}),
    cli.Option(("--shutdown-timeout",), {"type": int,
                                         "default": constants.DEFAULT_SHUTDOWN_TIMEOUT,
                                         "metavar": "SECONDS",
                                         "help": "How long a clean shutdown may take before"
                                                 " the instance is killed"}),
    cli.Option(("--remove-instance",), {"action": "store_true", "default": False,
                                        "help": "Remove the instance after the export"}),
    cli.Option(("--ignore-remove-failures",), {"action": "store_true", "default": False,
                                               "help": "With --remove-instance: turn removal"
                                                       " failures into warnings"}),
    cli.Option(("--long-sleep",), {"action": "store_true", "default": False,
                                   "help": "Allow the instance to stay down for the whole"
                                           " copy when its disks cannot be snapshotted"}),
    cli.Option(("--keep-generations",), {"action": "store_true", "default": False,
                                         "help": "Keep the replaced export as an older"
                                                 " generation instead of deleting it"}),
    cli.Option(("--full",), {"action": "store_true", "default": False,
                             "help": "Read, send and store every disk whole (default: only"
                                     " what changed since the newest export on the node)"}),
    _COMPRESS_OPT,
    _NOTE_OPT,
    LIMIT_OPTS,
    cli.Option(("--zero-free-space",), {
        "action": "store_true", "default": False,
        "help": f"Ganeti's option, refused here: {_NO_ZEROING}"}),
    cli.Option(("--zeroing-timeout-fixed",), {
        "type": int, "default": None, "metavar": "SECONDS",
        "help": "Ganeti's minimum time for --zero-free-space; refused with it"}),
    cli.Option(("--zeroing-timeout-per-mib",), {
        "type": float, "default": None, "metavar": "SECONDS",
        "help": "Ganeti's extra time per MiB for --zero-free-space; refused with it"}),
)

_IMPORT_OPTS = (
    *gnt_instance.ADD_OPTS,
    cli.Option(("--src-node",), {"default": None, "metavar": "NODE",
                                 "help": "Node holding the export (default: search)"}),
    cli.Option(("--src-dir",), {"default": None, "metavar": "DIR",
                                "help": "Export to import (its name or directory;"
                                        " default: the new instance's name;"
                                        " NAME@GENERATION picks an older generation)"}),
    cli.Option(("--generation",), {"default": None, "metavar": "GENERATION",
                                   "help": "Import this generation (e.g. 20261129T031500Z,"
                                           " see gnt-backup list --generations)"}),
    # as Ganeti's: they override the export's [os] and [os_private]
    cli.Option(("-O", "--os-parameters"), {
        "dest": "osparams", "default": None, "metavar": "param=value,...",
        "help": "OS parameters (over the export's)"}),
    cli.Option(("--os-parameters-private",), {
        "dest": "osparams_private", "default": None, "metavar": "param=value,...",
        "help": "Private OS parameters, kept out of job queries (over the export's)"}),
    cli.Option(("--identify-defaults",), {"action": "store_true", "default": False,
                                          "help": "Drop parameters equal to the cluster"
                                                  " defaults"}),
    _COMPRESS_OPT,
)

_GENERATIONS_OPT = cli.Option(("-g", "--generations"), {
    "action": "store_true", "default": False,
    "help": "Also list the older retained generations (with timestamps and sizes)"})
_VERBOSE_OPT = cli.Option(("-v", "--verbose"), {
    "action": "store_true", "default": False,
    "help": "Show special states in words: a node that could not list its exports gets"
            " a row saying (unavail), besides the warning"})
_NODE_FILTER_OPT = cli.Option(("--node",), {"dest": "nodes", "action": "append",
                                            "default": [], "metavar": "NODE",
                                            "help": "Only list exports on NODE"})

COMMANDS: dict[str, cli.Command] = {
    "export": cli.Command(export, (cli.Arg("instance"),), (*_EXPORT_OPTS, *cli.SUBMIT_OPTS),
                          "Export an instance to a node"),
    "import": cli.Command(import_instance, (cli.Arg("instance"),),
                          (*_IMPORT_OPTS, *cli.SUBMIT_OPTS),
                          "Create an instance from an export"),
    "list": cli.Command(list_exports, (cli.names_arg("exports"),),
                        (_NODE_FILTER_OPT, _GENERATIONS_OPT, *cli.LIST_OPTS, cli.UNITS_OPT,
                         _VERBOSE_OPT),
                        "List exports (all, or those named, matching a glob or -F filter)"),
    "list-fields": cli.list_fields_command(_field_defs, "gnt-backup list"),
    "remove": cli.Command(remove, _EXPORT_ARG, (_GENERATION_OPT, *cli.SUBMIT_OPTS),
                          "Remove the exports of an instance (or one older generation);"
                          " refused while protected"),
    "protect": cli.Command(protect, _EXPORT_ARG, (_GENERATION_OPT, *cli.SUBMIT_OPTS),
                           "Protect an export or generation: prune and remove skip it"),
    "unprotect": cli.Command(unprotect, _EXPORT_ARG, (_GENERATION_OPT, *cli.SUBMIT_OPTS),
                             "Drop the protection of an export or generation"),
    "modify": cli.Command(modify, _EXPORT_ARG,
                          (_GENERATION_OPT, _NOTE_OPT,
                           cli.Option(("--protected",), {
                               "type": cli.yes_no, "default": None,
                               "metavar": "yes|no",
                               "help": "Protect (yes) or unprotect (no)"}),
                           *cli.SUBMIT_OPTS),
                          "Change the note or protection of an export or generation"),
    "verify": cli.Command(
        verify, (cli.Arg("exports", min=0, max=None),),
        (cli.Option(("--node",), {"dest": "nodes", "action": "append", "default": [],
                                  "metavar": "NODE", "help": "Only verify exports on NODE"}),
         cli.Option(("--newest",), {"action": "store_true", "default": False,
                                    "help": "Only the newest export of each instance"}),
         *cli.SUBMIT_OPTS),
        "Re-hash exports (INSTANCE: every generation, INSTANCE@GENERATION: one; none: all)"
        " against their checksums and block indexes; exit 1 when anything is bad"),
    "prune": cli.deferred_command(
        _SCHEDULE_MODULE, "PRUNE_COMMAND",
        "Remove export generations a retention policy does not keep (--dry-run: show them)"),
    # listed for --help; main() hands "schedule ..." to its own command table
    "schedule": cli.Command(lambda _opts: cli.EXIT_USAGE,
                            (cli.Arg("subcommand", min=0, max=None),), (),
                            "Scheduled exports: add, modify, remove, list, run-now"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "schedule":
        schedule_main: Callable[[list[str]], int] = \
            importlib.import_module(_SCHEDULE_MODULE).main
        return schedule_main(args[1:])
    return cli.generic_main("gnt-backup", COMMANDS, argv)
