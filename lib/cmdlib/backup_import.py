"""Import of an export as a new instance (OpInstanceCreate mode "import").

:class:`LocalImport` is the "import" mode of LUInstanceCreate: find and lock
the source node, read and validate config.ini, default the new instance's
disks, NICs and parameters from it, then stream every dump file into the new
disks and compare the checksums with the ones recorded at export time (a
mismatch names the disk and fails the import).  ``IMPORT_MODES`` maps each
import mode to its strategy (:mod:`ganeti.cmdlib.import_mode`).
"""

from __future__ import annotations

from typing import Any

from ganeti import constants, errors, opcodes
from ganeti.backup import exportconf
from ganeti.backup.index import ExportIndex
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.backup_common import MIB, online_node_names, query_exports
from ganeti.cmdlib.backup_remote import RemoteImport
from ganeti.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti.cmdlib.import_mode import CreateSpecs, ImportMode, import_hook_env
from ganeti.objects import Instance, Node
from ganeti.transfer.checksum import algorithm_of
from ganeti.transfer.master.coordinator import DiskTransfer, run_transfers


def export_name(op: opcodes.OpInstanceCreate) -> str:
    """The export to import: ``src_path`` (a name or a path ending in it) or the name."""
    path = str(op.src_path or op.instance_name).rstrip("/")
    return path.rsplit("/", 1)[-1].split("@", 1)[0]


def export_generation(op: opcodes.OpInstanceCreate) -> str | None:
    """``NAME@GENERATION`` in src_path picks an older generation (None: the newest)."""
    path = (op.src_path or "").rstrip("/")
    last = path.rsplit("/", 1)[-1]
    if "@" not in last:
        return None
    generation = last.split("@", 1)[1]
    if not generation:
        raise errors.OpPrereqError(f"Invalid export source '{op.src_path}': empty"
                                   " generation after '@'", errors.ECODE_INVAL)
    return generation


def _newest_first(lu: LogicalUnit, name: str, nodes: list[str]) -> list[str]:
    """Nodes by the age of their newest export of ``name`` (exports kept with
    generations live on several nodes); same second: by name; silent nodes last."""
    stamps: dict[str, float] = {}
    for node, res in lu.rpc.call_export_generations(nodes, [name]).items():
        if not res.fail_msg:
            newest = [g["timestamp"] for g in res.payload if g.get("newest")]
            if newest:
                stamps[node] = float(max(newest))
    return sorted(nodes, key=lambda n: (n not in stamps, -stamps.get(n, 0.0), n))


def _recorded_algorithm(idx: int, checksum: str | None) -> str | None:
    """The algorithm of ``disk<idx>_checksum``: the sender re-reads the dump with it."""
    if not checksum:
        return None
    try:
        return algorithm_of(checksum)
    except ValueError as err:
        raise errors.OpPrereqError(f"config.ini of the export: disk{idx}_checksum: {err}",
                                   errors.ECODE_INVAL) from None


class LocalImport(ImportMode):
    """Mode "import": an export on a node of this cluster (``src_node``/``src_path``)."""

    def check_arguments(self) -> None:
        op = self.op
        name = export_name(op)
        if not name or name.startswith("."):
            raise errors.OpPrereqError(f"Invalid export source '{op.src_path}'",
                                       errors.ECODE_INVAL)
        if op.compress not in constants.IEC_DEFAULT_TOOLS:
            raise errors.OpPrereqError(f"Unknown compression tool '{op.compress}'",
                                       errors.ECODE_INVAL)

    def source_nodes(self) -> list[str]:
        """The node holding the export; searched (index, then nodes) when not given."""
        lu, op = self.lu, self.op
        if op.src_node:
            self.node = op.src_node = lu.expand_node_name(op.src_node)
            return [self.node]
        name = export_name(op)
        generation = export_generation(op)
        if generation is not None:
            # older generations are not in the index: ask the nodes which has this one
            answers = lu.rpc.call_export_generations(online_node_names(lu), [name])
            candidates = sorted(node for node, res in answers.items() if not res.fail_msg
                                and any(g["generation"] == generation for g in res.payload))
        else:
            candidates = ExportIndex.for_paths(lu.context.paths).nodes(name)
            if not candidates:
                exports = query_exports(lu, online_node_names(lu))
                candidates = sorted(n for n, names in exports.items()
                                    if names and name in names)
        if not candidates:
            what = name if generation is None else f"{name}@{generation}"
            raise errors.OpPrereqError(f"No export of {what} found on any node",
                                       errors.ECODE_NOENT)
        if generation is None and len(candidates) > 1:
            candidates = _newest_first(lu, name, candidates)
        self.node = op.src_node = candidates[0]
        return [self.node]

    def check_prereq(self, specs: CreateSpecs) -> None:
        """Read the export from its node; default disks, NICs and parameters from it."""
        lu, op = self.lu, self.op
        self.name = export_name(op)
        generation = export_generation(op)
        if generation is None:
            res = lu.rpc.call_export_info(self.node, self.name)
        else:
            res = lu.rpc.call_export_generation_info(self.node, self.name, generation)
        what = self.name if generation is None else f"{self.name}@{generation}"
        res.raise_on_failure(f"Cannot read the export of {what} on {self.node}",
                             prereq=True, ecode=errors.ECODE_NOENT)
        self.path = str(res.payload["path"])
        self.info = exportconf.parse(res.payload["config"])
        self.algorithms = [_recorded_algorithm(idx, d.checksum)
                           for idx, d in enumerate(self.info.disks)]
        self._apply_defaults(specs)

    def hook_env(self) -> dict[str, Any]:
        """Ganeti's SRC_NODE, SRC_PATH (the export directory) and SRC_IMAGES."""
        return import_hook_env(self.node, self.path,
                               [getattr(d, "dump", None) for d in self.info.disks])

    def _apply_defaults(self, specs: CreateSpecs) -> None:
        """Fill what the opcode left open from the export (disks, NICs, params, OS)."""
        op, info = self.op, self.info
        cluster = self.lu.cfg.get_cluster_info()
        if not specs.disk_specs:
            specs.disk_specs = iu.check_disk_specs(
                [{"size": d.size, "mode": d.mode, **({"name": d.name} if d.name else {})}
                 for d in info.disks])
        if len(specs.disk_specs) != len(info.disks):
            raise errors.OpPrereqError(
                f"The export has {len(info.disks)} disk(s), the opcode asks for"
                f" {len(specs.disk_specs)}", errors.ECODE_INVAL)
        for idx, (spec, disk) in enumerate(zip(specs.disk_specs, info.disks, strict=True)):
            if spec.size < disk.size:
                raise errors.OpPrereqError(
                    f"disk/{idx} of {spec.size} MiB is smaller than the exported"
                    f" {disk.size} MiB", errors.ECODE_INVAL)
        if not op.nics and not specs.nic_specs and info.nics:
            used = iu.used_macs(self.lu.cfg)
            specs.nic_specs = iu.check_nic_specs([
                {k: v for k, v in (("mac", nic.mac if nic.mac not in used else None),
                                   ("ip", nic.ip), ("mode", nic.mode), ("link", nic.link),
                                   ("name", nic.name)) if v}
                for nic in info.nics])
        if op.os_type is None:
            op.os_type = info.os
        if op.hypervisor is None and info.hypervisor in cluster.enabled_hypervisors:
            op.hypervisor = info.hypervisor
        if op.hypervisor == info.hypervisor and info.hvparams:
            defaults = cluster.hvparams.get(info.hypervisor, {})
            exported = {k: exportconf.typed_value(v) for k, v in info.hvparams.items()
                        if v not in ("", "None")}
            if op.identify_defaults:
                exported = {k: v for k, v in exported.items() if defaults.get(k) != v}
            op.hvparams = {**exported, **op.hvparams}
        beparams = {k: v for k, v in
                    (("maxmem", info.maxmem), ("minmem", info.minmem), ("vcpus", info.vcpus))
                    if v is not None}
        if op.identify_defaults:
            beparams = {k: v for k, v in beparams.items() if cluster.beparams.get(k) != v}
        specs.beparams = iu.check_beparams({**beparams, **specs.beparams})
        if not op.tags and info.tags:
            # a restore under the instance's own name keeps its tags (and so its tag
            # schedules); a copy under another name must not join them by surprise
            if op.instance_name == info.name:
                op.tags = list(info.tags)
            else:
                self.lu.LogInfo("Not carrying the export's tags (%s) to the copy %s; give"
                                " --tags to set them", " ".join(info.tags), op.instance_name)

    def fill_disks(self, instance: Instance, pnode: Node, feedback_fn: FeedbackFn) -> None:
        """Stream the dumps into the new disks; verify the recorded checksums."""
        lu, inst = self.lu, instance
        transfers = [
            DiskTransfer(
                label=f"disk/{idx}", source_node=self.node,
                source={"kind": "file", "path": f"{self.path}/{self.info.disks[idx].dump}"},
                dest_node=pnode.name,
                dest={"kind": "disk", "dev_type": disk.dev_type,
                      "logical_id": disk.logical_id},
                size=self.info.disks[idx].size * MIB, compress=self.op.compress,
                dest_address=pnode.primary_ip, checksum=self.algorithms[idx])
            for idx, disk in enumerate(inst.disks)]
        feedback_fn(f"Importing {len(transfers)} disk(s) of the export of {self.name}"
                    f" from {self.node}")
        source = lu.cfg.get_node_info_by_name(self.node)
        limits = self.limits(inst, [n for n in (source, pnode) if n is not None],
                             feedback_fn)
        results = run_transfers(lu.rpc, transfers, feedback_fn, limits=limits)
        problems = []
        for idx, result in enumerate(results):
            expected = self.info.disks[idx].checksum
            if not result.success:
                problems.append(str(result.error))  # it starts with disk/<idx>
            elif expected and result.checksum != expected:
                problems.append(
                    f"disk/{idx}: checksum mismatch, the export recorded {expected} but"
                    f" {self.info.disks[idx].dump} on {self.node} gives {result.checksum}"
                    " (the dump is corrupt)")
            elif not expected:
                lu.LogWarning("disk/%d: the export records no checksum, data not verified",
                              idx)
        if problems:
            raise errors.OpExecError("Import failed: " + "; ".join(problems))
        feedback_fn("All disks imported and verified")


# OpInstanceCreate mode -> its import strategy ("create" has none)
IMPORT_MODES: dict[str, type[ImportMode]] = {
    constants.INSTANCE_IMPORT: LocalImport,
    constants.INSTANCE_REMOTE_IMPORT: RemoteImport,
}
