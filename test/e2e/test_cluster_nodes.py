"""Cluster and node management end to end: gnt-cluster / gnt-node on a 3-node cluster."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest
from support.cluster import E2ECluster, start_cluster, stop_quietly

from ganeti import config_journal, constants, daemon

pytestmark = pytest.mark.e2e


def _rows(cluster: E2ECluster, *fields: str) -> list[list[str]]:
    out = cluster.gnt("gnt-node", "list", "--no-headers", "--separator", "|", "-o",
                      ",".join(fields)).stdout
    return [line.split("|") for line in out.splitlines()]


def _serial(root: str) -> int:
    return config_journal.load(Path(root) / "var/lib/ganeti/config.data")[1]


def _write_hook(cluster: E2ECluster, hpath: str, phase: str, name: str,
                body: str) -> Path:
    hook_dir = cluster.master.paths.hooks_dir / f"{hpath}-{phase}.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    script = hook_dir / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def test_nodes_joined_and_config_distributed(cluster: E2ECluster) -> None:
    rows = _rows(cluster, "name", "pip", "role")
    assert rows == [["node1", cluster.nodes[0].address, "M"],
                    ["node2", cluster.nodes[1].address, "C"],
                    ["node3", cluster.nodes[2].address, "C"]]
    master_serial = _serial(cluster.master.root)
    # master candidates received the current configuration and the CA
    for node in cluster.nodes[1:]:
        assert _serial(node.root) == master_serial
        assert (node.paths.cluster_ca_file.read_text()
                == cluster.master.paths.cluster_ca_file.read_text())
    # secrets stay private
    mode = stat.S_IMODE(os.stat(cluster.master.paths.cluster_conf_file).st_mode)
    assert mode == 0o600


def test_cluster_info_and_master_ping(cluster: E2ECluster) -> None:
    info = cluster.gnt("gnt-cluster", "info").stdout
    assert "Cluster name: cluster.local" in info
    assert "Master node: node1" in info
    cluster.gnt("gnt-cluster", "master-ping")


def test_verify_reports_a_dead_node_daemon(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-cluster", "verify")
    node3 = cluster.nodes[2]
    pid = daemon.read_pid(node3.paths.pid_file(constants.NODED))
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    try:
        for _ in range(200):
            if not cluster.is_running(constants.NODED, node3):
                break
            time.sleep(0.05)
        proc = cluster.gnt("gnt-cluster", "verify", ok=False)
        assert proc.returncode == 1
        assert "node node3" in proc.stdout
        assert "refused" in proc.stdout.lower() or "connect" in proc.stdout.lower()
    finally:
        cluster.start(log=lambda _m: None)
    cluster.gnt("gnt-cluster", "verify")


def test_node_remove_and_readd(cluster: E2ECluster) -> None:
    node3 = cluster.nodes[2]
    cluster.gnt("gnt-node", "remove", "node3")
    assert [r[0] for r in _rows(cluster, "name")] == ["node1", "node2"]
    # removing the master is refused with a clear error
    proc = cluster.gnt("gnt-node", "remove", "node1", ok=False)
    assert proc.returncode == 1
    assert "master node" in proc.stderr
    cluster.gnt("gnt-node", "add", "--primary-ip", node3.address, "node3")
    assert [r[0] for r in _rows(cluster, "name")] == ["node1", "node2", "node3"]
    # adding it twice is refused
    proc = cluster.gnt("gnt-node", "add", "--primary-ip", node3.address, "node3", ok=False)
    assert proc.returncode == 1
    assert "already in the cluster" in proc.stderr


def test_node_add_refuses_a_daemon_without_cluster_certificate(cluster: E2ECluster) -> None:
    # nothing listens there: a clear error naming the address, config unchanged
    before = _serial(cluster.master.root)
    proc = cluster.gnt("gnt-node", "add", "--primary-ip", "127.0.0.1", "--port", "9",
                       "ghost", ok=False)
    assert proc.returncode == 1
    assert "ghost" in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert _serial(cluster.master.root) == before


def test_node_modify_offline_and_back(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-node", "modify", "-O", "yes", "node2")
    assert _rows(cluster, "name", "role")[1] == ["node2", "O"]
    # offline nodes are never contacted: a delay on it fails at once, clearly
    proc = cluster.gnt("gnt-debug", "delay", "--no-master", "-n", "node2", "0.1", ok=False)
    assert proc.returncode == 1
    assert "offline" in proc.stderr
    cluster.gnt("gnt-node", "modify", "-C", "yes", "node2")
    assert _rows(cluster, "name", "role")[1] == ["node2", "C"]
    # the master cannot be offlined
    proc = cluster.gnt("gnt-node", "modify", "-O", "yes", "node1", ok=False)
    assert proc.returncode == 1
    assert "master node" in proc.stderr


def test_node_add_hooks_pre_failure_aborts_post_failure_warns(
        cluster: E2ECluster, tmp_path: Path) -> None:
    node3 = cluster.nodes[2]
    cluster.gnt("gnt-node", "remove", "node3")
    env_dump = tmp_path / "env"
    pre = _write_hook(cluster, "node-add", "pre", "10-veto",
                      f"env > {env_dump}\necho 'not today'\nexit 1\n")
    try:
        before = _serial(cluster.master.root)
        proc = cluster.gnt("gnt-node", "add", "--primary-ip", node3.address, "node3", ok=False)
        assert proc.returncode == 1
        assert "node1" in proc.stderr and "10-veto" in proc.stderr
        assert "not today" in proc.stderr
        assert _serial(cluster.master.root) == before      # nothing changed
        env = dict(line.split("=", 1) for line in env_dump.read_text().splitlines())
        assert env["GANETI_HOOKS_PHASE"] == "pre"
        assert env["GANETI_OP_CODE"] == "OP_NODE_ADD"
        assert env["GANETI_NODE_NAME"] == "node3"
        assert env["GANETI_HOOKS_PATH"] == "node-add"
        assert env["GANETI_CLUSTER"] == "cluster.local"
        assert env["GANETI_MASTER"] == "node1"
        assert "HOME" not in env
    finally:
        pre.unlink()
    post = _write_hook(cluster, "node-add", "post", "20-grumble", "echo grr\nexit 3\n")
    try:
        proc = cluster.gnt("gnt-node", "add", "--primary-ip", node3.address, "node3")
        assert "WARNING" in proc.stdout and "20-grumble" in proc.stdout
    finally:
        post.unlink()
    assert [r[0] for r in _rows(cluster, "name")] == ["node1", "node2", "node3"]


def test_cluster_destroy(tmp_path: Path) -> None:
    lc = start_cluster(tmp_path / "c", node_count=2)
    try:
        proc = lc.gnt("gnt-cluster", "destroy", ok=False)
        assert proc.returncode == 1 and "--yes-do-it" in proc.stderr
        proc = lc.gnt("gnt-cluster", "destroy", "--yes-do-it", ok=False)
        assert proc.returncode == 1 and "node2" in proc.stderr and "remove them" in proc.stderr
        lc.gnt("gnt-node", "remove", "node2")
        lc.gnt("gnt-cluster", "destroy", "--yes-do-it")
        master = lc.master
        for _ in range(200):
            if not (lc.is_running(constants.MASTERD, master)
                    or lc.is_running(constants.NODED, master)):
                break
            time.sleep(0.05)
        assert not lc.is_running(constants.MASTERD, master)
        assert not lc.is_running(constants.NODED, master)
        data_dir = master.paths.data_dir
        assert not master.paths.cluster_conf_file.exists()
        # set aside, not deleted: recoverable by hand
        assert [p.name for p in data_dir.iterdir() if p.name.startswith("config.data.destroyed")]
        assert lc.gnt("gnt-cluster", "master-ping", ok=False).returncode == 1
    finally:
        stop_quietly(lc)
