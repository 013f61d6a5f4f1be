"""What logical units share: configuration, locks, RPC runner and paths.

A plain holder, built by the composition root (:mod:`ganeti.server.masterd`);
it knows nothing about the processor, the queries or the LUs.  Adding or
removing a node or instance goes through here so that the config and the
lock manager never disagree about which names exist.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from ganeti import locking, pathutils
from ganeti.config import ConfigStore

if TYPE_CHECKING:
    from ganeti.objects import Instance, Node
    from ganeti.rpc.client import RpcRunner

LOG = logging.getLogger(__name__)


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
        self._distribution_lock = threading.Lock()

    # --- configuration distribution ------------------------------------------------

    def _candidate_names(self) -> list[str]:
        master = self.cfg.get_master_node()
        return sorted(n.name for n in self.cfg.snapshot().get_all_nodes_info().values()
                      if n.master_candidate and not n.offline and n.uuid != master)

    def on_config_written(self, _data: dict[str, Any], _serial: int) -> None:
        """Config write listener: every write reaches the master candidates."""
        self.distribute_files(self._candidate_names(), with_ca=False)

    def distribute_files(self, node_names: list[str], with_ca: bool = True) -> None:
        """Copy the configuration (and the CA certificate) to ``node_names``.

        Uploads are serialised and always send the file as it is now, so the
        last upload a node gets is the newest configuration.
        """
        master = self.cfg.get_master_node_name()
        targets = [n for n in node_names if n != master]
        if not targets:
            return
        files = [self.paths.cluster_conf_file]
        if with_ca:
            files.append(self.paths.cluster_ca_file)
        with self._distribution_lock:
            for path in files:
                results = self.rpc.call_upload_file(targets, str(path))
                for node, res in results.items():
                    if res.fail_msg and not res.offline:
                        LOG.warning("Copying %s to node %s failed: %s", path.name, node,
                                    res.fail_msg)

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
        if instance.name not in self.glm.names(locking.LEVEL_INSTANCE):
            self.glm.add(locking.LEVEL_INSTANCE, [instance.name])

    def remove_instance(self, instance: Instance) -> None:
        self.cfg.remove_instance(instance.uuid)
        self.glm.remove(locking.LEVEL_INSTANCE, [instance.name])
