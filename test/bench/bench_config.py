"""Benchmark of the configuration store at 10, 1,000 and 10,000 instances.

Each size starts from a file written in one go (so building the cluster is not
what is measured), then times add, modify, remove, name lookup, used_macs and
snapshot, one at a time as an LU would call them (a commit appends to the
journal).  Per-operation costs are printed with their ratio to the smallest
size (goal: at most 2x at 10,000), plus ``_serialize``, a compaction and a
full load, which are O(N) by nature; a compaction comes once per
COMPACT_RATIO x file size of journal, so its share per commit is printed too.

Run: .venv/bin/python test/bench/bench_config.py [SIZE...]   (default 10 1000 10000)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import config, constants
from ganeti.cmdlib import instance_utils as iu
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import NIC, ConfigData, Disk, Instance, Node

_NODES = 20


def _instance(i: int, nodes: list[str]) -> Instance:
    return Instance(
        name=f"inst{i}.example.com", primary_node=nodes[i % len(nodes)],
        disk_template=constants.DT_FILE,
        disks=[Disk(size=1024, dev_type=constants.DT_FILE,
                    logical_id=["file", f"/srv/{i}/disk0"], iv_name="disk/0")],
        nics=[NIC(mac=f"aa:00:00:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}")],
        beparams={"maxmem": 512}, tags=["bench"], serial_no=1)


def _populated(path: Path, n_instances: int) -> tuple[ConfigStore, list[str]]:
    data = make_initial_config("c.example.com", "node1.example.com", None, "192.0.2.1")
    group = next(iter(data.nodegroups))
    for i in range(_NODES - 1):
        node = Node(name=f"node{i + 2}.example.com", primary_ip=f"192.0.2.{i + 2}",
                    group=group, serial_no=1)
        data.nodes[node.uuid] = node
    nodes = list(data.nodes)
    for i in range(n_instances):
        inst = _instance(i, nodes)
        data.instances[inst.uuid] = inst
    return ConfigStore.initialize(path, ConfigData.from_dict(data.to_dict())), nodes


def _per_op(count: int, func: Callable[[int], object]) -> tuple[float, float]:
    """(CPU, wall) seconds per call, each the best of three rounds (the machine is shared;
    CPU is the steadier figure, wall includes writing and syncing the file)."""
    best_cpu = best_wall = float("inf")
    for _ in range(3):
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(count):
            func(i)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / count)
        best_wall = min(best_wall, (time.perf_counter() - wall) / count)
    return best_cpu, best_wall


def _measure(n_instances: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.data"
        store, nodes = _populated(path, n_instances)
        size = path.stat().st_size / 1024
        results["config KiB"] = (size, size)
        uuids = store.get_instance_list()
        added: list[str] = []
        counter = iter(range(n_instances, 10**9))

        def add(_i: int) -> None:
            inst = _instance(next(counter), nodes)
            store.add_instance(inst)
            added.append(inst.uuid)

        results["add_instance"] = _per_op(10, add)

        def modify(i: int) -> None:
            store.set_instance_admin_state(uuids[i % len(uuids)],
                                           constants.ADMINST_UP if i % 2 else
                                           constants.ADMINST_DOWN)

        results["set_instance_admin_state"] = _per_op(10, modify)

        def update(i: int) -> None:
            inst = store.get_instance_info(uuids[i % len(uuids)])
            assert inst is not None
            inst.tags = [f"t{i}"]
            store.update(inst)

        results["get_instance_info + update"] = _per_op(10, update)
        results["remove_instance"] = _per_op(len(added) // 3,
                                             lambda i: store.remove_instance(added.pop()))
        results["expand_instance_name"] = _per_op(
            200, lambda i: store.expand_instance_name(f"inst{i * 7919 % n_instances}"))
        results["get_instance_info_by_name"] = _per_op(
            200, lambda i: store.get_instance_info_by_name(
                f"inst{i * 7919 % n_instances}.example.com"))
        results["used_macs (create's MAC check)"] = _per_op(20, lambda i: iu.used_macs(store))
        if hasattr(store, "snapshot"):
            results["snapshot (unchanged)"] = _per_op(200, lambda i: store.snapshot())

            def snap_after_change(i: int) -> None:
                store.set_instance_admin_state(uuids[i % len(uuids)], constants.ADMINST_UP)
                store.snapshot()

            results["modify + snapshot"] = _per_op(10, snap_after_change)
        results["_serialize, pydantic (O(N))"] = _per_op(
            3, lambda i: config._serialize(store._data))
        if hasattr(store, "_fragments"):
            results["serialise for a write (fragments)"] = _per_op(
                3, lambda i: store._fragments.serialize(store._data))
        if hasattr(store, "compact"):
            def compact(i: int) -> None:
                store.set_instance_admin_state(uuids[i % len(uuids)], constants.ADMINST_UP)
                store.compact()

            # a compaction every COMPACT_RATIO * file size of journal: its share per commit
            cpu, wall = _per_op(2, compact)
            last = store.records_since(store.get_serial() - 1)
            assert last, "the last commit's record is kept"
            record = len(last[0].line)
            commits = max(config.COMPACT_MIN_BYTES,
                          config.COMPACT_RATIO * size * 1024) / record
            results["compaction (O(N), with one commit)"] = (cpu, wall)
            results["compaction per commit, amortized"] = (cpu / commits, wall / commits)
        results["ConfigStore(path) load (O(N))"] = _per_op(1, lambda i: ConfigStore(path))
        results["8 threads x 5 adds, per add"] = _concurrent_adds(store, nodes, counter)
    return results


def _concurrent_adds(store: ConfigStore, nodes: list[str], counter: Any
                     ) -> tuple[float, float]:
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(5):
            with lock:
                idx = next(counter)
            store.add_instance(_instance(idx, nodes))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (time.process_time() - cpu) / 40, (time.perf_counter() - wall) / 40


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10, 1000, 10000]
    table = {size: _measure(size) for size in sizes}
    base = sizes[0]
    header = f"{'operation':<40}" + "".join(f"{f'N={s}':>14}" for s in sizes)
    header += "".join(f"{f'{s}/{base}':>12}" for s in sizes[1:])
    print(header)
    for kind, which in (("CPU", 0), ("wall", 1)):
        for key in table[base]:
            if key == "config KiB" and which:
                continue
            label = key if key == "config KiB" else f"{key} ({kind})"
            row = f"{label:<40}"
            for size in sizes:
                value = table[size][key][which]
                row += (f"{value:>14.1f}" if key == "config KiB"
                        else f"{value * 1000:>11.3f} ms")
            for size in sizes[1:]:
                low = table[base][key][which]
                ratio = table[size][key][which] / low if low else float("nan")
                row += f"{ratio:>11.1f}x"
            print(row)


if __name__ == "__main__":
    main()
