"""Node logical units: add, remove, modify, query."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from ganeti import constants, errors, locking, opcodes
from ganeti.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti.hooks.master import run_post_hook
from ganeti.objects import Node


def _check_ip(value: str, field: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise errors.OpPrereqError(f"Invalid {field} '{value}': not an IP address",
                                   errors.ECODE_INVAL) from None


class LUNodeAdd(LogicalUnit):
    """Add a node whose daemon runs with the cluster's certificates.

    When ``ssh_user`` is given, the node's certificate is first installed and
    its daemon started over SSH (``ganeti.ssh_setup``).
    """

    HPATH = "node-add"
    HTYPE = constants.HTYPE_NODE
    REQ_BGL = True
    op: opcodes.OpNodeAdd

    def CheckArguments(self) -> None:
        if self.op.primary_ip is not None:
            self.op.primary_ip = _check_ip(self.op.primary_ip, "primary_ip")
        if self.op.secondary_ip is not None:
            self.op.secondary_ip = _check_ip(self.op.secondary_ip, "secondary_ip")

    def ExpandNames(self) -> None:
        # the BGL, held exclusively, is enough: nobody else holds node locks
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        existing = self.cfg.get_node_info_by_name(self.op.node_name)
        if existing is not None and not self.op.readd:
            raise errors.OpPrereqError(f"Node {self.op.node_name} is already in the cluster",
                                       errors.ECODE_EXISTS)
        if existing is None and self.op.readd:
            raise errors.OpPrereqError(f"Node {self.op.node_name} is not in the cluster,"
                                       " cannot re-add it", errors.ECODE_NOENT)
        if self.op.primary_ip is None:
            try:
                self.op.primary_ip = socket.gethostbyname(self.op.node_name)
            except OSError as err:
                raise errors.OpPrereqError(
                    f"Cannot resolve node name {self.op.node_name}: {err}; give"
                    f" {errors.field_ref('primary_ip')}",
                    errors.ECODE_RESOLVER) from None
        for node in self.cfg.snapshot().get_all_nodes_info().values():
            if node.name == self.op.node_name:
                continue
            port = node.port or self.cfg.get_cluster_info().noded_port
            if node.primary_ip == self.op.primary_ip and port == self._port():
                raise errors.OpPrereqError(
                    f"Address {self.op.primary_ip}:{port} is already used by node {node.name}",
                    errors.ECODE_NOTUNIQUE)
        self.existing = existing

    def _port(self) -> int:
        return self.op.port or self.cfg.get_cluster_info().noded_port

    def BuildHooksEnv(self) -> dict[str, Any]:
        # as Ganeti: a single-homed node's secondary IP is its primary IP; unset
        # capabilities are what the node gets (a re-added node keeps its own)
        old = self.existing
        master_capable = self.op.master_capable
        vm_capable = self.op.vm_capable
        if master_capable is None:
            master_capable = old.master_capable if old is not None else True
        if vm_capable is None:
            vm_capable = old.vm_capable if old is not None else True
        return {"OP_TARGET": self.op.node_name, "NODE_NAME": self.op.node_name,
                "NODE_PIP": self.op.primary_ip,
                "NODE_SIP": self.op.secondary_ip or self.op.primary_ip,
                "MASTER_CAPABLE": str(master_capable), "VM_CAPABLE": str(vm_capable)}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Every node already in the cluster; after the add, the new node too."""
        master = self.cfg.get_master_node_name()
        others = sorted(n.name for n in self.cfg.snapshot().get_all_nodes_info().values()
                        if n.name not in (master, self.op.node_name))
        nodes = [master, *others]
        return nodes, [*nodes, self.op.node_name]

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        from ganeti import node_join

        assert self.op.primary_ip is not None
        port = self._port()
        if self.op.ssh_user:
            node_join.install_over_ssh(self.context.paths, self.op.node_name,
                                       self.op.primary_ip, port, self.op.ssh_user,
                                       self.op.ssh_port or 22, feedback_fn)
        version = node_join.check_node_daemon(self.context.paths, self.op.node_name,
                                              self.op.primary_ip, port)
        feedback_fn(f"Node {self.op.node_name} answers (protocol version {version})")
        candidates = len(self.cfg.get_master_candidates())
        master_capable = True if self.op.master_capable is None else self.op.master_capable
        if self.existing is not None:
            node = self.existing
            node.primary_ip = self.op.primary_ip
            node.port = self.op.port
            node.offline = False
            node.drained = False
            self.cfg.update(node)
        else:
            node = Node(name=self.op.node_name, primary_ip=self.op.primary_ip,
                        secondary_ip=self.op.secondary_ip, port=self.op.port,
                        master_capable=master_capable,
                        vm_capable=True if self.op.vm_capable is None else self.op.vm_capable,
                        master_candidate=(master_capable
                                          and candidates < constants.CANDIDATE_POOL_SIZE),
                        ndparams=self.op.ndparams or {})
            self.context.add_node(node)
        # the CA certificate and the configuration go to the new node
        self.context.distribute_files([node.name])
        return node.name


class LUNodeRemove(LogicalUnit):
    HPATH = "node-remove"
    HTYPE = constants.HTYPE_NODE
    REQ_BGL = True
    op: opcodes.OpNodeRemove

    def ExpandNames(self) -> None:
        self.op.node_name = self.expand_node_name(self.op.node_name)
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        node = self.cfg.get_node_info_by_name(self.op.node_name)
        assert node is not None
        if node.uuid == self.cfg.get_master_node():
            raise errors.OpPrereqError(
                f"Node {node.name} is the master node; it cannot be removed",
                errors.ECODE_INVAL)
        instances = self.cfg.get_node_instances(node.uuid)
        if instances:
            names = [i.name for u in instances if (i := self.cfg.get_instance_info(u))]
            raise errors.OpPrereqError(
                f"Node {node.name} still hosts instance(s) {', '.join(names)}",
                errors.ECODE_STATE)
        self.node = node

    def BuildHooksEnv(self) -> dict[str, Any]:
        return {"OP_TARGET": self.op.node_name, "NODE_NAME": self.op.node_name}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        master = self.cfg.get_master_node_name()
        others = sorted(n.name for n in self.cfg.snapshot().get_all_nodes_info().values()
                        if n.name != self.op.node_name)
        return [master, *[n for n in others if n != master]], others

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        # as in Ganeti, the leaving node runs the post hooks now, not after the removal
        run_post_hook(self, self.node.name)
        self.context.remove_node(self.node)
        feedback_fn(f"Node {self.node.name} removed from the cluster")
        return True


class LUNodeSetParams(LogicalUnit):
    HPATH = "node-modify"
    HTYPE = constants.HTYPE_NODE
    REQ_BGL = False
    op: opcodes.OpNodeSetParams

    def CheckArguments(self) -> None:
        flags = [self.op.offline, self.op.drained, self.op.master_candidate]
        if all(f is None for f in flags) and self.op.backup_bwlimit is None:
            raise errors.OpPrereqError("Please pass at least one modification",
                                       errors.ECODE_INVAL)
        if sum(1 for f in flags if f) > 1:
            raise errors.OpPrereqError(
                "Can't set the node into more than one state (offline, drained,"
                " master_candidate) at the same time", errors.ECODE_INVAL)

    def ExpandNames(self) -> None:
        self.op.node_name = self.expand_node_name(self.op.node_name)
        self.needed_locks = {locking.LEVEL_NODE: [self.op.node_name]}
        # a bandwidth limit alone need not wait for the node's running exports
        # (they hold it shared); a concurrent change makes the config refuse ours
        flags = (self.op.offline, self.op.drained, self.op.master_candidate)
        self.share_locks[locking.LEVEL_NODE] = all(f is None for f in flags)

    def CheckPrereq(self) -> None:
        node = self.cfg.get_node_info_by_name(self.op.node_name)
        assert node is not None
        is_master = node.uuid == self.cfg.get_master_node()
        if is_master and (self.op.offline or self.op.drained
                          or self.op.master_candidate is False):
            raise errors.OpPrereqError(
                f"The master node {node.name} cannot be offlined, drained or demoted",
                errors.ECODE_INVAL)
        if self.op.master_candidate and not node.master_capable:
            raise errors.OpPrereqError(f"Node {node.name} is not master capable",
                                       errors.ECODE_STATE)
        self.node = node

    def BuildHooksEnv(self) -> dict[str, Any]:
        # Ganeti's variables (None: unchanged), plus our NODE_NAME and BACKUP_BWLIMIT
        op: Any = self.op
        return {"OP_TARGET": op.node_name, "NODE_NAME": op.node_name,
                "MASTER_CANDIDATE": str(op.master_candidate), "OFFLINE": str(op.offline),
                "DRAINED": str(op.drained),
                "MASTER_CAPABLE": str(getattr(op, "master_capable", None)),
                "VM_CAPABLE": str(getattr(op, "vm_capable", None)),
                "BACKUP_BWLIMIT": str(op.backup_bwlimit)}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        nodes = [self.cfg.get_master_node_name(), self.op.node_name]
        return nodes, nodes

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        node = self.node
        changes: list[tuple[str, Any]] = []
        # entering one state leaves the others (offline nodes are not candidates)
        if self.op.offline is not None:
            node.offline = self.op.offline
            changes.append(("offline", node.offline))
            if node.offline:
                node.master_candidate = node.drained = False
        if self.op.drained is not None:
            node.drained = self.op.drained
            changes.append(("drained", node.drained))
            if node.drained:
                node.master_candidate = node.offline = False
        if self.op.master_candidate is not None:
            node.master_candidate = self.op.master_candidate
            changes.append(("master_candidate", node.master_candidate))
            if node.master_candidate:
                node.offline = node.drained = False
        if self.op.backup_bwlimit is not None:
            node.backup_bwlimit = self.op.backup_bwlimit or None
            changes.append(("backup_bwlimit", node.backup_bwlimit or "none"))
        self.cfg.update(node)
        flags = (self.op.offline, self.op.drained, self.op.master_candidate)
        if node.master_candidate and any(f is not None for f in flags):
            self.context.distribute_files([node.name])
        return changes
