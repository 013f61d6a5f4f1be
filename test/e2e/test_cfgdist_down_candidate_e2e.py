"""A master candidate whose node daemon hangs (not marked offline) on a real cluster.

Its noded is stopped with SIGSTOP: the kernel still accepts TCP connections,
nothing answers the TLS handshake, so every upload to it waits for the RPC
connect timeout, as with a host that hangs.  Commits must not wait for it
(the other candidate follows), `gnt-cluster verify` must report how far it
lags, and once it runs again it catches up without a further write (with a
delta: the master still has the records).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster, output

from ganeti import config_journal, constants, daemon

pytestmark = pytest.mark.e2e


def _serial(root: str) -> int:
    """The serial of a node's copy as master failover loads it (file + journal)."""
    return config_journal.load(Path(root) / "var/lib/ganeti/config.data")[1]


def _wait(pred, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout}s"
        time.sleep(0.1)


def _whole_files(cluster: E2ECluster, node: str) -> int:
    """How many whole files (config or CA) the node took, from its noded log."""
    log = cluster.node(node).paths.log_file(constants.NODED)
    return log.read_text(errors="replace").count("RPC upload_file from")


@pytest.fixture
def frozen_node3(cluster: E2ECluster) -> Iterator[int]:
    # the start's last node add reaches the other candidate in the background
    roots = [cluster.node(f"node{i}").root for i in (1, 2, 3)]
    _wait(lambda: len({_serial(root) for root in roots}) == 1,
          "every candidate at the master's serial")
    pid = daemon.read_pid(cluster.node("node3").paths.pid_file(constants.NODED))
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_hanging_candidate_lags_without_slowing_commits_and_catches_up(
        cluster: E2ECluster, frozen_node3: int) -> None:
    master, node2, node3 = (cluster.node(f"node{i}") for i in (1, 2, 3))
    before = _serial(node3.root)
    files_before = _whole_files(cluster, "node3")
    assert _serial(node2.root) == _serial(master.root) == before
    # commits while node3 hangs: each of them would wait 15 s per write for node3
    # if distribution were synchronous; here the command's own timeout is far below
    # what that would add up to (several writes per create)
    for name in ("lag1", "lag2"):
        cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                    "0:size=1M", "--no-start", name, timeout=60)
    cluster.gnt("gnt-cluster", "add-tags", "cfgdist-lag", timeout=60)
    master_serial = _serial(master.root)
    assert master_serial > before
    # the healthy candidate follows; the hanging one still has the old file
    _wait(lambda: _serial(node2.root) == _serial(master.root), "node2 up to date")
    assert _serial(node3.root) == before

    proc = cluster.gnt("gnt-cluster", "verify", ok=False, timeout=240)
    text = output(proc)
    assert proc.returncode == 1, text
    lag_lines = [line for line in text.splitlines() if "configuration lags" in line]
    assert len(lag_lines) == 1 and "node node3" in lag_lines[0], text
    assert "has nothing since the master started" in lag_lines[0] or \
        f"has serial {before}" in lag_lines[0], lag_lines
    assert "last error:" in lag_lines[0] and "last error: None" not in lag_lines[0]
    assert "node node2: configuration lags" not in text

    # node3 runs again: it gets the newest file without any further write
    os.kill(frozen_node3, signal.SIGCONT)
    _wait(lambda: _serial(node3.root) == _serial(master.root), "node3 caught up")
    assert _serial(node3.root) >= master_serial
    # the master still had the records: node3 caught up with a delta, no whole file
    assert _whole_files(cluster, "node3") == files_before
    proc = cluster.gnt("gnt-cluster", "verify", ok=False, timeout=240)
    assert "configuration lags" not in output(proc), output(proc)
    assert "master candidates of the group have the configuration" in output(proc)
    for name in ("lag1", "lag2"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
