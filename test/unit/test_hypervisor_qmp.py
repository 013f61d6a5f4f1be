"""The QMP client against a scripted server (no qemu needed)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import errors
from ganeti.hypervisor.qmp import QmpClient

Handler = Callable[[dict[str, Any]], list[dict[str, Any]]]


class FakeQmpServer:
    """Accepts one client, greets it, answers each request with the handler's messages."""

    def __init__(self, path: Path, handler: Handler, greeting: Any = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self._handler = handler
        self._greeting = greeting if greeting is not None else {
            "QMP": {"version": {}, "capabilities": []}}
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # a deep directory is reached through its /proc fd link, like the client does
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            self._listener.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(json.dumps(self._greeting).encode() + b"\r\n")
            stream.flush()
            for line in stream:
                request = json.loads(line)
                self.requests.append(request)
                for message in self._handler(request):
                    if message.get("id") == "same":
                        message["id"] = request.get("id")
                    stream.write(json.dumps(message).encode() + b"\r\n")
                stream.flush()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=60)


def standard(request: dict[str, Any]) -> list[dict[str, Any]]:
    command = request["execute"]
    if command == "query-status":
        return [{"event": "RESUME", "timestamp": {}},
                {"return": {"status": "stale"}, "id": -5},
                {"return": {"status": "running", "running": True}, "id": "same"}]
    if command == "bogus":
        return [{"error": {"class": "CommandNotFound", "desc": "no bogus here"}, "id": "same"}]
    return [{"return": {}, "id": "same"}]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., FakeQmpServer]]:
    servers: list[FakeQmpServer] = []

    def start(path: Path | None = None, handler: Handler = standard,
              greeting: Any = None) -> FakeQmpServer:
        server = FakeQmpServer(path or tmp_path / "qmp.sock", handler, greeting)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.close()


def test_commands_events_and_errors(serve: Callable[..., FakeQmpServer],
                                    tmp_path: Path) -> None:
    server = serve()
    with QmpClient(tmp_path / "qmp.sock", timeout=30) as client:
        assert client.execute("query-status") == {"status": "running", "running": True}
        assert client.events and client.events[0]["event"] == "RESUME"
        with pytest.raises(errors.HypervisorError, match="no bogus here"):
            client.execute("bogus")
        assert client.execute("system_powerdown") == {}
    assert [r["execute"] for r in server.requests] == [
        "qmp_capabilities", "query-status", "bogus", "system_powerdown"]


def test_socket_path_longer_than_sun_path(serve: Callable[..., FakeQmpServer],
                                          tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    assert len(str(deep / "qmp.sock")) > 108
    serve(deep / "qmp.sock")
    with QmpClient(deep / "qmp.sock", timeout=30) as client:
        assert client.execute("query-status")["status"] == "running"


def test_not_a_qmp_server(serve: Callable[..., FakeQmpServer], tmp_path: Path) -> None:
    serve(greeting={"hello": "world"})
    with pytest.raises(errors.HypervisorError, match="Not a QMP greeting"):
        QmpClient(tmp_path / "qmp.sock", timeout=30).connect()


def test_nothing_listening(tmp_path: Path) -> None:
    with pytest.raises(errors.HypervisorError, match=r"QMP connection .* failed"):
        QmpClient(tmp_path / "absent.sock", timeout=1).connect()
    with pytest.raises(errors.HypervisorError, match="not connected"):
        QmpClient(tmp_path / "absent.sock").execute("query-status")
