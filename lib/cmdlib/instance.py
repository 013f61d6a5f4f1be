"""Instance logical units: create, remove, start, stop, reboot, modify.

Every LU locks the instance and only the nodes it touches.  Node-side work
goes through the RPC calls of ``ganeti.backend.instance``; the admin state
("up"/"down") is kept in the configuration, the operational state comes live
from the primary node.
"""

from __future__ import annotations

from typing import Any

from ganeti import constants, errors, limits, locking, opcodes
from ganeti.cmdlib import iallocator, name_check
from ganeti.cmdlib import instance_utils as iu
from ganeti.cmdlib.backup_import import IMPORT_MODES
from ganeti.cmdlib.base import LOCKS_REPLACE, FeedbackFn, LogicalUnit
from ganeti.hooks.instance_env import filled_beparams
from ganeti.hypervisor.base import check_instance_name
from ganeti.objects import NIC, Disk, Instance, Node


def _lock_instance_and_nodes(lu: LogicalUnit, node_res: bool = False,
                             shared_nodes: bool = False) -> None:
    """ExpandNames part: the instance, plus its nodes computed in DeclareLocks."""
    lu.expand_and_lock_instance()
    assert lu.needed_locks is not None
    lu.needed_locks[locking.LEVEL_NODE] = []
    lu.recalculate_locks[locking.LEVEL_NODE] = LOCKS_REPLACE
    lu.share_locks[locking.LEVEL_NODE] = shared_nodes
    if node_res:
        lu.needed_locks[locking.LEVEL_NODE_RES] = []
        lu.recalculate_locks[locking.LEVEL_NODE_RES] = LOCKS_REPLACE


def _declare_instance_node_locks(lu: LogicalUnit, level: int) -> None:
    if level in (locking.LEVEL_NODE, locking.LEVEL_NODE_RES) and level in lu.recalculate_locks:
        lu.lock_instances_nodes(level)


def _get_instance(lu: LogicalUnit, name: str) -> Instance:
    inst = lu.cfg.get_instance_info_by_name(name)
    if inst is None:
        raise errors.OpPrereqError(f"Instance '{name}' not known", errors.ECODE_NOENT)
    return inst


def _check_node_online(lu: LogicalUnit, node_uuid: str, what: str = "") -> Node:
    node = lu.cfg.get_node_info(node_uuid)
    if node is None:
        raise errors.OpPrereqError(f"Node {node_uuid} not known", errors.ECODE_NOENT)
    if node.offline:
        raise errors.OpPrereqError(f"Node {node.name} is offline{what}", errors.ECODE_STATE)
    return node


class InstanceLU(LogicalUnit):
    """An LU acting on one existing instance: locks it and its nodes, hooks on them.

    Subclasses choose whether node locks are shared and whether node-res
    locks are taken too.
    """

    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    SHARED_NODES: bool = True
    NODE_RES: bool = False
    instance: Instance

    def ExpandNames(self) -> None:
        _lock_instance_and_nodes(self, node_res=self.NODE_RES,
                                 shared_nodes=self.SHARED_NODES)

    def DeclareLocks(self, level: int) -> None:
        _declare_instance_node_locks(self, level)

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        nodes = iu.instance_hook_nodes(self.cfg, self.instance)
        return nodes, nodes

    def _check_primary_offline(self, inst: Instance) -> bool:
        """Whether the primary is offline; refused unless the op ignores offline nodes."""
        node = self.cfg.get_node_info(inst.primary_node)
        offline = node is not None and node.offline
        if offline and not getattr(self.op, "ignore_offline_nodes", False):
            raise errors.OpPrereqError(
                f"Primary node {node.name if node else inst.primary_node} of instance"
                f" {inst.name} is offline", errors.ECODE_STATE)
        return offline


class LUInstanceCreate(LogicalUnit):
    """Create an instance: disks on the primary, config entry, then start it.

    Import modes plug in through ``_check_import_arguments``,
    ``_expand_import_names``, ``_check_import_prereq`` and ``fill_disks``.
    """

    HPATH = "instance-add"
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    op: opcodes.OpInstanceCreate

    def CheckArguments(self) -> None:
        op = self.op
        try:
            check_instance_name(op.instance_name)
        except errors.HypervisorError as err:
            raise errors.OpPrereqError(str(err.args[0]), errors.ECODE_INVAL) from None
        if op.ip_check and not op.name_check:
            raise errors.OpPrereqError("Cannot do the IP check (ip_check) without the name"
                                       " check (name_check)", errors.ECODE_INVAL)
        if op.iallocator and op.pnode:
            raise errors.OpPrereqError("Give either a primary node (pnode) or an allocator"
                                       " (iallocator), not both", errors.ECODE_INVAL)
        if op.no_nics and op.nics:
            raise errors.OpPrereqError("no_nics with NICs given (nics): use one of the two",
                                       errors.ECODE_INVAL)
        if op.mode != constants.INSTANCE_CREATE:
            self._check_import_arguments()
        if op.os_type is not None:
            limits.check_os_name(op.os_type)
        if op.disk_template not in constants.DISK_TEMPLATES:
            raise errors.OpPrereqError(
                f"Invalid disk template '{op.disk_template}' (known:"
                f" {', '.join(sorted(constants.DISK_TEMPLATES))})", errors.ECODE_INVAL)
        # each spec is checked by the opcode's DiskSpec/NicSpec models; import fills them
        self.disk_specs = list(op.disks)
        if op.disk_template == constants.DT_DISKLESS and self.disk_specs:
            raise errors.OpPrereqError("Diskless instances cannot have disks",
                                       errors.ECODE_INVAL)
        if op.disk_template != constants.DT_DISKLESS and not self.disk_specs \
                and op.mode == constants.INSTANCE_CREATE:
            raise errors.OpPrereqError(
                f"Disk template {op.disk_template} needs at least one disk", errors.ECODE_INVAL)
        self.nic_specs = list(op.nics)
        self.beparams = iu.check_beparams(op.beparams)
        if op.hypervisor is not None and op.hypervisor not in constants.HYPER_TYPES:
            raise errors.OpPrereqError(f"Unknown hypervisor '{op.hypervisor}'",
                                       errors.ECODE_INVAL)
        if op.snode is not None:
            raise errors.OpPrereqError(
                f"Disk template {op.disk_template} does not use a secondary node",
                errors.ECODE_INVAL)

    def _check_import_arguments(self) -> None:
        self.import_mode = IMPORT_MODES[self.op.mode](self, self.op)
        self.import_mode.check_arguments()

    def ExpandNames(self) -> None:
        if self.cfg.get_instance_info_by_name(self.op.instance_name) is not None:
            raise errors.OpPrereqError(f"Instance '{self.op.instance_name}' is already in"
                                       " the cluster", errors.ECODE_EXISTS)
        # before any lock is waited for: the MAC index answers in O(1)
        self._check_macs_unused([spec.mac for spec in self.nic_specs if spec.mac])
        if self.op.name_check:
            name_check.check(self.op.instance_name, self.op.ip_check,
                             self.cfg.get_cluster_info().noded_port)
        if self.op.iallocator:
            # the allocator needs the disk sizes (an import reads them in CheckPrereq):
            # every node is locked until it has chosen, then the others are released
            if self.op.mode != constants.INSTANCE_CREATE:
                self._expand_import_names()
            self.needed_locks = {locking.LEVEL_NODE: locking.ALL_SET,
                                 locking.LEVEL_NODE_RES: locking.ALL_SET}
            self.add_locks[locking.LEVEL_INSTANCE] = [self.op.instance_name]
            return
        if self.op.pnode:
            self.op.pnode = self.expand_node_name(self.op.pnode)
        else:
            self.op.pnode = self._choose_node()
        nodes = [self.op.pnode]
        if self.op.mode != constants.INSTANCE_CREATE:
            nodes.extend(self._expand_import_names())
        self.needed_locks = {locking.LEVEL_NODE: sorted(set(nodes)),
                             locking.LEVEL_NODE_RES: [self.op.pnode]}
        # the new name is locked before any node lock (the processor adds it)
        self.add_locks[locking.LEVEL_INSTANCE] = [self.op.instance_name]

    def _check_macs_unused(self, macs: list[str]) -> None:
        """Refuse MACs another instance's NIC has (the store's index, no copies)."""
        used = iu.used_macs(self.cfg)
        for mac in macs:
            if mac in used:
                raise errors.OpPrereqError(f"MAC address {mac} is already in use",
                                           errors.ECODE_NOTUNIQUE)

    def _expand_import_names(self) -> list[str]:
        """Extra node names an import needs locked: the source node."""
        return self.import_mode.source_nodes()

    def _choose_node(self) -> str:
        """The usable node with the fewest primary instances (ties: by name)."""
        snap = self.cfg.snapshot()
        counts = iallocator.primary_counts(snap)
        usable = [n for n in snap.get_all_nodes_info().values()
                  if not n.offline and not n.drained and n.vm_capable]
        if not usable:
            raise errors.OpPrereqError("No online, non-drained, vm-capable node available",
                                       errors.ECODE_NORES)
        best = min(usable, key=lambda n: (counts.get(n.uuid, 0), n.name))
        return str(best.name)

    def CheckPrereq(self) -> None:
        op = self.op
        cluster = self.cfg.get_cluster_info()
        if self.cfg.get_instance_info_by_name(op.instance_name) is not None:
            raise errors.OpPrereqError(f"Instance '{op.instance_name}' is already in the"
                                       " cluster", errors.ECODE_EXISTS)
        if op.mode != constants.INSTANCE_CREATE:
            self._check_import_prereq()
            # what the export supplied passes the same limits as the opcode
            if op.os_type:
                limits.check_os_name(op.os_type)
            limits.check_tags(op.tags)
        if op.disk_template not in cluster.enabled_disk_templates \
                and op.disk_template != constants.DT_DISKLESS:
            raise errors.OpPrereqError(
                f"Disk template {op.disk_template} is not enabled in this cluster (enabled:"
                f" {', '.join(cluster.enabled_disk_templates) or 'none'})", errors.ECODE_STATE)
        hv_name = op.hypervisor or (cluster.enabled_hypervisors or [constants.HT_PROCESS])[0]
        if hv_name not in cluster.enabled_hypervisors:
            raise errors.OpPrereqError(
                f"Hypervisor {hv_name} is not enabled in this cluster (enabled:"
                f" {', '.join(cluster.enabled_hypervisors) or 'none'})", errors.ECODE_STATE)
        iu.check_hvparams(hv_name, cluster, op.hvparams)
        if op.iallocator:
            op.pnode = self._allocate(cluster)
        assert op.pnode is not None
        pnode = self.cfg.get_node_info_by_name(op.pnode)
        if pnode is None:
            raise errors.OpPrereqError(f"Node '{op.pnode}' not known", errors.ECODE_NOENT)
        if pnode.offline:
            raise errors.OpPrereqError(f"Cannot use offline primary node {pnode.name}",
                                       errors.ECODE_STATE)
        if pnode.drained:
            raise errors.OpPrereqError(f"Cannot use drained primary node {pnode.name}",
                                       errors.ECODE_STATE)
        if not pnode.vm_capable:
            raise errors.OpPrereqError(f"Node {pnode.name} is not vm-capable",
                                       errors.ECODE_STATE)
        self.pnode = pnode
        self.instance = self._build_instance(hv_name)
        iu.check_filled_beparams(cluster, self.instance)
        # a dry run answers what a real one would (Ganeti: the nodes chosen)
        self.dry_run_result = [pnode.name]

    def _allocate(self, cluster: Any) -> str:
        """The allocator's primary node; the node locks it did not choose are released."""
        filled = {**cluster.beparams, **self.beparams}
        disk = 0 if self.op.disk_template == constants.DT_DISKLESS else \
            sum(spec.size for spec in self.disk_specs)
        rooms, refused = iallocator.node_rooms(self.cfg, self.rpc)
        chosen = iallocator.allocate(iallocator.Request(int(filled.get("maxmem") or 0), disk),
                                     rooms, refused)
        self.LogInfo("Allocator %s chose %s as the primary node", iallocator.HAIL, chosen)
        # an import keeps its source node (set by the import mode in ExpandNames)
        keep = {chosen, *([self.op.src_node] if self.op.mode == constants.INSTANCE_IMPORT
                          and self.op.src_node else [])}
        for level, wanted in ((locking.LEVEL_NODE, keep), (locking.LEVEL_NODE_RES, {chosen})):
            others = sorted(self.owned_locks(level) - wanted)
            if others:
                self.glm.release(level, others)
        return chosen

    def _check_import_prereq(self) -> None:
        """Read the export and default disks, NICs and parameters from it."""
        self.import_mode.check_prereq(self)

    def _build_instance(self, hv_name: str) -> Instance:
        op = self.op
        # the store's MACs plus this instance's, without copying the store's set
        macs = iu.MacsInUse(iu.used_macs(self.cfg))
        nics = []
        for spec in self.nic_specs:
            mac = spec.mac or iu.generate_mac(macs)
            if spec.mac and mac in macs:
                raise errors.OpPrereqError(f"MAC address {mac} is already in use",
                                           errors.ECODE_NOTUNIQUE)
            macs.mine.add(mac)
            params = spec.model_dump(include={"mode", "link", "vlan"}, exclude_none=True)
            nics.append(NIC(mac=mac, ip=spec.ip, name=spec.name, network=spec.network,
                            nicparams=params))
        disks = [Disk.from_dict({**spec.model_dump(), "dev_type": op.disk_template,
                                 "iv_name": f"disk/{idx}"})
                 for idx, spec in enumerate(self.disk_specs)]
        return Instance(name=op.instance_name, primary_node=self.pnode.uuid,
                        os=op.os_type or "", hypervisor=hv_name, hvparams=dict(op.hvparams),
                        beparams=self.beparams, osparams=dict(op.osparams),
                        osparams_private=dict(op.osparams_private),
                        admin_state=constants.ADMINST_DOWN, disk_template=op.disk_template,
                        disks=disks, nics=nics, tags=sorted(set(op.tags)))

    def BuildHooksEnv(self) -> dict[str, Any]:
        env: dict[str, Any] = {"ADD_MODE": self.op.mode}
        if self.op.mode != constants.INSTANCE_CREATE:
            env.update(self.import_mode.hook_env())
        env.update(iu.new_instance_hook_env(self.cfg, self.instance, self.op.start))
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        nodes = iu.instance_hook_nodes(self.cfg, self.instance)
        return nodes, nodes

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        inst = self.instance
        if inst.disks:
            feedback_fn(f"* creating {len(inst.disks)} disk(s) on {self.pnode.name}")
            iu.create_disks(self, inst)
        try:
            self.fill_disks(feedback_fn)
            # another job may have taken one of them since CheckPrereq (no lock covers
            # MACs): checked again just before the commit, against the index
            self._check_macs_unused([nic.mac for nic in inst.nics])
            self.context.add_instance(inst)
        except BaseException:
            iu.remove_disks(self, inst, warn=self.LogWarning)
            raise
        feedback_fn(f"Instance {inst.name} added to the configuration")
        if self.op.start:
            feedback_fn("* starting instance...")
            try:
                iu.start_instance(self, inst)
            except errors.OpExecError as err:
                raise errors.OpExecError(
                    f"Instance {inst.name} was created but could not be started:"
                    f" {err.args[0]}") from None
            self.cfg.set_instance_admin_state(inst.uuid, constants.ADMINST_UP)
            inst.admin_state = constants.ADMINST_UP
        return [self.pnode.name]

    def fill_disks(self, feedback_fn: FeedbackFn) -> None:
        """Put data on the new (empty) disks; imports do their copy here."""
        if self.op.mode != constants.INSTANCE_CREATE:
            self.import_mode.fill_disks(self.instance, self.pnode, feedback_fn)


class LUInstanceRemove(InstanceLU):
    HPATH = "instance-remove"
    SHARED_NODES = False
    NODE_RES = True
    op: opcodes.OpInstanceRemove

    def CheckPrereq(self) -> None:
        self.instance = _get_instance(self, self.op.instance_name)

    def BuildHooksEnv(self) -> dict[str, Any]:
        return iu.instance_hook_env(self.cfg, self.instance,
                                    {"SHUTDOWN_TIMEOUT": self.op.shutdown_timeout})

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        nodes = iu.instance_hook_nodes(self.cfg, self.instance)
        return [nodes[0]], nodes

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        inst = self.instance
        feedback_fn(f"Shutting down instance {inst.name}")
        problem = iu.shutdown_instance(self, inst, self.op.shutdown_timeout)
        if problem:
            if not self.op.ignore_failures:
                raise errors.OpExecError(problem)
            self.LogWarning(problem)
        feedback_fn(f"Removing disks of instance {inst.name}")
        failures = iu.remove_disks(self, inst, warn=self.LogWarning)
        if failures and not self.op.ignore_failures:
            raise errors.OpExecError(f"Could not remove the disks of instance {inst.name}:"
                                     f" {'; '.join(failures)}")
        self.context.remove_instance(inst)
        feedback_fn(f"Instance {inst.name} removed")
        return None


class LUInstanceStartup(InstanceLU):
    HPATH = "instance-start"
    op: opcodes.OpInstanceStartup

    def CheckArguments(self) -> None:
        self.beparams = iu.check_beparams(self.op.beparams)

    def CheckPrereq(self) -> None:
        self.instance = inst = _get_instance(self, self.op.instance_name)
        cluster = self.cfg.get_cluster_info()
        if self.op.hvparams:
            iu.check_hvparams(inst.hypervisor, cluster,
                              {**inst.hvparams, **self.op.hvparams})
        if inst.admin_state == constants.ADMINST_OFFLINE:
            raise errors.OpPrereqError(f"Instance {inst.name} is marked offline",
                                       errors.ECODE_STATE)
        self.primary_offline = self._check_primary_offline(inst)

    def BuildHooksEnv(self) -> dict[str, Any]:
        return iu.instance_hook_env(self.cfg, self.instance, {"FORCE": self.op.force})

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        inst = self.instance
        if self.primary_offline:
            self.LogWarning("Primary node offline, only marking the instance as started")
        elif iu.instance_running(self, inst):
            feedback_fn(f"Instance {inst.name} is already running")
        else:
            iu.start_instance(self, inst, self.beparams, self.op.hvparams,
                              self.op.startup_paused)
        if not self.op.no_remember:
            self.cfg.set_instance_admin_state(inst.uuid, constants.ADMINST_UP)
        return None


class LUInstanceShutdown(InstanceLU):
    HPATH = "instance-stop"
    op: opcodes.OpInstanceShutdown

    def CheckPrereq(self) -> None:
        self.instance = inst = _get_instance(self, self.op.instance_name)
        self.primary_offline = self._check_primary_offline(inst)

    def BuildHooksEnv(self) -> dict[str, Any]:
        return iu.instance_hook_env(self.cfg, self.instance, {"TIMEOUT": self.op.timeout})

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        inst = self.instance
        if not self.op.no_remember:
            self.cfg.set_instance_admin_state(inst.uuid, constants.ADMINST_DOWN)
        if self.primary_offline:
            self.LogWarning("Primary node offline, only marking the instance as stopped")
            return None
        problem = iu.shutdown_instance(self, inst, self.op.timeout)
        if problem:
            if not self.op.force:
                raise errors.OpExecError(problem)
            self.LogWarning(problem)
        return None


class LUInstanceReboot(InstanceLU):
    HPATH = "instance-reboot"
    op: opcodes.OpInstanceReboot

    def CheckPrereq(self) -> None:
        self.instance = inst = _get_instance(self, self.op.instance_name)
        if inst.admin_state != constants.ADMINST_UP:
            raise errors.OpPrereqError(
                f"Instance {inst.name} is administratively down; start it instead",
                errors.ECODE_STATE)
        _check_node_online(self, inst.primary_node, f", cannot reboot {inst.name}")

    def BuildHooksEnv(self) -> dict[str, Any]:
        return iu.instance_hook_env(self.cfg, self.instance, {
            "REBOOT_TYPE": self.op.reboot_type,
            "SHUTDOWN_TIMEOUT": self.op.shutdown_timeout,
            "IGNORE_SECONDARIES": self.op.ignore_secondaries})

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        inst = self.instance
        pnode = iu.node_name(self.cfg, inst.primary_node)
        result = self.rpc.call_instance_reboot(pnode, iu.filled_instance(self.cfg, inst),
                                               self.op.reboot_type, self.op.shutdown_timeout)
        result.raise_on_failure(f"Could not reboot instance {inst.name}")
        return None


class LUInstanceSetParams(InstanceLU):
    """Change backend/hypervisor/OS parameters; they apply at the next start."""

    HPATH = "instance-modify"
    op: opcodes.OpInstanceSetParams

    def CheckArguments(self) -> None:
        if not (self.op.beparams or self.op.hvparams or self.op.osparams):
            raise errors.OpPrereqError("No changes submitted", errors.ECODE_INVAL)
        self.beparams = iu.check_beparams(self.op.beparams, allow_default=True)

    def ExpandNames(self) -> None:
        self.expand_and_lock_instance()

    def DeclareLocks(self, level: int) -> None:
        """Only the instance lock: parameter changes apply at the next start."""

    def CheckPrereq(self) -> None:
        self.instance = inst = _get_instance(self, self.op.instance_name)
        cluster = self.cfg.get_cluster_info()
        self.new_hvparams = _apply_changes(inst.hvparams, self.op.hvparams)
        self.new_beparams = _apply_changes(inst.beparams, self.beparams)
        self.new_osparams = _apply_changes(inst.osparams, self.op.osparams)
        iu.check_hvparams(inst.hypervisor, cluster, self.new_hvparams)
        check = inst.model_copy(deep=True)
        check.beparams = self.new_beparams
        iu.check_filled_beparams(cluster, check)
        self.new_beparams = check.beparams

    def BuildHooksEnv(self) -> dict[str, Any]:
        # as in Ganeti: memory and CPUs show the new values, BE_* the current ones
        be_new = filled_beparams(self.cfg.get_cluster_info(), self.new_beparams)
        return iu.instance_hook_env(self.cfg, self.instance, {
            "INSTANCE_MINMEM": be_new["minmem"], "INSTANCE_MAXMEM": be_new["maxmem"],
            "INSTANCE_MEMORY": be_new["maxmem"], "INSTANCE_VCPUS": be_new["vcpus"]})

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        inst = self.instance
        changes: list[tuple[str, Any]] = []
        for prefix, old, new in (("be", inst.beparams, self.new_beparams),
                                 ("hv", inst.hvparams, self.new_hvparams),
                                 ("os", inst.osparams, self.new_osparams)):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    changes.append((f"{prefix}/{key}", new.get(key, "default")))
        inst.beparams = self.new_beparams
        inst.hvparams = self.new_hvparams
        inst.osparams = self.new_osparams
        self.cfg.update(inst)
        if changes and inst.admin_state == constants.ADMINST_UP:
            feedback_fn("Changes take effect at the next start of the instance")
        return changes


def _apply_changes(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Values "default" (or None) drop the instance's own value."""
    result = dict(current)
    for key, value in changes.items():
        if value is None or value == "default":
            result.pop(key, None)
        else:
            result[key] = value
    return result
