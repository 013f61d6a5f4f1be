"""gnt-backup schedule add/modify/remove/list/run-now, and gnt-backup prune.

``gnt-backup schedule ...`` is a nested command table: gnt_backup.main hands
everything after "schedule" to :func:`main` here.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ganeti import cli, constants, errors, objects, opcodes, qlang, query
from ganeti.backup import generations, retention
from ganeti.backup import schedule as sched
from ganeti.tools import backup_runner

yes_no = cli.yes_no


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _checked_count(rule: str, convert: Any) -> Any:
    """The option's converter, then the rule's bounds from the model (argparse refuses)."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        retention.RetentionRules.model_fields[rule].rebuild_annotation())

    def parse(text: str) -> Any:
        value = convert(text)
        try:
            return adapter.validate_python(value)
        except ValidationError as err:
            raise argparse.ArgumentTypeError(
                f"{err.errors()[0]['msg'].lower()}, got '{text}'") from None
    return parse


# --keep-*: one option per retention rule, from the model (keep_daily -> --keep-daily)
KEEP_OPTS = tuple(
    cli.Option(opt.flags, {**opt.kwargs,
                           "type": _checked_count(opt.kwargs["dest"], opt.kwargs["type"])})
    for opt in cli.model_options(
        retention.RetentionRules, "", "",
        default_help="unset or 0: the rule is not used; a generation any rule keeps is kept"))


def _retention(opts: argparse.Namespace) -> dict[str, int]:
    """The --keep-* rules given, checked by the model (so a bad count names its rule)."""
    given = cli.model_values(opts, retention.RetentionRules, "")
    try:
        retention.RetentionRules.model_validate(given)
    except ValidationError as err:
        raise errors.OpPrereqError(opcodes.validation_message("retention", err),
                                   errors.ECODE_INVAL) from None
    return {rule: value for rule, value in given.items() if value is not None}


# ScheduleSpec fields set by options of their own (retention: --keep-*; overrides below)
_SPEC_DEST = "spec_"
_SPEC_OPTION_FIELDS = tuple(name for name in objects.ScheduleSpec.model_fields
                            if name not in ("retention", "overrides"))
# where an option's spelling differs from --FIELD
_SPEC_FLAGS = {"target_node": ("-n", "--node")}
_SPEC_METAVARS = {"instances": "I1,I2", "tags": "T1,T2", "exclude": "I1,tag:T",
                  "target_node": "NODE", "cron": "'M H DOM MON DOW'|@daily",
                  "compress": "TOOL"}


# per-schedule overrides of the cluster's backup defaults: options derived from the model
_OVERRIDE_DEST = "override_"
RESET = "default"


def _or_reset(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.strip().lower() == RESET else convert(text)
    return parse


OVERRIDE_OPTS = tuple(
    cli.Option(opt.flags, {**opt.kwargs, "type": _or_reset(opt.kwargs["type"]),
                           "metavar": f"{opt.kwargs['metavar']}|{RESET}"})
    for opt in cli.model_options(objects.BackupDefaults, "", _OVERRIDE_DEST,
                                 default_help=f"the cluster's (gnt-cluster modify"
                                              f" --backup-*); '{RESET}' drops the override"))


def _schedule_fields(opts: argparse.Namespace) -> dict[str, Any]:
    """The schedule fields the user gave (unset options leave the field alone)."""
    fields = cli.model_values(opts, objects.ScheduleSpec, _SPEC_DEST)
    overrides = cli.model_values(opts, objects.BackupDefaults, _OVERRIDE_DEST)
    if overrides:
        fields["overrides"] = overrides
    return fields


def add_opcode(opts: argparse.Namespace) -> opcodes.OpCode:
    """The OpBackupScheduleAdd the ``add`` options describe (checked by ScheduleSpec)."""
    fields = _schedule_fields(opts)
    if "target_node" in fields and "node_policy" not in fields:
        fields["node_policy"] = "fixed"
    if "overrides" in fields:
        fields["overrides"] = {k: v for k, v in fields["overrides"].items() if v is not None}
    return opcodes.OpBackupScheduleAdd.create(name=opts.name, retention=_retention(opts),
                                              **fields)


def modify_opcode(opts: argparse.Namespace,
                  current_retention: dict[str, int] | None = None) -> opcodes.OpCode:
    """The OpBackupScheduleModify of the ``modify`` options; --keep-* rules are merged
    into ``current_retention`` (the schedule's, asked for when not given)."""
    fields = _schedule_fields(opts)
    policy = _retention(opts)
    if policy or opts.keep_all:
        if current_retention is None:
            current_retention = dict(_query([opts.name])[0].get("retention", {}))
        fields["retention"] = {} if opts.keep_all else {**current_retention, **policy}
    return opcodes.OpBackupScheduleModify.create(name=opts.name, **fields)


def add(opts: argparse.Namespace) -> int:
    cli.submit_opcode(add_opcode(opts), opts)
    return cli.EXIT_SUCCESS


def modify(opts: argparse.Namespace) -> int:
    cli.submit_opcode(modify_opcode(opts), opts)
    return cli.EXIT_SUCCESS


def remove(opts: argparse.Namespace) -> int:
    cli.submit_opcode(opcodes.OpBackupScheduleRemove.create(name=opts.name), opts)
    return cli.EXIT_SUCCESS


def _query(names: list[str]) -> list[dict[str, Any]]:
    op = opcodes.OpBackupScheduleQuery.create(names=names)
    return list(cli.submit_opcode(op, feedback_fn=lambda _e: None))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _selection(schedule: dict[str, Any]) -> str:
    if schedule["all_instances"]:
        return "(all)"
    return ",".join([*schedule["instances"], *(f"tag:{t}" for t in schedule["tags"])])


def _text(value: Any) -> str:
    if value is None or value == []:
        return "-"
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Row:
    """One schedule as ``list`` sees it: config, cluster defaults, runner state."""

    schedule: dict[str, Any]
    settings: objects.BackupDefaults
    state: backup_runner.ScheduleState

    def since(self) -> float:
        return self.state.last_run if self.state.last_run is not None else \
            float(self.schedule["ctime"])


def _next_run(row: Row) -> str:
    if not row.schedule["enabled"]:
        return "-"
    return _when(sched.next_slot(row.schedule["cron"], row.since(), row.settings.timezone))


def _setting(name: str) -> Any:
    def get(row: Row) -> str:
        value = _text(getattr(row.settings, name))
        return value if name in row.schedule.get("overrides", {}) else f"({value})"
    return get


# the one field table of 'list -o' and 'list-fields': (name, title, description, getter)
LIST_FIELDS: tuple[tuple[str, str, str, Any], ...] = (
    ("name", "Name", "Schedule name", lambda r: r.schedule["name"]),
    ("enabled", "Enabled", "Y: the runner runs it when due",
     lambda r: "Y" if r.schedule["enabled"] else "N"),
    ("cron", "Cron", "Cron expression or @-shortcut", lambda r: r.schedule["cron"]),
    ("instances", "Instances", "Selection: names, tag:T, or (all)",
     lambda r: _selection(r.schedule)),
    ("exclude", "Exclude", "Instances (names, tag:T) left out of the selection",
     lambda r: _text(r.schedule.get("exclude", []))),
    ("target", "Target", "Target node, or (policy)",
     lambda r: r.schedule["target_node"] or f"({r.schedule['node_policy']})"),
    ("node_policy", "NodePolicy", "fixed, primary or other",
     lambda r: r.schedule["node_policy"]),
    ("retention", "Retention", "Retention policy ((all): keep everything)",
     lambda r: ",".join(f"{k.removeprefix('keep_')}={v}"
                        for k, v in r.schedule["retention"].items()) or "(all)"),
    ("compress", "Compress", "Compression tool", lambda r: r.schedule["compress"]),
    ("shutdown_mode", "Shutdown", "shutdown or snapshot (live)",
     lambda r: r.schedule["shutdown_mode"]),
    ("verify", "Verify", "Y: each export is verified after it is written",
     lambda r: "Y" if r.schedule.get("verify") else "N"),
    *((name, name.title().replace("_", ""),
       f"{info.description}; (value): the cluster's default", _setting(name))
      for name, info in objects.BackupDefaults.model_fields.items()),
    ("last_run", "LastRun", "Time of the last run (UTC)", lambda r: _when(r.state.last_run)),
    ("last_result", "LastResult", "success, failed: INSTANCES, or running",
     lambda r: ("running" if r.state.jobs else r.state.last_result) or "-"),
    ("jobs", "Jobs", "Jobs of the run in progress", lambda r: _text(r.state.jobs)),
    ("next_run", "NextRun", "Next slot (UTC), in the schedule's time zone", _next_run),
)
LIST_DEFAULT = ("name", "enabled", "cron", "instances", "target", "retention", "next_run",
                "last_result")
# the same fields for -F filters: text as shown, the Y/N columns as booleans
_BOOL_FIELDS: dict[str, Any] = {
    "enabled": lambda r: bool(r.schedule["enabled"]),
    "verify": lambda r: bool(r.schedule.get("verify")),
}


def _filter_field(name: str, title: str, doc: str, get: Any) -> query.FieldDef:
    value = _BOOL_FIELDS.get(name, get)
    return query.FieldDef(name, title, query.QFT_BOOL if name in _BOOL_FIELDS
                          else query.QFT_TEXT, doc, lambda _source, row: value(row))


FILTER_FIELDS = tuple(_filter_field(*f) for f in LIST_FIELDS)


def _resolved_state() -> backup_runner.RunnerState:
    with cli.get_client() as cl:
        return backup_runner.resolved_state(cl)


def list_schedules(opts: argparse.Namespace) -> int:
    fields = cli.parse_fields(opts.output, LIST_DEFAULT)
    table = {name: (title, get) for name, title, _doc, get in LIST_FIELDS}
    cli.check_fields(fields, table, "gnt-backup schedule list-fields")
    # exact names are the opcode's (an unknown one is an error); globs and -F filters
    # are evaluated here, on the columns as shown (enabled and verify as booleans)
    keep = query.compile_local_filter("backup schedule", FILTER_FIELDS,
                                      cli.list_filter(opts, opts.names))
    schedules = _query(qlang.plain_names(opts.names, opts.force_filter) or [])
    with cli.get_client() as cl:
        defaults = dict(cl.query_cluster_info().get("backup_defaults") or {})
    state = _resolved_state()
    rows = [row for row in (Row(s, sched.settings(defaults, s),
                                state.schedules.get(s["name"], backup_runner.ScheduleState()))
                            for s in schedules) if keep(row)]
    headers = None if opts.no_headers else {name: title for name, (title, _g) in table.items()}
    for line in cli.generate_table(headers, fields, opts.separator,
                                   [[table[f][1](r) for f in fields] for r in rows]):
        print(line)
    return cli.EXIT_SUCCESS


def _field_defs() -> list[dict[str, str]]:
    return [{"name": f.name, "title": f.title, "kind": f.kind, "doc": f.doc}
            for f in FILTER_FIELDS]


def run_now(opts: argparse.Namespace) -> int:
    return backup_runner.execute(opts.names, None, opts.dry_run, opts.wait, always_report=True)


# --- prune -------------------------------------------------------------------------------


def prune(opts: argparse.Namespace) -> int:
    policy = _retention(opts)
    if opts.schedule:
        if policy:
            raise errors.OpPrereqError("--schedule and --keep-* options exclude each other",
                                       errors.ECODE_INVAL)
        policy = dict(_query([opts.schedule])[0]["retention"])
    if retention.is_keep_all(policy):
        raise errors.OpPrereqError(
            "Prune needs a retention policy: give at least one of "
            + ", ".join(f"--{r.replace('_', '-')}" for r in retention.RULE_NAMES)
            + " (or --schedule NAME)", errors.ECODE_INVAL)
    if opts.dry_run:
        op = opcodes.OpBackupListGenerations.create(nodes=opts.nodes,
                                                    instances=opts.instances)
        result = cli.submit_opcode(op, feedback_fn=lambda _e: None)
        rows = generations.prune_plan(result["generations"], policy)
        unreachable = result["unreachable"]
    else:
        op = opcodes.OpBackupPrune.create(instances=opts.instances, nodes=opts.nodes,
                                          **policy)
        result = cli.submit_opcode(op, opts, feedback_fn=lambda _e: None)
        rows, unreachable = result["plan"], result["unreachable"]
    verb = "would remove" if opts.dry_run else "removed"
    for row in rows:
        action = "keep" if row["keep"] else verb
        print(f"{row['node']} {row['instance']}@{row['generation']}"
              f" {_when(row['timestamp'])} {action} ({'; '.join(row['reasons'])})")
    gone = sum(1 for r in rows if not r["keep"])
    print(f"{len(rows) - gone} kept, {gone} {verb}")
    for node in unreachable:
        print(f"Warning: could not list the exports of node {node}", file=sys.stderr)
    return cli.EXIT_FAILURE if unreachable else cli.EXIT_SUCCESS


# --- tables ------------------------------------------------------------------------------


def _compression(value: str) -> str:
    if value not in constants.IEC_DEFAULT_TOOLS:
        raise argparse.ArgumentTypeError(f"unknown compression '{value}' (choose from"
                                         f" {', '.join(constants.IEC_DEFAULT_TOOLS)})")
    return value


def _spec_option(opt: cli.Option, add: bool) -> cli.Option:
    """A model_options option of a ScheduleSpec field, in gnt-backup schedule's spelling."""
    name = opt.kwargs["dest"].removeprefix(_SPEC_DEST)
    info = objects.ScheduleSpec.model_fields[name]
    kwargs = {**opt.kwargs, "help": info.description}
    if name in _SPEC_METAVARS:
        kwargs["metavar"] = _SPEC_METAVARS[name]
    if info.annotation is bool:
        kwargs.update(type=yes_no, nargs="?", const=True, metavar="yes|no")
    elif name == "compress":
        kwargs["type"] = _compression
    elif name == "cron" and add:
        kwargs["required"] = True
    return cli.Option(_SPEC_FLAGS.get(name, opt.flags), kwargs)


def _schedule_opts(add: bool) -> tuple[cli.Option, ...]:
    spec_opts = cli.model_options(objects.ScheduleSpec, "", _SPEC_DEST,
                                  names=_SPEC_OPTION_FIELDS)
    return (*(_spec_option(opt, add) for opt in spec_opts), *KEEP_OPTS, *OVERRIDE_OPTS)


_NAME = (cli.Arg("name"),)
_WAIT_OPT = cli.Option(("--no-wait",), {"dest": "wait", "action": "store_false",
                                        "default": True,
                                        "help": "Submit the jobs and do not wait"})
_KEEP_ALL_OPT = cli.Option(("--keep-all",), {"action": "store_true", "default": False,
                                             "help": "Drop the retention policy"})

COMMANDS: dict[str, cli.Command] = {
    "add": cli.Command(add, _NAME, (*_schedule_opts(True), *cli.SUBMIT_OPTS),
                       "Add a backup schedule"),
    "modify": cli.Command(modify, _NAME,
                          (*_schedule_opts(False), _KEEP_ALL_OPT, *cli.SUBMIT_OPTS),
                          "Change a backup schedule"),
    "remove": cli.Command(remove, _NAME, cli.SUBMIT_OPTS, "Remove a backup schedule"),
    "list": cli.Command(list_schedules, (cli.names_arg("names"),),
                        cli.LIST_OPTS, "List backup schedules"),
    "list-fields": cli.list_fields_command(_field_defs, "gnt-backup schedule list"),
    "run-now": cli.Command(run_now, (cli.Arg("names", min=1, max=None),),
                           (cli.DRY_RUN_OPT, _WAIT_OPT),
                           "Run schedules now (as the runner would) and print a summary",
                           reports_dry_run=True),
}

PRUNE_COMMAND = cli.Command(
    prune, (cli.Arg("instances", min=0, max=None),),
    (*KEEP_OPTS,
     cli.Option(("--schedule",), {"default": None, "metavar": "NAME",
                                  "help": "Use the retention policy of this schedule"}),
     cli.Option(("--node",), {"dest": "nodes", "action": "append", "default": [],
                              "metavar": "NODE", "help": "Only prune on NODE"}),
     *cli.SUBMIT_OPTS),
    # gnt-backup's table (cli.deferred_command) gives its description
    reports_dry_run=True)


def main(argv: list[str]) -> int:
    return cli.generic_main("gnt-backup schedule", COMMANDS, argv)
