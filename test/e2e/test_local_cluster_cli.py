"""tools/local-cluster start --subnet: the documented form works, a bad one leaves nothing."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ganeti.tools.local_cluster import SOURCE_TOP, LocalCluster

pytestmark = pytest.mark.e2e


def local_cluster(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SOURCE_TOP / "tools" / "local-cluster"),
                           "--root", str(root), *argv], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("subnet", ["127.2", "127.2.0.5", "10.1.0", "127.300.0", "x"])
def test_bad_subnet_is_refused_before_anything_is_made(tmp_path: Path, subnet: str) -> None:
    root = tmp_path / "lc"
    proc = local_cluster(root, "start", "--nodes", "1", "--subnet", subnet)
    if root.exists():   # accepted after all: leave no daemons behind
        local_cluster(root, "stop")
    assert proc.returncode == 2 and "--subnet" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not root.exists()


def test_subnet_in_the_form_its_help_shows(tmp_path: Path) -> None:
    root = tmp_path / "lc"
    subnet = f"127.{random.randint(2, 250)}.{random.randint(0, 250)}"
    assert "such as 127.1.0" in local_cluster(root, "start", "--help").stdout
    proc = local_cluster(root, "start", "--nodes", "1", "--subnet", subnet)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert LocalCluster(root).master.address == f"{subnet}.1"
        status = local_cluster(root, "status").stdout
        assert f"{subnet}.1:" in status and "ganeti-noded running" in status
    finally:
        local_cluster(root, "stop")


def test_a_failed_start_leaves_no_daemons(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A start failing after some daemons run (here: adding node2) stops them again."""
    started: list[LocalCluster] = []
    real_start = LocalCluster.start

    def start_then_fail(self: LocalCluster, log: Any = print) -> None:
        started.append(self)
        monkeypatch.setattr(LocalCluster, "gnt", _refuse_node_add(LocalCluster.gnt))
        real_start(self, log)

    monkeypatch.setattr(LocalCluster, "start", start_then_fail)
    with pytest.raises(RuntimeError, match="node add refused"):
        LocalCluster.create_and_start(tmp_path / "lc", node_count=2, attempts=1)
    (cluster,) = started
    try:
        assert not cluster.is_running("ganeti-masterd", cluster.master)
        assert not cluster.is_running("ganeti-rapi", cluster.master)
        for node in cluster.nodes:
            assert not cluster.is_running("ganeti-noded", node), node.name
    finally:
        cluster.stop(log=lambda _msg: None)  # when the test fails


def _refuse_node_add(gnt: Any) -> Any:
    def refuse(self: LocalCluster, *argv: str, **kwargs: Any) -> Any:
        if argv[:2] == ("gnt-node", "add"):
            raise RuntimeError("node add refused")
        return gnt(self, *argv, **kwargs)
    return refuse
