"""The master's shared state: configuration, locks, RPC and the processor.

Adding or removing a node or instance goes through here so that the config
and the lock manager never disagree about which names exist.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ganeti import (
    locking,
    pathutils,
    query_resources,  # noqa: F401 - registers the node query resource
)
from ganeti.config import ConfigStore

if TYPE_CHECKING:
    from ganeti.cmdlib.base import LogicalUnit
    from ganeti.hooks.master import HooksMaster
    from ganeti.mcpu import Processor
    from ganeti.objects import Instance, Node
    from ganeti.rpc.client import RpcRunner

LOG = logging.getLogger(__name__)


class MasterContext:
    def __init__(self, paths: pathutils.Paths, cfg: ConfigStore, rpc: RpcRunner,
                 lock_timeouts: Sequence[float] | None = None) -> None:
        from ganeti.mcpu import Processor

        self.paths = paths
        self.cfg = cfg
        self.glm = locking.GanetiLockManager(
            nodes=[n.name for n in cfg.get_all_nodes_info().values()],
            nodegroups=[g.name for g in cfg.get_all_nodegroups_info().values()],
            instances=[i.name for i in cfg.get_all_instances_info().values()],
            networks=[],
        )
        self.rpc = rpc
        self._distribution_lock = threading.Lock()
        self.processor: Processor = Processor(self, lock_timeouts)

    @classmethod
    def from_paths(cls, paths: pathutils.Paths) -> MasterContext:
        cfg = ConfigStore(paths.cluster_conf_file)
        context = cls(paths, cfg, rpc=_make_rpc_runner(paths, cfg))
        cfg.add_write_listener(context._on_config_written)
        return context

    # --- configuration distribution ------------------------------------------------

    def _candidate_names(self) -> list[str]:
        master = self.cfg.get_master_node()
        return sorted(n.name for n in self.cfg.get_all_nodes_info().values()
                      if n.master_candidate and not n.offline and n.uuid != master)

    def _on_config_written(self, _data: dict[str, Any], _serial: int) -> None:
        self.distribute_files(self._candidate_names(), with_ca=False)

    def distribute_files(self, node_names: list[str], with_ca: bool = True) -> None:
        """Copy the configuration (and the CA certificate) to ``node_names``.

        Uploads are serialised and always send the file as it is now, so the
        last upload a node gets is the newest configuration.
        """
        if self.rpc is None:
            return
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

    # --- hooks ---------------------------------------------------------------------

    def build_hooks_master(self, lu: LogicalUnit) -> HooksMaster | None:
        if lu.HPATH is None or self.rpc is None:
            return None
        from ganeti.hooks.master import HooksMaster

        return HooksMaster.build_from_lu(
            lu, self.rpc.call_hooks_runner,
            cluster_name=self.cfg.get_cluster_info().cluster_name,
            master_name=self.cfg.get_master_node_name(),
            data_dir=str(self.paths.data_dir),
            log_warning=lu.LogWarning,
        )

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


def _make_rpc_runner(paths: pathutils.Paths, cfg: ConfigStore) -> RpcRunner:
    """The RPC runner, resolving node names through the live config."""
    from ganeti import crypto
    from ganeti.rpc.client import RpcRunner

    def resolve(name: str) -> tuple[str, int, bool]:
        node = cfg.get_node_info_by_name(name)
        if node is None:
            raise KeyError(name)
        port = node.port or cfg.get_cluster_info().noded_port
        return node.primary_ip or name, port, node.offline

    def ssl_context() -> Any:
        return crypto.client_ssl_context(paths.node_cert_file, paths.cluster_ca_file)

    return RpcRunner(resolve, ssl_context, paths=paths)
