"""Fixtures starting a real multi-node cluster (real daemons, TLS, sockets)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ganeti.tools.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-node cluster shared by the tests of one module."""
    root = tmp_path_factory.mktemp("cluster")
    lc = LocalCluster.create_and_start(root)
    try:
        yield lc
    finally:
        lc.stop(log=lambda _msg: None)
