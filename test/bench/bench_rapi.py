"""RAPI latency: GET /2/instances/NAME through ganeti-rapi vs the same query over LUXI.

Run:  .venv/bin/python test/bench/bench_rapi.py [requests per client, default 300]
A 1-node local cluster with one instance; p50/p99 at 1 and 50 concurrent
clients (one kept-alive HTTPS connection each; at 1 client also a new TLS
connection per request), against the baseline of the same run: LUXI's
QueryInstances of the same instance and Ganeti's I_FIELDS (those our query
has; the live ones such as oper_state cost an RPC to the node), one
connection per client.  Goal: p50 < 10 ms at 1 client (Ganeti
3.0.2: 110-120 ms on this kind of machine).  Until the /2/instances/NAME
resource is in the table, /2/info is measured instead (QueryClusterInfo as the
baseline); the output says which.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import luxi
from ganeti.rapi import resources
from ganeti.tools.local_cluster import LocalCluster

INSTANCE = "inst1"
# Ganeti's rlib2.I_FIELDS, the fields its GET /2/instances/NAME queries
I_FIELDS = ["name", "admin_state", "os", "pnode", "snodes", "disk_template", "nic.ips",
            "nic.macs", "nic.modes", "nic.uuids", "nic.names", "nic.links", "nic.networks",
            "nic.networks.names", "nic.bridges", "network_port", "disk.sizes",
            "disk.spindles", "disk_usage", "disk.uuids", "disk.names", "beparams",
            "hvparams", "oper_state", "oper_ram", "oper_vcpus", "status", "custom_hvparams",
            "custom_beparams", "custom_nicparams", "ctime", "mtime", "uuid", "serial_no",
            "tags"]
TOKEN = base64.b64encode(b"bench:secret").decode()


def _context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _https_get(conn: http.client.HTTPSConnection, path: str) -> None:
    conn.request("GET", path, headers={"Authorization": f"Basic {TOKEN}"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise RuntimeError(f"GET {path}: {resp.status}")


def _measure(clients: int, count: int, make: Callable[[], Any],
             call: Callable[[Any], None]) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def worker() -> None:
        state = make()
        call(state)  # warm-up: the connection is made
        barrier.wait()
        mine = []
        for _ in range(count):
            start = time.perf_counter()
            call(state)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(latencies)


def _p(latencies: list[float], q: float) -> float:
    if q == 0.5:
        return statistics.median(latencies) * 1000
    return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    table = resources.load_all()
    has_instance = "/2/instances/{instance_name}" in table \
        and "GET" in table["/2/instances/{instance_name}"].operations
    with tempfile.TemporaryDirectory(prefix="bench-rapi-") as tmp:
        cluster = LocalCluster.create_and_start(Path(tmp) / "c", node_count=1)
        try:
            users = cluster.master.paths.rapi_users
            users.parent.mkdir(parents=True, exist_ok=True)
            users.write_text("bench secret write\n")
            host, port = cluster.rapi_address
            socket_path = str(cluster.master.paths.master_socket)
            if has_instance:
                cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk",
                            "0:size=8M", "--no-start", INSTANCE, check=True)
                path = f"/2/instances/{INSTANCE}"
                with luxi.Client(socket_path) as cl:
                    known = {f["name"] for f in cl.query_fields("instance")["fields"]}
                fields = [f for f in I_FIELDS if f in known]

                def luxi_call(cl: luxi.Client) -> None:
                    cl.query_instances([INSTANCE], fields, False)
                what = (f"GET {path} vs LUXI QueryInstances([{INSTANCE}], the {len(fields)}"
                        f" of Ganeti's I_FIELDS we have)")
            else:
                path = "/2/info"

                def luxi_call(cl: luxi.Client) -> None:
                    cl.query_cluster_info()
                what = ("GET /2/info vs LUXI QueryClusterInfo (/2/instances/NAME is not in"
                        " the route table yet: FALLBACK)")
            ctx = _context()

            def new_conn() -> http.client.HTTPSConnection:
                return http.client.HTTPSConnection(host, port, timeout=60, context=ctx)

            def fresh(_state: Any) -> None:
                conn = new_conn()
                try:
                    _https_get(conn, path)
                finally:
                    conn.close()

            rows = []
            for clients in (1, 50):
                n = count if clients == 1 else max(20, count // 5)
                rapi = _measure(clients, n, new_conn, lambda c: _https_get(c, path))
                base = _measure(clients, n, lambda: luxi.Client(socket_path), luxi_call)
                rows.append((f"{clients} client(s), kept-alive", rapi, base))
                if clients == 1:
                    rows.append(("1 client, new TLS connection each",
                                 _measure(1, max(50, count // 3), lambda: None, fresh), base))
        finally:
            cluster.stop(log=lambda _m: None)
    print(what)
    print(f"{'':36} {'RAPI p50':>9} {'p99':>8} {'LUXI p50':>9} {'p99':>8}"
          f" {'ratio p50':>9} {'ratio p99':>9}  (ms)")
    for label, rapi, base in rows:
        print(f"{label:36} {_p(rapi, .5):9.2f} {_p(rapi, .99):8.2f} {_p(base, .5):9.2f}"
              f" {_p(base, .99):8.2f} {_p(rapi, .5) / _p(base, .5):9.1f}"
              f" {_p(rapi, .99) / _p(base, .99):9.1f}")
    one = rows[0][1]
    verdict = "met" if _p(one, .5) < 10 else "NOT met"
    print(f"goal p50 < 10 ms at 1 client (Ganeti 3.0.2: 110-120 ms): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
