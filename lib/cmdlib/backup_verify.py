"""gnt-backup verify: re-hash export dumps on their nodes and record what was found.

The node does the reading (``ganeti.backend.export_verify``), one RPC per
disk so that the job log shows each disk as it is checked; this LU picks the
generations, reports every problem and bad block by disk and offset, and
stores the outcome in each generation's sidecar (``ExportMeta.verify``),
where base selection refuses a bad generation and ``gnt-backup list -g``
shows it.  It takes no locks: reading never changes an export, and the
node finds a generation by its name wherever finalize has moved it; one
removed meanwhile is reported as a problem.
"""

from __future__ import annotations

from typing import Any

from ganeti import errors, opcodes
from ganeti.backup import exportconf
from ganeti.cmdlib.backup_common import online_node_names
from ganeti.cmdlib.backup_schedule import collect_generations
from ganeti.cmdlib.base import FeedbackFn, NoHooksLU
from ganeti.transfer.master.coordinator import format_size

_METHODS = {"index": "block by block", "checksum": "checksum only (no block index)",
            "none": "unverifiable"}


def parse_exports(exports: list[str]) -> list[tuple[str, str | None]]:
    """INSTANCE or INSTANCE@GENERATION -> (instance, generation or None: every one)."""
    wanted = []
    for text in exports:
        name, sep, generation = text.partition("@")
        if not name or (sep and not generation):
            raise errors.OpPrereqError(f"Invalid value for exports: {text!r} is not INSTANCE"
                                       " or INSTANCE@GENERATION", errors.ECODE_INVAL)
        wanted.append((name, generation or None))
    return wanted


def disk_lines(label: str, disk: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(job log lines, problems to record) of one disk's result."""
    prefix = f"{label}: {disk['ivname']}"
    problems = [f"{disk['ivname']}: {p}" for p in disk["problems"]]
    problems += [f"{disk['ivname']}: bad block at offset {bad['offset']} (block"
                 f" {bad['block']}, {format_size(bad['length'])})"
                 for bad in disk["bad_blocks"]]
    unlisted = disk["bad_block_count"] - len(disk["bad_blocks"])
    if unlisted > 0:
        problems.append(f"{disk['ivname']}: {unlisted} more bad block(s)")
    state = "ok" if disk["ok"] else f"BAD ({len(problems)} problem(s))"
    lines = [f"{prefix}: {state}, {format_size(disk['size'])} (read"
             f" {format_size(disk['read_bytes'])}) in {disk['seconds']:.1f}s,"
             f" {_METHODS.get(disk['method'], disk['method'])}"]
    lines += [f"{prefix}: {note}" for note in disk["notes"]]
    lines += [f"{label}: {p}" for p in problems]
    return lines, problems


class LUBackupVerify(NoHooksLU):
    REQ_BGL = False
    op: opcodes.OpBackupVerify

    def CheckArguments(self) -> None:
        self.wanted = parse_exports(self.op.exports)

    def ExpandNames(self) -> None:
        self.op.nodes = [self.expand_node_name(n) for n in self.op.nodes]
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        instances = sorted({name for name, _gen in self.wanted})
        found, self.unreachable = collect_generations(
            self, self.op.nodes or online_node_names(self), instances or None)
        missing = [f"{name}@{gen}" if gen else name for name, gen in self.wanted
                   if not any(g["instance"] == name and gen in (None, g["generation"])
                              for g in found)]
        if missing:
            hint = (f" (not asked: {', '.join(self.unreachable)})" if self.unreachable
                    else "")
            raise errors.OpPrereqError(f"No export found of {', '.join(missing)}{hint}",
                                       errors.ECODE_NOENT)
        selected = [g for g in found
                    if (not self.wanted or any(g["instance"] == name and gen in
                                               (None, g["generation"])
                                               for name, gen in self.wanted))
                    and (g["newest"] or not self.op.newest_only)]
        self.selected = sorted(selected, key=lambda g: (g["instance"], -g["timestamp"],
                                                        g["node"]))

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        report = [self._verify(gen, feedback_fn) for gen in self.selected]
        bad = [f"{g['instance']}@{g['generation']} on {g['node']}" for g in report
               if not g["ok"]]
        feedback_fn(f"Verified {len(report)} export generation(s): {len(report) - len(bad)}"
                    f" ok, {len(bad)} bad")
        if bad and self.op.fail_on_problems:
            raise errors.OpExecError(f"Verify found problems in {', '.join(bad)}")
        return {"ok": not bad, "generations": report, "unreachable": self.unreachable}

    def _verify(self, gen: dict[str, Any], feedback_fn: FeedbackFn) -> dict[str, Any]:
        node, name, generation = gen["node"], gen["instance"], gen["generation"]
        label = f"{name}@{generation} on {node}"
        problems: list[str] = []
        disks: list[dict[str, Any]] = []
        res = self.rpc.call_export_generation_info(node, name, generation)
        info = None
        if res.fail_msg:
            problems.append(f"cannot read the export: {res.fail_msg}")
        else:
            try:
                info = exportconf.parse(res.payload["config"])
            except errors.OpPrereqError as err:
                problems.append(f"config.ini: {err.args[0]}")
        for problem in problems:
            feedback_fn(f"{label}: {problem}")
        for idx, conf_disk in enumerate(info.disks if info else []):
            ivname = conf_disk.ivname or f"disk/{idx}"
            feedback_fn(f"{label}: checking {ivname} ({format_size(conf_disk.size << 20)})")
            disk_res = self.rpc.call_export_verify_disk(node, name, generation, idx)
            if disk_res.fail_msg:
                problems.append(f"{ivname}: {disk_res.fail_msg}")
                feedback_fn(f"{label}: {ivname}: {disk_res.fail_msg}")
                continue
            disk = dict(disk_res.payload)
            lines, disk_problems = disk_lines(label, disk)
            for line in lines:
                feedback_fn(line)
            problems += disk_problems
            disks.append(disk)
        ok = not problems
        if ok and all(d["method"] == "none" for d in disks):
            feedback_fn(f"{label}: unverifiable (no checksums, no block indexes); nothing"
                        " recorded")
        else:
            rec = self.rpc.call_export_verify_record(node, name, generation, ok, problems)
            if rec.fail_msg:
                self.LogWarning("Could not record the verify of %s: %s", label,
                                rec.fail_msg)
            feedback_fn(f"{label}: {'ok' if ok else f'BAD ({len(problems)} problem(s))'}")
        return {"instance": name, "generation": generation, "node": node, "ok": ok,
                "problems": problems, "disks": disks}
