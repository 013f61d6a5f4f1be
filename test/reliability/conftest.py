"""Fixtures shared by the reliability tests (each module defines its ``cluster``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.cluster import E2ECluster

from ganeti.rpc.client import RpcRunner


@pytest.fixture(scope="module")
def rpc(cluster: E2ECluster) -> Iterator[RpcRunner]:
    """An RPC runner speaking to the module's cluster with the master's certificate."""
    runner = cluster.rpc_runner()
    try:
        yield runner
    finally:
        runner.close()
