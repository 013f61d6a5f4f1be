"""A minimal client for QEMU's QMP: JSON objects, one per line, over a unix socket.

After the greeting the client must send ``qmp_capabilities``; then every
command gets exactly one ``return`` or ``error`` reply, possibly preceded by
asynchronous ``event`` messages, which are kept but otherwise skipped.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ganeti import errors

# sun_path is 108 bytes including the terminating NUL
_MAX_SOCKET_PATH = 107
_MAX_LINE = 1 << 20


class QmpClient:
    """One QMP session; use as a context manager."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0

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
            self._sock = sock
            greeting = self._read_message()
            if "QMP" not in greeting:
                raise errors.HypervisorError(f"Not a QMP greeting on {self.path}: {greeting}")
            self.execute("qmp_capabilities")
        except OSError as err:
            self.close()
            sock.close()
            raise errors.HypervisorError(f"QMP connection to {self.path} failed: {err}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; returns its ``return`` value, raises HypervisorError on ``error``."""
        if self._sock is None:
            raise errors.HypervisorError("QMP client is not connected")
        self._next_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            request["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
            while True:
                message = self._read_message()
                if "event" in message:
                    self.events.append(message)
                    continue
                if message.get("id") != self._next_id:
                    continue
                if "error" in message:
                    error = message["error"]
                    desc = error.get("desc") if isinstance(error, dict) else error
                    raise errors.HypervisorError(f"QMP command {command} failed: {desc}")
                return message.get("return")
        except OSError as err:
            raise errors.HypervisorError(f"QMP command {command} failed: {err}") from None

    def _read_message(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_LINE:
                raise errors.HypervisorError(f"Oversized QMP message from {self.path}")
            chunk = self._sock.recv(65536)
            if not chunk:
                raise errors.HypervisorError(f"QMP connection to {self.path} closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            raise errors.HypervisorError(f"Invalid QMP message: {line[:200]!r}") from None
        if not isinstance(message, dict):
            raise errors.HypervisorError(f"Invalid QMP message: {line[:200]!r}")
        return message


def _connect(sock: socket.socket, path: Path) -> None:
    """Connect, going through /proc/self/fd when the path is too long for sun_path."""
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        sock.connect(str(path))
        return
    dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dir_fd}/{path.name}")
    finally:
        os.close(dir_fd)
