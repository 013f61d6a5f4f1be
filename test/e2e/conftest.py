"""Fixtures starting a real multi-node cluster (real daemons, TLS, sockets)."""

from __future__ import annotations

from support.cluster import cluster_fixture, rpc

# A 3-node cluster shared by the tests of one module (support.cluster.E2ECluster),
# and ``rpc``, an RpcRunner to its nodes.
cluster = cluster_fixture("cluster")

__all__ = ["cluster", "rpc"]
