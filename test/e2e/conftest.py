"""Fixtures starting a real multi-node cluster (real daemons, TLS, sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ganeti.tools.local_cluster import LocalCluster, random_subnet


def start_cluster(root: Path, nodes: int = 3) -> LocalCluster:
    for _ in range(3):
        try:
            cluster = LocalCluster.create(root, nodes, subnet=random_subnet())
            break
        except OSError:  # a subnet/port race with a parallel test: try another
            continue
    cluster.start(log=lambda _msg: None)
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node cluster shared by the tests of one module."""
    root = tmp_path_factory.mktemp("cluster")
    lc = start_cluster(root)
    try:
        yield lc
    finally:
        lc.stop(log=lambda _msg: None)
