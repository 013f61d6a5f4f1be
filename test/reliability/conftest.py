"""Fixtures shared by the reliability tests (each module defines its ``cluster``).

``rpc``: an RpcRunner speaking to the module's cluster with the master's certificate.
"""

from __future__ import annotations

from support.cluster import rpc

__all__ = ["rpc"]
