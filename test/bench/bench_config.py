"""Benchmark of the configuration store: write latency, reads, loads at cluster scale.

Run: .venv/bin/python test/bench/bench_config.py [instances]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ganeti import constants, errors
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import NIC, Disk, Instance, Node


def _timed(label: str, count: int, func: Callable[[int], object]) -> None:
    start = time.perf_counter()
    for i in range(count):
        func(i)
    elapsed = time.perf_counter() - start
    print(f"{label:<42} {count:>5} x  {elapsed / count * 1000:8.3f} ms each")


def main() -> None:
    n_instances = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.data"
        store = ConfigStore.initialize(
            path, make_initial_config("c.example.com", "node1.example.com", None, "192.0.2.1"))
        nodes = []
        for i in range(20):
            node = Node(name=f"node{i + 2}.example.com", primary_ip=f"192.0.2.{i + 2}")
            store.add_node(node)
            nodes.append(node.uuid)

        def add(i: int) -> None:
            store.add_instance(Instance(
                name=f"inst{i}.example.com", primary_node=nodes[i % len(nodes)],
                disk_template=constants.DT_FILE,
                disks=[Disk(size=1024, dev_type=constants.DT_FILE,
                            logical_id=["file", f"/srv/{i}/disk0"], iv_name="disk/0")],
                nics=[NIC(mac=f"aa:00:00:00:{i // 256:02x}:{i % 256:02x}")],
                beparams={"maxmem": 512}, tags=["bench"]))

        _timed("add_instance (growing to N instances)", n_instances, add)
        print(f"config file size: {path.stat().st_size / 1024:.1f} KiB")
        uuids = store.get_instance_list()
        _timed("set_instance_admin_state", 200,
               lambda i: store.set_instance_admin_state(uuids[i % len(uuids)],
                                                        constants.ADMINST_UP))

        def stale_add(i: int) -> None:
            try:
                store.add_instance(Instance(name="inst0.example.com", primary_node=nodes[0]))
            except errors.OpPrereqError:
                pass

        _timed("refused add_instance (duplicate name)", 50, stale_add)
        _timed("get_instance_info", 2000, lambda i: store.get_instance_info(uuids[i % 100]))
        _timed("expand_instance_name (short name)", 2000,
               lambda i: store.expand_instance_name(f"inst{i % 100}"))
        _timed("get_all_instances_info", 50, lambda i: store.get_all_instances_info())
        _timed("ConfigStore(path) full load", 20, lambda i: ConfigStore(path))
        reader = ConfigStore(path)
        _timed("reload_if_changed (unchanged)", 2000, lambda i: reader.reload_if_changed())


if __name__ == "__main__":
    main()
