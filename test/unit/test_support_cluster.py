"""The test-side cluster (support.cluster.E2ECluster) on a created, not started, cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cluster import E2ECluster, output


@pytest.fixture
def cluster(tmp_path: Path) -> E2ECluster:
    return E2ECluster.create(tmp_path / "c", node_count=2, subnet="127.77.0.")


def test_gnt_asserts_success_unless_told_not_to(cluster: E2ECluster) -> None:
    # no master daemon runs: gnt-cluster master-ping fails
    with pytest.raises(AssertionError, match=r"gnt-cluster master-ping failed \(1\)"):
        cluster.gnt("gnt-cluster", "master-ping")
    proc = cluster.gnt("gnt-cluster", "master-ping", ok=False)
    assert proc.returncode == 1
    assert output(proc) == proc.stdout + proc.stderr
    # the lib's check= still works underneath
    with pytest.raises(RuntimeError, match="master-ping failed"):
        cluster.gnt("gnt-cluster", "master-ping", ok=False, check=True)


def test_node_and_instance_conf_by_name(cluster: E2ECluster) -> None:
    assert cluster.node("node2") == cluster.nodes[1]
    assert cluster.node("node2").address == "127.77.0.2"
    with pytest.raises(KeyError, match="node9"):
        cluster.node("node9")
    assert cluster.instance_conf("inst1") is None


def test_create_returns_the_subclass(cluster: E2ECluster) -> None:
    assert type(cluster) is E2ECluster
    assert type(E2ECluster(cluster.root)) is E2ECluster
