"""A minimal client for qemu-guest-agent over its virtio-serial chardev socket.

The socket is QEMU's end of the ``org.qemu.guest_agent.0`` port: it accepts
a connection whether or not an agent runs in the guest, and requests nobody
reads are simply never answered.  So every exchange has a short timeout, and
the session starts with ``guest-sync-delimited``: the agent answers it with a
0xFF byte before the reply, which separates the reply from anything an
earlier, timed-out session left in the channel.
"""

from __future__ import annotations

import json
import random
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ganeti import errors
from ganeti.hypervisor.qmp import _connect

_DELIMITER = b"\xff"
_MAX_LINE = 1 << 20


class AgentUnavailable(errors.HypervisorError):
    """No guest agent answered (none installed, not started, or hung)."""


class QgaClient:
    """One guest-agent session; use as a context manager (connects and syncs)."""

    def __init__(self, path: Path, timeout: float = 1.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            _connect(sock, self.path)
        except OSError as err:
            sock.close()
            raise AgentUnavailable(f"No guest agent channel at {self.path}: {err}") from None
        self._sock = sock
        try:
            self.sync()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def sync(self) -> None:
        """guest-sync-delimited with a random id; AgentUnavailable if nobody answers."""
        token = random.randrange(1, 1 << 31)
        # a leading 0xFF makes the agent's parser drop a half request of an older session
        self._send(_DELIMITER + self._request("guest-sync-delimited", {"id": token}))
        deadline = time.monotonic() + self.timeout
        self._skip_to_delimiter(deadline)
        while True:
            reply = self._read_reply(deadline, "guest-sync-delimited")
            if reply.get("return") == token:
                return

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run ``command``; its ``return`` value, HypervisorError on ``error``."""
        self._send(self._request(command, arguments))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        reply = self._read_reply(deadline, command)
        if "error" in reply:
            error = reply["error"]
            desc = error.get("desc") if isinstance(error, dict) else error
            raise errors.HypervisorError(f"Guest agent command {command} failed: {desc}")
        return reply.get("return")

    @staticmethod
    def _request(command: str, arguments: dict[str, Any] | None) -> bytes:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        return json.dumps(request).encode("utf-8") + b"\n"

    def _send(self, data: bytes) -> None:
        if self._sock is None:
            raise errors.HypervisorError("Guest agent client is not connected")
        try:
            self._sock.sendall(data)
        except OSError as err:
            raise AgentUnavailable(f"Guest agent channel {self.path} failed: {err}") from None

    def _fill(self, deadline: float, command: str) -> None:
        assert self._sock is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise AgentUnavailable(f"No answer from the guest agent to {command}")
        self._sock.settimeout(left)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise AgentUnavailable(
                f"No answer from the guest agent to {command}") from None
        except OSError as err:
            raise AgentUnavailable(f"Guest agent channel {self.path} failed: {err}") from None
        if not chunk:
            raise AgentUnavailable(f"Guest agent channel {self.path} closed")
        self._buffer += chunk
        if len(self._buffer) > _MAX_LINE:
            raise errors.HypervisorError(f"Oversized guest agent message from {self.path}")

    def _skip_to_delimiter(self, deadline: float) -> None:
        while _DELIMITER not in self._buffer:
            self._buffer = b""
            self._fill(deadline, "guest-sync-delimited")
        self._buffer = self._buffer.split(_DELIMITER)[-1]

    def _read_reply(self, deadline: float, command: str) -> dict[str, Any]:
        while True:
            while b"\n" not in self._buffer:
                self._fill(deadline, command)
            line, self._buffer = self._buffer.split(b"\n", 1)
            line = line.strip().lstrip(_DELIMITER)
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue   # noise of an older session
            if isinstance(message, dict) and ("return" in message or "error" in message):
                return message
