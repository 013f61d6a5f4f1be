"""Node-side implementations of the RPC procedures, one module per area.

Every procedure is marked with :func:`ganeti.rpc.contract.procedure`; its
signature is the RPC call's definition.  It takes a :class:`NodeContext` first
and the call arguments after it (already checked against their annotations by
the node daemon); it returns a JSON-serialisable payload (its return
annotation) or raises :class:`ganeti.errors.RpcFail` with a message meant for
the master's operator (re-exported here for the node side).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganeti import constants, pathutils
from ganeti.errors import RpcFail

__all__ = ["NodeContext", "RpcFail"]


@dataclass(frozen=True)
class NodeContext:
    """What procedures need from the daemon that runs them."""

    paths: pathutils.Paths = field(default_factory=pathutils.current)
    hooks_timeout: float = constants.DEFAULT_HOOK_TIMEOUT
