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
from ganeti.objects import Cluster, Instance, Node
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
        # what the hooks see (Ganeti's SRC_NODE, SRC_PATH, SRC_IMAGES)
        self.src_node = self.node
        self.src_path = str(res.payload.get("real_path") or self.path)
        files = res.payload.get("files")
        self.images = [_image(idx, disk, files, self.node)
                       for idx, disk in enumerate(self.info.disks)]
        self.src_images = [f"{self.src_path}/{d}" for d in self.images if d is not None]
        self.dump_bytes = [files.get(d) if files is not None and d is not None else None
                           for d in self.images]
        self.source_name = _source_node_name(lu, self.info.source)
        self._apply_defaults(specs)

    def hook_env(self) -> dict[str, Any]:
        """Ganeti's SRC_NODE, SRC_PATH (the export directory) and SRC_IMAGES."""
        return import_hook_env(self.node, self.path,
                               [getattr(d, "dump", None) for d in self.info.disks])

    def _exported_sizes(self) -> list[int | None]:
        """Each disk's size in MiB: config.ini's, or (0 there, as Ganeti allows) the dump's."""
        sizes: list[int | None] = []
        for disk, dump_bytes in zip(self.info.disks, self.dump_bytes, strict=True):
            if disk.size:
                sizes.append(disk.size)
            elif dump_bytes is not None:
                sizes.append(max(1, -(-dump_bytes // MIB)))
            else:
                sizes.append(None)
        return sizes

    def _apply_defaults(self, specs: CreateSpecs) -> None:
        """Fill what the opcode left open from the export (disks, NICs, params, OS)."""
        op, info = self.op, self.info
        cluster = self.lu.cfg.get_cluster_info()
        sizes = self._exported_sizes()
        if not specs.disk_specs:
            for idx, size in enumerate(sizes):
                if size is None:
                    raise errors.OpPrereqError(
                        f"disk/{idx}: the export gives no size (disk{idx}_size = 0) and has"
                        f" no dump to take it from; give it with --disk {idx}:size=SIZE",
                        errors.ECODE_INVAL)
            specs.disk_specs = iu.check_disk_specs(
                [{"size": size, "mode": d.mode, **({"name": d.name} if d.name else {})}
                 for d, size in zip(info.disks, sizes, strict=True)])
        if len(specs.disk_specs) != len(info.disks):
            raise errors.OpPrereqError(
                f"The export has {len(info.disks)} disk(s), the opcode asks for"
                f" {len(specs.disk_specs)}", errors.ECODE_INVAL)
        for idx, (spec, size) in enumerate(zip(specs.disk_specs, sizes, strict=True)):
            if size is not None and spec.size < size:
                raise errors.OpPrereqError(
                    f"disk/{idx} of {spec.size} MiB is smaller than the exported"
                    f" {size} MiB", errors.ECODE_INVAL)
        if not op.nics and not op.no_nics and not specs.nic_specs and info.nics:
            used = iu.used_macs(self.lu.cfg)
            specs.nic_specs = iu.check_nic_specs([
                {k: v for k, v in (("mac", nic.mac if nic.mac not in used else None),
                                   ("ip", nic.ip), ("mode", nic.mode), ("link", nic.link),
                                   ("name", nic.name), ("vlan", nic.vlan)) if v}
                for nic in info.nics])
        if op.os_type is None:
            op.os_type = info.os
        self._apply_hypervisor(cluster)
        op.osparams = {**info.osparams, **op.osparams}
        op.osparams_private = {**info.osparams_private, **op.osparams_private}
        beparams = info.backend_params()
        if op.identify_defaults:
            beparams = {k: v for k, v in beparams.items() if cluster.beparams.get(k) != v}
        try:
            specs.beparams = iu.check_beparams({**beparams, **specs.beparams})
        except errors.OpPrereqError as err:
            raise errors.OpPrereqError(f"[backend] of the export: {err.args[0]}",
                                       errors.ECODE_INVAL) from None
        if not op.tags and info.tags:
            # a restore under the instance's own name keeps its tags (and so its tag
            # schedules); a copy under another name must not join them by surprise
            if op.instance_name == info.name:
                op.tags = list(info.tags)
            else:
                self.lu.LogInfo("Not carrying the export's tags (%s) to the copy %s; give"
                                " %s to set them", " ".join(info.tags), op.instance_name,
                                errors.field_ref("tags"))

    def _apply_hypervisor(self, cluster: Cluster) -> None:
        """The export's hypervisor (refused when not enabled here) unless -H names one;
        its parameters only on the same hypervisor, minus those ours does not have."""
        op, info = self.op, self.info
        if op.hypervisor is None and info.hypervisor:
            if info.hypervisor not in cluster.enabled_hypervisors:
                raise errors.OpPrereqError(
                    f"The export's hypervisor {info.hypervisor} is not enabled in this"
                    f" cluster (enabled: {', '.join(cluster.enabled_hypervisors) or 'none'});"
                    " import it with another one with -H HYPERVISOR",
                    errors.ECODE_STATE)
            op.hypervisor = info.hypervisor
        if op.hypervisor != info.hypervisor or not info.hvparams:
            return
        known = iu.hypervisor_parameter_names(op.hypervisor)
        exported = {k: exportconf.typed_value(v) for k, v in info.hvparams.items()
                    if v.lower() not in ("", "none")}
        dropped = sorted(set(exported) - set(known))
        if dropped:
            self.lu.LogWarning("Hypervisor parameters of the export that %s here does not"
                               " have, not imported: %s", op.hypervisor, ", ".join(dropped))
        exported = {k: v for k, v in exported.items() if k in known}
        if op.identify_defaults:
            defaults = cluster.hvparams.get(op.hypervisor, {})
            exported = {k: v for k, v in exported.items() if defaults.get(k) != v}
        op.hvparams = {**exported, **op.hvparams}

    def fill_disks(self, instance: Instance, pnode: Node, feedback_fn: FeedbackFn) -> None:
        """Stream the dumps into the new disks; verify the recorded checksums.

        A disk without a dump stays blank (as Ganeti leaves it)."""
        lu, inst = self.lu, instance
        transfers = []
        for idx, disk in enumerate(inst.disks):
            dump = self.images[idx]
            if dump is None:
                continue
            dump_bytes = self.dump_bytes[idx]
            transfers.append(DiskTransfer(
                label=f"disk/{idx}", source_node=self.node,
                source={"kind": "file", "path": f"{self.path}/{dump}"},
                dest_node=pnode.name,
                dest={"kind": "disk", "dev_type": disk.dev_type,
                      "logical_id": disk.logical_id},
                size=dump_bytes if dump_bytes is not None else self.info.disks[idx].size * MIB,
                compress=self.op.compress,
                dest_address=pnode.primary_ip, checksum=self.algorithms[idx]))
        source = ""
        if self.source_name and self.source_name != self.node:
            source = f" (exported from {self.source_name})"
        feedback_fn(f"Importing {len(transfers)} of {len(inst.disks)} disk(s) of the export"
                    f" of {self.name} from {self.node}{source}")
        outcome: list[str] = []
        for idx, dump in enumerate(self.images):
            if dump is None:
                why = ("no dump in the export" if self.info.disks[idx].dump is None
                       else f"its dump {self.info.disks[idx].dump} is missing")
                lu.LogWarning("disk/%d: %s, the disk is created blank", idx, why)
                outcome.append(f"disk/{idx} blank")
        problems = []
        if transfers:
            src = lu.cfg.get_node_info_by_name(self.node)
            limits = self.limits(inst, [n for n in (src, pnode) if n is not None],
                                 feedback_fn)
            results = run_transfers(lu.rpc, transfers, feedback_fn, limits=limits)
            for transfer, result in zip(transfers, results, strict=True):
                idx = int(transfer.label.split("/", 1)[1])
                expected = self.info.disks[idx].checksum
                if not result.success:
                    problems.append(str(result.error))  # it starts with disk/<idx>
                elif expected and result.checksum != expected:
                    problems.append(
                        f"disk/{idx}: checksum mismatch, the export recorded {expected} but"
                        f" {self.images[idx]} on {self.node} gives {result.checksum}"
                        " (the dump is corrupt)")
                elif not expected:
                    lu.LogWarning("disk/%d: the export records no checksum, data not"
                                  " verified", idx)
                    outcome.append(f"disk/{idx} imported, not verified")
                else:
                    outcome.append(f"disk/{idx} imported and verified")
        if problems:
            raise errors.OpExecError("Import failed: " + "; ".join(problems))
        if all(o.endswith("and verified") for o in outcome):
            feedback_fn("All disks imported and verified")
        else:
            feedback_fn("Disks: " + "; ".join(sorted(outcome, key=_disk_order)))


def _disk_order(text: str) -> int:
    return int(text.split()[0].split("/", 1)[1])


def _image(idx: int, disk: exportconf.ExportDisk, files: dict[str, int] | None,
           node: str) -> str | None:
    """The dump to copy into the disk; None: none (or not there), the disk stays blank.

    A dump named but not there leaves the disk blank as in Ganeti, unless the
    export recorded its checksum (one of ours): then the export is damaged.
    Without the node's file list (an older node) every named dump counts as there.
    """
    if disk.dump is None:
        return None
    if files is not None and disk.dump not in files:
        if disk.checksum:
            raise errors.OpPrereqError(
                f"disk/{idx}: the export on {node} records a checksum for its dump"
                f" {disk.dump}, which is missing (the export is damaged)", errors.ECODE_NOENT)
        return None
    return disk.dump


def _source_node_name(lu: LogicalUnit, source: str) -> str:
    """[export] source as a node name: ours write the name, Ganeti 3.0 the node's UUID."""
    if not source:
        return ""
    node = lu.cfg.get_node_info(source) or lu.cfg.get_node_info_by_name(source)
    return str(node.name) if node is not None else source


# OpInstanceCreate mode -> its import strategy ("create" has none)
IMPORT_MODES: dict[str, type[ImportMode]] = {
    constants.INSTANCE_IMPORT: LocalImport,
    constants.INSTANCE_REMOTE_IMPORT: RemoteImport,
}
