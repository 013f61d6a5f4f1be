"""RPC calls for per-transfer keys of remote exports (node side: ganeti.backend.x509)."""

from __future__ import annotations

from ganeti.rpc.calltypes import Arg, RpcCall

CALLS: tuple[RpcCall, ...] = (
    RpcCall("x509_cert_create", "x509_cert_create", "normal", (Arg("validity", int),),
            single_node=True,
            doc="New key and self-signed certificate; payload [name, cert PEM]"),
    RpcCall("x509_cert_remove", "x509_cert_remove", "fast", (Arg("name"),),
            single_node=True, doc="Remove a per-transfer key and certificate"),
    RpcCall("x509_cleanup", "x509_cleanup", "fast",
            doc="Remove expired per-transfer keys; payload: removed names"),
)
