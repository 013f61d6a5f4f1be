"""The one result type every node RPC call returns, per node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, cast

from typing_extensions import TypeVar

from ganeti import errors

OFFLINE_MSG = "Node is marked offline"

# a result built without a payload type (a failure, a test) is RpcResult[Any]
T = TypeVar("T", default=Any)


class RpcResult(Generic[T]):
    """Outcome of one call on one node: a payload, or a failure message.

    ``fail_msg`` is None on success.  Offline nodes are never contacted; their
    result has ``offline=True`` and a failure message so that callers that do
    not special-case offline nodes still treat them as failed.  ``T`` is the
    payload's (JSON) type, from the procedure's return annotation; the payload
    is None when the call failed, so check ``fail_msg`` first.
    """

    __slots__ = ("call", "data", "fail_msg", "node", "offline")

    def __init__(self, node: str, data: T | None = None, fail_msg: str | None = None,
                 offline: bool = False, call: str = "") -> None:
        self.node = node
        self.call = call
        self.offline = offline
        if offline and not fail_msg:
            fail_msg = OFFLINE_MSG
        self.fail_msg = fail_msg or None
        self.data: T | None = None if self.fail_msg else data

    @property
    def payload(self) -> T:
        """The procedure's result (None, whatever ``T`` says, if the call failed)."""
        return cast(T, self.data)

    @property
    def failed(self) -> bool:
        return self.fail_msg is not None

    def _describe(self) -> str:
        msg = self.fail_msg or ""
        return msg if self.node in msg else f"node {self.node}: {msg}"

    def raise_on_failure(self, msg_prefix: str | None = None, prereq: bool = False,
                         ecode: str = errors.ECODE_ENVIRON) -> None:
        """Raise OpExecError (OpPrereqError if ``prereq``) naming node and reason."""
        if self.fail_msg is None:
            return
        text = self._describe()
        if msg_prefix:
            text = f"{msg_prefix}: {text}"
        if prereq:
            raise errors.OpPrereqError(text, ecode)
        raise errors.OpExecError(text)

    def warn(self, log_fn: Callable[[str], Any], msg_prefix: str | None = None) -> bool:
        """Report a failure through ``log_fn``; returns True if there was one."""
        if self.fail_msg is None:
            return False
        text = self._describe()
        log_fn(f"{msg_prefix}: {text}" if msg_prefix else text)
        return True

    def __repr__(self) -> str:
        state = ("offline" if self.offline else f"fail_msg={self.fail_msg!r}"
                 if self.fail_msg else f"payload={self.data!r}")
        return f"RpcResult({self.node!r}, {self.call!r}, {state})"
