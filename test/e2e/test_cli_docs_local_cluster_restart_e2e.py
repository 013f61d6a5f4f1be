"""After tools/local-cluster stop and start, instances marked up come back running
(one ganeti-watcher run, as its cron job would), or with --no-watcher the user is
told they are ERROR_down and how to start them.  Through tools/local-cluster."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganeti.tools.local_cluster import LocalCluster, random_subnet

TOP = Path(__file__).resolve().parents[2]


def _tool(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOP / "tools" / "local-cluster"), "--root",
                           str(root), *argv], capture_output=True, text=True, timeout=600)


def _status(cluster: LocalCluster) -> dict[str, str]:
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "--separator", " ",
                      "-o", "name,status", check=True).stdout
    return dict(line.split() for line in out.splitlines())


@pytest.fixture
def cluster_with_instances(tmp_path: Path) -> Iterator[LocalCluster]:
    """Two nodes made by tools/local-cluster; inst1 running, inst2 stopped by its admin."""
    root = tmp_path / "lc"
    made = _tool(root, "start", "--nodes", "2", "--subnet", random_subnet())
    assert made.returncode == 0, made.stderr
    cluster = LocalCluster(root)
    try:
        for name in ("inst1", "inst2"):
            cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2",
                        "--disk", "0:size=16M", name, check=True)
        cluster.gnt("gnt-instance", "stop", "inst2", check=True)
        assert _status(cluster) == {"inst1": "running", "inst2": "ADMIN_down"}
        stopped = _tool(root, "stop")
        assert stopped.returncode == 0, stopped.stderr
        yield cluster
    finally:
        _tool(root, "stop")


def test_restart_brings_instances_marked_up_back(cluster_with_instances: LocalCluster
                                                 ) -> None:
    cluster = cluster_with_instances
    started = _tool(cluster.root, "start")
    assert started.returncode == 0, started.stderr
    out = started.stdout
    assert "Marked up but not running after the restart (ERROR_down): inst1;" in out, out
    assert "running ganeti-watcher once" in out and "--no-watcher" in out
    assert "ganeti-watcher: restarted instance inst1" in out
    assert "Running again: inst1" in out
    # what the administrator sees now: the one marked up runs, the one stopped stays so
    assert _status(cluster) == {"inst1": "running", "inst2": "ADMIN_down"}


def test_no_watcher_says_what_state_they_are_in_and_how_to_start_them(
        cluster_with_instances: LocalCluster) -> None:
    cluster = cluster_with_instances
    started = _tool(cluster.root, "start", "--no-watcher")
    assert started.returncode == 0, started.stderr
    err = started.stderr
    assert "Not running after the restart, though marked up (ERROR_down): inst1." in err, err
    assert "ganeti-watcher (cron, every 5 minutes)" in err
    assert "gnt-instance start NAME" in err and f"--root {cluster.master.root}" in err
    assert "inst2" not in err
    assert _status(cluster) == {"inst1": "ERROR_down", "inst2": "ADMIN_down"}
    # the command it names works
    cluster.gnt("gnt-instance", "start", "inst1", check=True)
    assert _status(cluster)["inst1"] == "running"
