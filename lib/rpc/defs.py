"""The table of node RPC calls made by the master, checked and indexed by name.

The entries come from :mod:`ganeti.rpc.stubs`, generated from the backend
procedures (``python -m ganeti.tools.rpc_gen``): each names the node procedure, its
timeout (a class or a function of the arguments), the arguments with their
master-side encoders, and whether it targets one node or many.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ganeti.rpc import stubs
from ganeti.rpc.calltypes import (  # noqa: F401 - re-exported for callers
    TIMEOUT_CLASSES,
    TIMEOUT_KW,
    TMO_1DAY,
    TMO_4HRS,
    TMO_FAST,
    TMO_NORMAL,
    TMO_SLOW,
    TMO_URGENT,
    Arg,
    PrepareFn,
    RpcCall,
    TimeoutFn,
)


def _check(calls: tuple[RpcCall, ...]) -> Mapping[str, RpcCall]:
    table: dict[str, RpcCall] = {}
    for call in calls:
        if call.name in table:
            raise ValueError(f"Duplicate RPC call {call.name}")
        if any(arg.name == TIMEOUT_KW for arg in call.args):
            raise ValueError(f"RPC call {call.name}: argument name {TIMEOUT_KW} is reserved")
        if isinstance(call.timeout, str) and call.timeout not in TIMEOUT_CLASSES:
            raise ValueError(f"RPC call {call.name}: unknown timeout class {call.timeout}")
        table[call.name] = call
    return MappingProxyType(table)


CALLS: Mapping[str, RpcCall] = _check(stubs.CALLS)
