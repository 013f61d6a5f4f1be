"""Logical units of scheduled exports: schedules in the config, generations, prune.

Schedules are plain configuration (no instance or node locks: the config
store serialises writes); the runner (``ganeti.tools.backup_runner``) reads
them and submits export jobs.  Listing and pruning generations talk to the
nodes only; removal is by generation name and never touches the newest
export, so it is safe next to a running export of the same instance.
"""

from __future__ import annotations

from typing import Any

from ganeti import errors, locking, opcodes
from ganeti.backup import generations, retention
from ganeti.backup import schedule as sched
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.backup_common import checked_note, online_node_names, unprotect_hint
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU
from ganeti.objects import BackupSchedule, Instance, ScheduleSpec

SCHEDULE_FIELDS: tuple[str, ...] = tuple(ScheduleSpec.model_fields)
# changes after which a snapshot schedule's storage is checked again
_SNAPSHOT_CHECK_FIELDS = {"shutdown_mode", "instances", "tags", "all_instances", "exclude"}


def collect_generations(lu: NoHooksLU, nodes: list[str], instances: list[str] | None,
                        usage: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """(generations with their node, nodes that could not be asked); ``usage``: with
    used, unique and shared bytes (for listings)."""
    found: list[dict[str, Any]] = []
    unreachable: list[str] = []
    answers = lu.rpc.call_export_generations(nodes, instances or None, usage)
    for node, res in sorted(answers.items()):
        if res.fail_msg:
            unreachable.append(node)
            lu.LogWarning("Cannot list the export generations of %s: %s", node, res.fail_msg)
            continue
        for gen in res.payload:
            if gen.get("meta_problem"):
                lu.LogWarning("Export %s@%s on %s: %s", gen["instance"], gen["generation"],
                              node, gen["meta_problem"])
            found.append({**gen, "node": node})
    return found, unreachable


class _ScheduleLU(NoHooksLU):
    REQ_BGL = False

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def _validate(self, schedule: BackupSchedule) -> None:
        """Cross-field and cluster checks (each field's own syntax and bounds are
        ScheduleSpec's, checked when the opcode was built); each error names the field."""
        sched.check_selection(schedule.instances, schedule.tags, schedule.all_instances)
        sched.check_target(schedule.node_policy, schedule.target_node)
        if schedule.target_node:
            node = self.cfg.expand_node_name(schedule.target_node)
            info = None if node is None else self.cfg.get_node_info(node)
            if info is None:
                raise errors.OpPrereqError(f"Schedule field 'target_node': node"
                                           f" '{schedule.target_node}' not known",
                                           errors.ECODE_NOENT)
            schedule.target_node = info.name
        names = []
        for name in schedule.instances:
            uuid = self.cfg.expand_instance_name(name)
            inst = None if uuid is None else self.cfg.get_instance_info(uuid)
            if inst is None:
                raise errors.OpPrereqError(f"Schedule field 'instances': instance"
                                           f" '{name}' not known", errors.ECODE_NOENT)
            names.append(inst.name)
        schedule.instances = sorted(set(names))
        tools = self.cfg.get_cluster_info().compression_tools
        if schedule.compress not in tools:
            raise errors.OpPrereqError(
                f"Schedule field 'compress': '{schedule.compress}' is not allowed in this"
                f" cluster (allowed: {', '.join(tools)})", errors.ECODE_INVAL)
        schedule.exclude = sched.check_exclude(schedule.exclude, schedule.instances)
        schedule.overrides = sched.check_overrides(schedule.overrides)

    def _selected_now(self, schedule: BackupSchedule) -> list[Instance]:
        data = schedule.to_dict()
        return sorted((inst for inst in self.cfg.snapshot().get_all_instances_info().values()
                       if sched.selects(data, inst.name, list(inst.tags))),
                      key=lambda inst: inst.name)

    def _check_snapshot_mode(self, schedule: BackupSchedule, feedback_fn: FeedbackFn) -> None:
        """Refuse ``snapshot`` when a selected instance's storage cannot snapshot live.

        Instances selected by name are all checked; a tag or all-instances selection can
        only be checked for the instances it selects now (later ones fail at run time).
        """
        if schedule.shutdown_mode != "snapshot":
            return
        instances = self._selected_now(schedule)
        cannot: list[str] = []
        for inst in instances:
            cannot.extend(f"{inst.name} disk {idx} ({inst.disks[idx].dev_type})"
                          for idx in iu.disks_without_snapshots(
                              self, inst, "Schedule field 'shutdown_mode': "))
        scope = ("" if not (schedule.tags or schedule.all_instances)
                 else " (checked the instances the selection matches now)")
        if cannot:
            raise errors.OpPrereqError(
                f"Schedule field 'shutdown_mode': snapshot needs storage that can snapshot a"
                f" running instance; {', '.join(cannot)} cannot{scope}; use shutdown mode"
                f" 'shutdown'", errors.ECODE_INVAL)
        if scope:
            feedback_fn(f"Snapshot mode checked for the {len(instances)} instance(s) the"
                        " selection matches now; instances it matches later are checked"
                        " when their export runs")


class LUBackupScheduleAdd(_ScheduleLU):
    op: opcodes.OpBackupScheduleAdd

    def CheckPrereq(self) -> None:
        if self.op.name in self.cfg.get_backup_schedules():
            raise errors.OpPrereqError(f"Backup schedule '{self.op.name}' already exists",
                                       errors.ECODE_EXISTS)
        self.new = BackupSchedule.model_validate(
            {"name": self.op.name, **self.op.model_dump(include=set(SCHEDULE_FIELDS))})
        self._validate(self.new)
        self._check_snapshot_mode(self.new, self.feedback_fn)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        self.cfg.put_backup_schedule(self.new, create=True)
        feedback_fn(f"Added backup schedule {self.new.name}")
        return self.new.name


class LUBackupScheduleModify(_ScheduleLU):
    op: opcodes.OpBackupScheduleModify

    def CheckPrereq(self) -> None:
        current = self.cfg.get_backup_schedules().get(self.op.name)
        if current is None:
            raise errors.OpPrereqError(f"Backup schedule '{self.op.name}' not known",
                                       errors.ECODE_NOENT)
        changes = self.op.changes()
        if not changes:
            raise errors.OpPrereqError("Nothing to change", errors.ECODE_INVAL)
        if "overrides" in changes:
            merged = {**current.overrides, **changes["overrides"]}
            changes["overrides"] = {k: v for k, v in merged.items() if v is not None}
        if changes.get("node_policy", "fixed") != "fixed" and "target_node" not in changes:
            changes["target_node"] = None
        if changes.get("target_node") and "node_policy" not in changes:
            changes["node_policy"] = "fixed"
        selection = {"instances", "tags", "all_instances"} & set(changes)
        if changes.get("all_instances"):
            changes.setdefault("instances", [])
            changes.setdefault("tags", [])
        elif selection and "all_instances" not in changes:
            changes["all_instances"] = False
        self.updated = current.model_copy(update=changes)
        self._validate(self.updated)
        if _SNAPSHOT_CHECK_FIELDS & set(changes):
            self._check_snapshot_mode(self.updated, self.feedback_fn)
        self.changes = sorted(changes)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        self.cfg.put_backup_schedule(self.updated, create=False)
        feedback_fn(f"Modified backup schedule {self.updated.name}:"
                    f" {', '.join(self.changes)}")
        return self.changes


class LUBackupScheduleRemove(_ScheduleLU):
    op: opcodes.OpBackupScheduleRemove

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        self.cfg.remove_backup_schedule(self.op.name)
        feedback_fn(f"Removed backup schedule {self.op.name}")
        return True


class LUBackupScheduleQuery(_ScheduleLU):
    op: opcodes.OpBackupScheduleQuery

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        schedules = self.cfg.get_backup_schedules()
        unknown = [n for n in self.op.names if n not in schedules]
        if unknown:
            # the CLI's wording for what is not there (cli.not_found)
            quoted = ", ".join(f"'{n}'" for n in unknown)
            raise errors.OpPrereqError(f"Backup schedule {quoted} not known",
                                       errors.ECODE_NOENT)
        names = self.op.names or sorted(schedules)
        return [schedules[n].to_dict() for n in names]


class LUBackupListGenerations(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpBackupListGenerations

    def ExpandNames(self) -> None:
        self.op.nodes = [self.expand_node_name(n) for n in self.op.nodes]
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        nodes = self.op.nodes or online_node_names(self)
        found, unreachable = collect_generations(self, nodes, self.op.instances,
                                                 usage=True)
        return {"generations": found, "unreachable": unreachable}


class LUBackupPrune(NoHooksLU):
    """Remove the generations a retention policy does not keep."""

    REQ_BGL = False
    op: opcodes.OpBackupPrune

    def CheckArguments(self) -> None:
        if not self.op.rules():
            raise errors.OpPrereqError(
                "Prune needs a retention policy: set at least one of "
                + ", ".join(retention.RULE_NAMES), errors.ECODE_INVAL)

    def ExpandNames(self) -> None:
        self.op.nodes = [self.expand_node_name(n) for n in self.op.nodes]
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        nodes = self.op.nodes or online_node_names(self)
        found, unreachable = collect_generations(self, nodes, self.op.instances)
        rows = generations.prune_plan(found, self.op.rules())
        failed = []
        for row in rows:
            row["removed"] = False
            if row["keep"]:
                continue
            res = self.rpc.call_export_generation_remove(row["node"], row["instance"],
                                                         row["generation"])
            if res.fail_msg:
                failed.append(f"{row['instance']}@{row['generation']} on {row['node']}")
                self.LogWarning("Could not remove generation %s of %s on %s: %s",
                                row["generation"], row["instance"], row["node"],
                                res.fail_msg)
            else:
                row["removed"] = True
                feedback_fn(f"Pruned {row['instance']}@{row['generation']} on {row['node']}"
                            f" ({'; '.join(row['reasons'])})")
        if failed:
            raise errors.OpExecError(f"Could not prune: {', '.join(failed)}")
        return {"plan": rows, "unreachable": unreachable}


class LUBackupRemoveGeneration(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpBackupRemoveGeneration

    def ExpandNames(self) -> None:
        self.op.nodes = [self.expand_node_name(n) for n in self.op.nodes]
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        name, generation = self.op.instance_name, self.op.generation
        found, unreachable = collect_generations(self, self.op.nodes or
                                                 online_node_names(self), [name])
        holders = [g for g in found if g["generation"] == generation]
        if not holders:
            hint = f" (not asked: {', '.join(unreachable)})" if unreachable else ""
            raise errors.OpPrereqError(f"No export generation {generation} of {name} found"
                                       f"{hint}", errors.ECODE_NOENT)
        if any(g["newest"] for g in holders):
            raise errors.OpPrereqError(
                f"Generation {generation} is the newest export of {name}; remove it with"
                f" 'gnt-backup remove {name}'", errors.ECODE_INVAL)
        protected = sorted(g["node"] for g in holders if g.get("protected"))
        if protected:
            raise errors.OpPrereqError(
                f"Generation {generation} of {name} is protected (on"
                f" {', '.join(protected)}); unprotect it first with"
                f" {unprotect_hint(name, generation)}", errors.ECODE_STATE)
        removed = []
        for gen in holders:
            res = self.rpc.call_export_generation_remove(gen["node"], name, generation)
            res.raise_on_failure(f"Could not remove generation {generation} of {name} on"
                                 f" {gen['node']}")
            removed.append(gen["node"])
            feedback_fn(f"Removed generation {generation} of {name} on {gen['node']}")
        return removed


class LUBackupSetGenerationParams(NoHooksLU):
    """Protect/unprotect a generation, or set its note, on every node holding it.

    Takes the instance lock (when the instance still exists) so that an export
    of the same instance cannot retire or replace the directory meanwhile.
    """

    REQ_BGL = False
    op: opcodes.OpBackupSetGenerationParams

    def CheckArguments(self) -> None:
        if self.op.protected is None and self.op.note is None:
            raise errors.OpPrereqError("Nothing to change: give protected and/or note",
                                       errors.ECODE_INVAL)
        if self.op.note is not None:
            self.op.note = checked_note(self.op.note)

    def ExpandNames(self) -> None:
        self.op.nodes = [self.expand_node_name(n) for n in self.op.nodes]
        uuid = self.cfg.expand_instance_name(self.op.instance_name)
        inst = None if uuid is None else self.cfg.get_instance_info(uuid)
        self.needed_locks = {}
        if inst is not None:
            self.op.instance_name = inst.name
            self.needed_locks[locking.LEVEL_INSTANCE] = [inst.name]

    def CheckPrereq(self) -> None:
        name, generation = self.op.instance_name, self.op.generation
        found, unreachable = collect_generations(self, self.op.nodes or
                                                 online_node_names(self), [name])
        self.holders = sorted((g for g in found if (g["newest"] if generation is None
                                                    else g["generation"] == generation)),
                              key=lambda g: g["node"])
        if not self.holders:
            what = f"export generation {generation}" if generation else "export"
            hint = f" (not asked: {', '.join(unreachable)})" if unreachable else ""
            raise errors.OpPrereqError(f"No {what} of {name} found{hint}",
                                       errors.ECODE_NOENT)

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        name, generation = self.op.instance_name, self.op.generation
        changed = []
        for gen in self.holders:
            res = self.rpc.call_export_generation_modify(gen["node"], name, generation,
                                                         self.op.protected, self.op.note)
            res.raise_on_failure(f"Could not change export {name}@{gen['generation']} on"
                                 f" {gen['node']}")
            changed.append({"node": gen["node"], "generation": gen["generation"],
                            "protected": res.payload["protected"],
                            "note": res.payload["note"]})
            feedback_fn(f"Export {name}@{gen['generation']} on {gen['node']}:"
                        f" {'protected' if res.payload['protected'] else 'not protected'}"
                        + (f", note {res.payload['note']!r}" if res.payload["note"] else ""))
        return changed
