"""The master's RPC runner, as tests and benchmarks build it outside masterd."""

from __future__ import annotations

from typing import cast

from ganeti import pathutils
from ganeti.config import ConfigStore
from ganeti.rpc.client import RpcRunner
from ganeti.server.masterd import build_rpc_runner


def make_rpc_runner(paths: pathutils.Paths, cfg: ConfigStore | None = None) -> RpcRunner:
    """The runner masterd would use on the node with ``paths`` (its certificate and CA),
    resolving node names through ``cfg`` (default: that node's cluster config)."""
    return build_rpc_runner(paths, cfg or ConfigStore(paths.cluster_conf_file))


def as_runner(double: object) -> RpcRunner:
    """A test double that answers the ``call_*`` methods some code uses, typed as the runner
    (the doubles are duck-typed: they implement only the calls under test)."""
    return cast(RpcRunner, double)
