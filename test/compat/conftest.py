"""Fixtures of the Ganeti 3.0 compatibility tests: the oracle and a running cluster.

``ganeti3`` is Ganeti 3.0.2 from Debian's packages (support.ganeti_oracle); where
the packages cannot be fetched, every test using it skips and says why.
"""

from __future__ import annotations

import pytest
from support.cluster import cluster_fixture
from support.ganeti_oracle import Ganeti3, OracleUnavailable
from support.ganeti_oracle import ganeti3 as _ganeti3


@pytest.fixture(scope="session")
def ganeti3() -> Ganeti3:
    try:
        return _ganeti3()
    except OracleUnavailable as err:
        pytest.skip(f"Ganeti 3.0's Debian packages are unavailable here: {err}")


# A 3-node cluster shared by the tests of one module (support.cluster.E2ECluster).
cluster = cluster_fixture("cluster")

__all__ = ["cluster", "ganeti3"]
