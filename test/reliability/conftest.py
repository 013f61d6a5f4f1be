"""Fixtures shared by the reliability tests (each module defines its ``cluster``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from rel_support import rpc_runner

from ganeti.tools.local_cluster import LocalCluster


@pytest.fixture(scope="module")
def rpc(cluster: LocalCluster) -> Iterator[Any]:
    """An RPC runner speaking to the module's cluster with the master's certificate."""
    runner = rpc_runner(cluster)
    try:
        yield runner
    finally:
        runner.close()
