"""A non-trivial configuration for query tests: several nodes, groups, networks and
instances with disks and NICs (ganeti.query and the query resources, issue 20)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ganeti import constants
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import NIC, Disk, Instance, Network, Node, NodeGroup


def build_store(path: Path, instances: int = 40) -> ConfigStore:
    """A store with 5 nodes (one offline, one drained) in 3 groups, 2 networks and
    ``instances`` instances of varied shapes, written in one go."""
    data = make_initial_config("cluster.example.com", "node1.example.com", "192.0.2.1",
                               "192.0.2.10", port=11811,
                               enabled_hypervisors=[constants.HT_FAKE, constants.HT_PROCESS])
    data.cluster.ndparams = {"oob_program": "", "spindle_count": 1}
    default = next(iter(data.nodegroups.values()))
    groups = [default,
              NodeGroup(name="rack2", ndparams={"spindle_count": 2}, tags=["b", "a"]),
              NodeGroup(name="empty")]
    master = next(iter(data.nodes.values()))
    nodes = [master]
    shapes: list[tuple[NodeGroup, dict[str, Any]]] = [
        (groups[0], {}), (groups[1], {"offline": True}),
        (groups[1], {"drained": True, "master_candidate": True}),
        (groups[1], {"ndparams": {"spindle_count": 4}, "tags": ["fast"],
                     "secondary_ip": "198.51.100.5", "backup_bwlimit": 1024})]
    for idx, (group, flags) in enumerate(shapes, start=2):
        nodes.append(Node(name=f"node{idx}.example.com", primary_ip=f"192.0.2.{idx}",
                          group=group.uuid, port=11811 + idx, serial_no=idx, **flags))
    networks = [Network(name="net-a", network="10.0.0.0/24"),
                Network(name="net-b", network="10.1.0.0/24")]
    data.nodegroups = {g.uuid: g for g in groups}
    data.nodes = {n.uuid: n for n in nodes}
    data.networks = {n.uuid: n for n in networks}
    vm_nodes = [n for n in nodes if not n.drained]
    for idx in range(instances):
        pnode = vm_nodes[idx % len(vm_nodes)]
        snodes = [vm_nodes[(idx + 1) % len(vm_nodes)].uuid] if idx % 7 == 3 else []
        disks = [Disk(dev_type=constants.DT_FILE, size=128 * (d + 1) + idx,
                      name=f"d{d}" if d % 2 == 0 else None, iv_name=f"disk/{d}",
                      logical_id=["file", f"/srv/inst{idx}/disk{d}"])
                 for d in range(idx % 3)]
        nics = [NIC(mac=f"aa:00:00:00:{idx // 256:02x}:{idx % 256:02x}"
                    if n == 0 else f"aa:00:01:{n:02x}:{idx // 256:02x}:{idx % 256:02x}",
                    ip=f"10.0.{n}.{idx % 250}" if (idx + n) % 2 else None,
                    name=f"eth{n}" if n else None,
                    network=networks[n % 2].uuid if idx % 4 == n else None,
                    nicparams={"mode": "openvswitch", "link": "ovs0"} if n == 1 else
                    ({"mode": "bridged", "link": f"br{idx % 3}"} if idx % 2 else {}))
                for n in range(1 + idx % 3)]
        inst = Instance(
            name=f"inst{idx:03d}.example.com" if idx % 5 else f"web{idx:03d}",
            primary_node=pnode.uuid, secondary_nodes=snodes,
            os="debian" if idx % 2 else "busybox",
            hypervisor=constants.HT_FAKE if idx % 3 else constants.HT_PROCESS,
            beparams={"maxmem": 256 + idx} if idx % 4 else {},
            hvparams={"kernel_args": "ro"} if idx % 6 == 1 else {},
            admin_state=(constants.ADMINST_UP, constants.ADMINST_DOWN,
                         constants.ADMINST_OFFLINE)[idx % 3],
            disk_template=constants.DT_FILE if disks else constants.DT_DISKLESS,
            disks=disks, nics=nics, tags=[f"t{idx % 4}", "all"][: 1 + idx % 2],
            serial_no=idx, ctime=1_700_000_000.0 + idx, mtime=1_700_000_500.5 + idx)
        data.instances[inst.uuid] = inst
    return ConfigStore.initialize(path, data)


class FakeRpc:
    """The live calls the query resources make: some instances run, one node is silent."""

    def __init__(self, store: ConfigStore, silent: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.silent = silent
        self.calls: list[tuple[str, list[str]]] = []

    def call_all_instances_info(self, nodes: list[str], hvs: list[str]) -> dict[str, Any]:
        self.calls.append(("all_instances_info", list(nodes)))
        snap = self.store.snapshot()
        answers = {}
        for name in nodes:
            if name in self.silent:
                answers[name] = SimpleNamespace(fail_msg="no answer", offline=False,
                                                payload=None)
                continue
            node = snap.get_node_info_by_name(name)
            assert node is not None
            running = {}
            for uuid in snap.get_node_instances(node.uuid):
                inst = snap.get_instance_info(uuid)
                assert inst is not None
                if inst.primary_node == node.uuid and int(inst.serial_no) % 2 == 0:
                    running[inst.name] = {"memory": 100 + inst.serial_no, "vcpus": 2,
                                          "state": "running"}
            answers[name] = SimpleNamespace(fail_msg=None, offline=False, payload=running)
        return answers

    def call_node_info(self, nodes: list[str]) -> dict[str, Any]:
        self.calls.append(("node_info", list(nodes)))
        answers = {}
        for name in nodes:
            idx = sum(map(ord, name)) % 97
            if name in self.silent:
                answers[name] = SimpleNamespace(fail_msg="no answer", offline=False,
                                                payload=None)
                continue
            answers[name] = SimpleNamespace(fail_msg=None, offline=False, payload={
                "memory_total": 4096 + idx, "memory_free": 1024 + idx,
                "disk_total": 10_000, "disk_free": 5_000 - idx, "cpu_count": 4})
        return answers


def source(store: ConfigStore, rpc: Any = None, paths: Any = None) -> Any:
    """What the master passes to ``query.query`` (``.context.cfg/.rpc/.paths``)."""
    return SimpleNamespace(context=SimpleNamespace(cfg=store, rpc=rpc, paths=paths))
