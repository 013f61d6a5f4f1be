"""Helpers of the reliability suite: the watcher, job and leftover checks, raw LUXI/RPC.

``SOAK`` (environment GANETI_SOAK=1, set by tools/soak) scales the numbers up.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ganeti import constants, crypto, daemon, luxi
from ganeti.backend import NodeContext
from ganeti.backend.export import export_leftovers
from ganeti.rpc.client import RpcRunner
from ganeti.tools.local_cluster import SOURCE_TOP, NodeSpec
from support.cluster import E2ECluster

SOAK = os.environ.get("GANETI_SOAK") == "1"
WAIT = 120.0
FINAL = frozenset(constants.JOBS_FINALIZED)


def scaled(default: int, soak: int) -> int:
    return soak if SOAK else default


def import_planted(cluster: E2ECluster, name: str, files: dict[str, bytes]
                   ) -> subprocess.CompletedProcess[str]:
    """Plant an export ``name`` of these files on the master, import it as ``name-copy``
    (expected to fail), and remove the planted export again."""
    src = cluster.master.paths.export_dir / name
    src.mkdir(parents=True, exist_ok=True)
    try:
        for file_name, data in files.items():
            (src / file_name).write_bytes(data)
        return cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node1",
                           "--src-dir", name, "--no-start", f"{name}-copy", ok=False)
    finally:
        for item in src.iterdir():
            item.unlink()
        src.rmdir()


def luxi_exchange(cluster: E2ECluster, payload: bytes, timeout: float = 120) -> Any:
    """Send one raw framed LUXI message; the decoded reply (None: connection closed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(cluster.master.paths.master_socket))
        sock.sendall(payload + b"\x03")
        data = b""
        while not data.endswith(b"\x03"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    return json.loads(data[:-1])


def rpc_post(cluster: E2ECluster, path: str, body: bytes, timeout: float = 60
             ) -> tuple[int, Any]:
    """A raw RPC request to the master's node daemon with the cluster's certificate."""
    paths = cluster.master.paths
    ctx = crypto.client_ssl_context(paths.node_cert_file, paths.cluster_ca_file)
    conn = http.client.HTTPSConnection(cluster.master.address, cluster.port, context=ctx,
                                       timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def watcher(cluster: E2ECluster, node: NodeSpec | None = None,
            job_timeout: float = WAIT, *extra: str) -> subprocess.CompletedProcess[str]:
    node = node or cluster.master
    return subprocess.run(
        [sys.executable, str(SOURCE_TOP / "daemons" / "ganeti-watcher"), "--root", node.root,
         "--job-timeout", str(job_timeout), *extra],
        env=cluster.env(node), capture_output=True, text=True, timeout=WAIT * 3)


def client(cluster: E2ECluster, timeout: float = 60) -> luxi.Client:
    return luxi.Client(str(cluster.master.paths.master_socket), timeout=timeout)


def kill9(cluster: E2ECluster, name: str, node: NodeSpec | None = None) -> int:
    node = node or cluster.master
    pid = daemon.read_pid(node.paths.pid_file(name))
    assert pid is not None, f"{name} on {node.name} has no pid file"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + WAIT
    while cluster.is_running(name, node) and _not_zombie(pid):
        assert time.monotonic() < deadline, f"{name} survived SIGKILL"
        time.sleep(0.02)
    return pid


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_final(cl: luxi.Client, job_ids: list[int], timeout: float = WAIT) -> dict[int, str]:
    """Final status of every job; fails the test if one does not end in time."""
    deadline = time.monotonic() + timeout
    while True:
        rows = cl.query_jobs(job_ids, ["id", "status"])
        status = {int(r[0]): r[1] for r in rows if r is not None and r[0] is not None}
        if len(status) == len(job_ids) and set(status.values()) <= FINAL:
            return status
        assert time.monotonic() < deadline, f"jobs not final: { {k: v for k, v in status.items() if v not in FINAL} }"  # noqa: E501
        time.sleep(0.1)


def leftovers(cluster: E2ECluster, rpc: RpcRunner) -> dict[str, list[str]]:
    """Snapshots, staging/trash dirs and remembered transfers, per node."""
    found: dict[str, list[str]] = {}
    for node in cluster.nodes:
        items: list[str] = []
        if node.paths.file_storage_dir.exists():
            # an export base is kept on purpose (doc/incremental-exports.md)
            items += [p.name for p in node.paths.file_storage_dir.rglob("*.snap-*")
                      if not p.name.endswith(".snap-backup-base")]
        items += export_leftovers(NodeContext(paths=node.paths))
        res = rpc.call_transfer_list([node.name])[node.name]
        assert not res.fail_msg, res.fail_msg
        items += [f"transfer:{t}" for t in res.payload]
        if items:
            found[node.name] = sorted(items)
    return found


def proc_status(pid: int, key: str) -> int:
    """One number of /proc/<pid>/status (``VmRSS`` in KiB, ``Threads``, ...)."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def rss_kib(pid: int) -> int:
    return proc_status(pid, "VmRSS")


def master_pid(cluster: E2ECluster) -> int:
    pid = daemon.read_pid(cluster.master.paths.pid_file(constants.MASTERD))
    assert pid is not None
    return pid


def add_instance(cluster: E2ECluster, name: str, pnode: str, size: str = "8M",
                 *extra: str) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", pnode, "--disk",
                f"0:size={size}", "-H", "process:write_interval_ms=5,blocks=64", *extra, name)


def fill_disk(cluster: E2ECluster, name: str, mib: int) -> None:
    """Random (incompressible) data in the instance's disk, so a copy takes a while."""
    conf = cluster.instance_conf(name)
    assert conf is not None
    path = Path(conf["disks"][0]["logical_id"][1])
    with open(path, "r+b") as handle:
        for idx in range(mib):
            handle.seek(idx << 20)
            handle.write(os.urandom(1 << 20))


def instance_running(cluster: E2ECluster, name: str) -> bool:
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name,oper_state").stdout
    return any(line.split() == [name, "Y"] for line in out.splitlines())
