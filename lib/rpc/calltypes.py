"""Building blocks of the RPC call table (kept apart so the contract and stubs can import them)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ganeti import pathutils

# Timeout classes (seconds)
TMO_URGENT = 60.0
TMO_FAST = 10.0
TMO_NORMAL = 60.0
TMO_SLOW = 900.0
TMO_4HRS = 4 * 3600.0
TMO_1DAY = 24 * 3600.0
TIMEOUT_CLASSES: Mapping[str, float] = MappingProxyType({
    "fast": TMO_FAST,
    "normal": TMO_NORMAL,
    "slow": TMO_SLOW,
    "long": TMO_4HRS,
    "day": TMO_1DAY,
})

# Keyword the generated methods take to override a call's timeout
TIMEOUT_KW = "timeout"


@dataclass(frozen=True)
class Arg:
    """One argument of a call; ``encoder`` maps the caller's value to the wire value."""

    name: str
    encoder: Callable[[Any], Any] | None = None


# Computes the timeout from the call's (unencoded) arguments
TimeoutFn = Callable[[Mapping[str, Any]], float]
# Rewrites all arguments at once (e.g. read a local file): gets the master's paths
# and the call's arguments, returns the wire arguments
PrepareFn = Callable[..., list[Any]]


@dataclass(frozen=True)
class RpcCall:
    name: str
    procedure: str
    timeout: str | TimeoutFn
    args: tuple[Arg, ...] = ()
    single_node: bool = False
    prepare: PrepareFn | None = None
    doc: str = ""

    def timeout_for(self, values: Mapping[str, Any]) -> float:
        if callable(self.timeout):
            return float(self.timeout(values))
        return TIMEOUT_CLASSES[self.timeout]

    def encode_args(self, paths: pathutils.Paths, values: Mapping[str, Any]) -> list[Any]:
        if self.prepare is not None:
            return self.prepare(paths, *(values[arg.name] for arg in self.args))
        return [arg.encoder(values[arg.name]) if arg.encoder else values[arg.name]
                for arg in self.args]


class Base64Text(str):
    """A wire argument holding base64 output: JSON needs no escapes in it, so the
    RPC body embeds it as it is (json.dumps scans all 10 MB of a config upload
    for characters to escape).  Only ever made from ``base64.b64encode``."""

    __slots__ = ()
