"""What logical units share: configuration, locks, RPC runner and paths.

A plain holder, built by the composition root (:mod:`ganeti.server.masterd`);
it knows nothing about the processor, the queries or the LUs.  Adding or
removing a node or instance goes through here so that the config and the
lock manager never disagree about which names exist.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ganeti import locking, pathutils
from ganeti.config import ConfigStore
from ganeti.config_distribution import ConfigDistributor

if TYPE_CHECKING:
    from ganeti.objects import Instance, Node
    from ganeti.rpc.client import RpcRunner

LOG = logging.getLogger(__name__)

# distribute_files waits at most this long (an upload's connect timeout, and then some)
DISTRIBUTE_TIMEOUT = 60.0


class MasterContext:
    def __init__(self, paths: pathutils.Paths, cfg: ConfigStore, rpc: RpcRunner) -> None:
        self.paths = paths
        self.cfg = cfg
        snap = cfg.snapshot()
        self.glm = locking.GanetiLockManager(
            nodes=[n.name for n in snap.get_all_nodes_info().values()],
            nodegroups=[g.name for g in snap.get_all_nodegroups_info().values()],
            instances=[i.name for i in snap.get_all_instances_info().values()],
            networks=[],
        )
        self.rpc = rpc
        # candidates get the journal's records (deltas) while the store keeps them;
        # a whole file is followed by the records after its serial
        self.distribution = ConfigDistributor(rpc, cfg.path, paths.cluster_ca_file,
                                              cfg.get_serial(),
                                              candidates=self._candidate_names,
                                              records_since=cfg.records_since)

    # --- configuration distribution ------------------------------------------------

    def _candidate_names(self) -> list[str]:
        master = self.cfg.get_master_node()
        return sorted(n.name for n in self.cfg.snapshot().get_all_nodes_info().values()
                      if n.master_candidate and not n.offline and n.uuid != master)

    def on_config_written(self, _data: dict[str, Any], serial: int) -> None:
        """Config write listener: the candidates follow in the background.

        Never waits for a node (a down candidate must not slow a commit);
        ``distribute_files`` is the way to wait.
        """
        self.distribution.config_written(serial)

    def start_distribution(self) -> None:
        """Ship the current file to every candidate (what they hold is unknown)."""
        self.distribution.set_candidates()

    def stop_distribution(self) -> None:
        missed = self.distribution.stop()
        for node, reason in sorted(missed.items()):
            LOG.warning("Master candidate %s may not have the newest configuration: %s",
                        node, reason)

    def distribute_files(self, node_names: list[str], with_ca: bool = True,
                         timeout: float = DISTRIBUTE_TIMEOUT) -> dict[str, str]:
        """Wait until ``node_names`` hold the configuration (and the CA certificate).

        For LUs that need the files on a node before they go on (node add).
        Returns the nodes that did not get them, with the reason (also logged).
        """
        master = self.cfg.get_master_node_name()
        targets = [n for n in node_names if n != master]
        if not targets:
            return {}
        missed = self.distribution.flush(targets, timeout, with_ca=with_ca)
        for node, reason in sorted(missed.items()):
            LOG.warning("Copying the configuration to node %s failed: %s", node, reason)
        return missed

    # --- keeping config and locks in step --------------------------------------------

    def add_node(self, node: Node) -> None:
        self.cfg.add_node(node)
        self.glm.add(locking.LEVEL_NODE, [node.name])
        self.glm.add(locking.LEVEL_NODE_RES, [node.name])

    def remove_node(self, node: Node) -> None:
        self.cfg.remove_node(node.uuid)
        # the LU holds the node's locks exclusively; removing deletes them
        self.glm.remove(locking.LEVEL_NODE, [node.name])
        self.glm.remove(locking.LEVEL_NODE_RES, [node.name])

    def add_instance(self, instance: Instance) -> None:
        """Store a new instance; its lock normally exists already (LU add_locks)."""
        self.cfg.add_instance(instance)
        if not self.glm.exists(locking.LEVEL_INSTANCE, instance.name):
            self.glm.add(locking.LEVEL_INSTANCE, [instance.name])

    def remove_instance(self, instance: Instance) -> None:
        self.cfg.remove_instance(instance.uuid)
        self.glm.remove(locking.LEVEL_INSTANCE, [instance.name])
