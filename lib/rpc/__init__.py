"""Master -> node RPC: the call table (defs), the runner (client), the result type."""

from __future__ import annotations

from ganeti.rpc.client import NodeAddress, RpcRunner, static_resolver
from ganeti.rpc.result import RpcResult

__all__ = ["NodeAddress", "RpcResult", "RpcRunner", "static_resolver"]
