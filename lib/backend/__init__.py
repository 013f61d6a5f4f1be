"""Node-side implementations of the RPC procedures, one module per area.

Every procedure takes a :class:`NodeContext` first and the JSON-decoded call
arguments after it; it returns a JSON-serialisable payload or raises
:class:`RpcFail` with a message meant for the master's operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganeti import constants, pathutils


class RpcFail(Exception):
    """A procedure failed in an expected way; the message goes back to the master."""


@dataclass(frozen=True)
class NodeContext:
    """What procedures need from the daemon that runs them."""

    paths: pathutils.Paths = field(default_factory=pathutils.current)
    hooks_timeout: float = constants.DEFAULT_HOOK_TIMEOUT
