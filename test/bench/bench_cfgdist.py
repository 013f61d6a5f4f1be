"""What the configuration distribution ships per create, at 10 and 10,000 instances.

In one process: a real ConfigStore (with its journal), the real RpcRunner's
encoding (prepared bodies, as sent over TLS) and the node daemon's real
procedures on two candidates' own roots, called in the distributor's worker
threads instead of over a socket.  Each create is followed by a flush, so
every create is one shipment per candidate (the worst case: no coalescing).
Figures per create and candidate: bytes shipped (RPC bodies) and the
master's CPU for shipping (the workers' thread CPU minus what the node
procedures took in them).  The baseline in the same run is what each
shipment cost before deltas: one ``upload_file`` of the whole file, its body
bytes and the CPU to read and encode it (shared by the candidates).

Run: .venv/bin/python test/bench/bench_cfgdist.py [--sizes 10,10000] [--creates 20]
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ganeti import config_journal, constants, errors, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.config import ConfigStore, make_initial_config
from ganeti.config_distribution import ConfigDistributor
from ganeti.objects import NIC, ConfigData, Disk, Instance, Node
from ganeti.rpc.client import RpcRunner
from ganeti.rpc.result import RpcResult
from ganeti.server import noded

CANDIDATES = ("node2", "node3")


class InProcessRpc(RpcRunner):
    """The real runner; the transport runs the node procedures in the calling thread."""

    def __init__(self, paths: pathutils.Paths, roots: dict[str, NodeContext]) -> None:
        super().__init__(lambda name: None, ssl.create_default_context, paths=paths,
                         max_workers=1)
        self.roots = roots
        self.lock = threading.Lock()
        self.node_cpu = 0.0

    def _send(self, procedure: str, nodes: Iterable[str], body: bytes, timeout: float,
              call_name: str) -> dict[str, RpcResult[Any]]:
        out: dict[str, RpcResult[Any]] = {}
        for node in nodes:
            start = time.thread_time()
            try:
                data = noded.TABLE[procedure].run(self.roots[node], json.loads(body))
                out[node] = RpcResult(node, data=data)
            except (RpcFail, errors.GenericError) as err:
                out[node] = RpcResult(node, fail_msg=str(err))
            with self.lock:
                self.node_cpu += time.thread_time() - start
        return out


def _instance(i: int, nodes: list[str]) -> Instance:
    return Instance(
        name=f"inst{i}.example.com", primary_node=nodes[i % len(nodes)],
        disk_template=constants.DT_FILE,
        disks=[Disk(size=1024, dev_type=constants.DT_FILE,
                    logical_id=["file", f"/srv/{i}/disk0"], iv_name="disk/0")],
        nics=[NIC(mac=f"aa:00:{i // 2**24 % 256:02x}:{i // 65536 % 256:02x}:"
                      f"{i // 256 % 256:02x}:{i % 256:02x}")],
        beparams={"maxmem": 512}, tags=["bench"], serial_no=1)


def _store(paths: pathutils.Paths, count: int) -> tuple[ConfigStore, list[str]]:
    data = make_initial_config("c.example.com", "node1", None, "127.0.0.1")
    group = next(iter(data.nodegroups))
    for name in CANDIDATES:
        node = Node(name=name, primary_ip="127.0.0.2", group=group, master_candidate=True)
        data.nodes[node.uuid] = node
    nodes = list(data.nodes)
    for i in range(count):
        inst = _instance(i, nodes)
        data.instances[inst.uuid] = inst
    paths.cluster_conf_file.parent.mkdir(parents=True, exist_ok=True)
    return ConfigStore.initialize(paths.cluster_conf_file,
                                  ConfigData.from_dict(data.to_dict())), nodes


def _worker_cpu() -> float:
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident))
               for t in threading.enumerate()
               if t.name.startswith("config-dist-") and t.ident is not None)


def measure(tmp: Path, count: int, creates: int) -> dict[str, float]:
    paths = pathutils.Paths.for_root(tmp / "node1")
    store, nodes = _store(paths, count)
    roots = {n: NodeContext(paths=pathutils.Paths.for_root(tmp / n)) for n in CANDIDATES}
    rpc = InProcessRpc(paths, roots)
    records_since = getattr(store, "records_since", None)
    if records_since is None:
        raise SystemExit("ConfigStore has no records_since (no journal): nothing to compare")
    res: dict[str, float] = {"config_mib": store.path.stat().st_size / 2**20}
    cpu = time.process_time()
    for _ in range(3):
        body = rpc.prepare("upload_file", str(store.path)).body
    res["file_bytes"] = len(body)
    res["file_cpu_ms"] = (time.process_time() - cpu) / 3 / len(CANDIDATES) * 1e3
    dist = ConfigDistributor(rpc, store.path, paths.cluster_ca_file, store.get_serial(),
                             records_since=records_since, min_interval=0.0)
    try:
        dist.set_candidates(list(CANDIDATES))
        assert dist.flush(list(CANDIDATES), timeout=120) == {}
        bytes0 = sum(s.bytes_shipped for s in dist.status())
        cpu0, node0 = _worker_cpu(), rpc.node_cpu
        for i in range(creates):
            store.add_instance(_instance(count + i, nodes))
            dist.config_written(store.get_serial(), list(CANDIDATES))
            assert dist.flush(list(CANDIDATES), timeout=120) == {}
        cpu_used = _worker_cpu() - cpu0 - (rpc.node_cpu - node0)
        shipped = sum(s.bytes_shipped for s in dist.status()) - bytes0
        for node in CANDIDATES:
            copy = config_journal.load(roots[node].paths.cluster_conf_file)
            assert copy == config_journal.load(store.path), node
        per = creates * len(CANDIDATES)
        res["delta_bytes"] = shipped / per
        res["delta_cpu_ms"] = cpu_used / per * 1e3
        res["fulls"] = sum(s.full_uploads for s in dist.status()) - len(CANDIDATES)
        return res
    finally:
        dist.stop(flush_timeout=0)
        rpc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,10000")
    parser.add_argument("--creates", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cfgdist-") as tmp:
        for count in sizes:
            rows[count] = measure(Path(tmp) / str(count), count, args.creates)
    base = sizes[0]
    print(f"{'per create and candidate':40}" + "".join(f"{n:>14,}" for n in sizes)
          + "".join(f"{f'x{n:,}/{base}':>14}" for n in sizes[1:]))
    for key, label in (("file_bytes", "whole file: bytes shipped"),
                       ("file_cpu_ms", "whole file: master CPU ms to encode"),
                       ("delta_bytes", "delta: bytes shipped"),
                       ("delta_cpu_ms", "delta: master CPU ms"),
                       ("fulls", "delta: whole files needed (total)"),
                       ("config_mib", "config file MiB")):
        print(f"{label:40}" + "".join(f"{rows[n][key]:14,.2f}" for n in sizes)
              + "".join(f"{rows[n][key] / rows[base][key] if rows[base][key] else 0:14.2f}"
                        for n in sizes[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
