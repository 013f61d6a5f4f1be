"""The test suite's fault proxy itself: each fault does what it says."""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterator

import pytest
from support.faultproxy import FaultProxy, Faults


@pytest.fixture
def echo() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:  # the proxy reset the connection
            pass


def _roundtrip(port: int, payload: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as err:
            # a reset that arrived before shutdown() shows up as ENOTCONN
            if err.errno == errno.ENOTCONN:
                raise ConnectionResetError(errno.ECONNRESET, "reset by peer") from err
            raise
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_clean_latency_and_rate_forward_everything(echo: int) -> None:
    payload = bytes(range(256)) * 1024
    for faults in (Faults(), Faults(latency=0.01), Faults(rate=4 << 20)):
        with FaultProxy("127.0.0.1", "127.0.0.1", echo, faults) as proxy:
            assert _roundtrip(proxy.port, payload) == payload
            assert proxy.counters.bytes == 2 * len(payload)


def test_reset_after_n_bytes(echo: int) -> None:
    with FaultProxy("127.0.0.1", "127.0.0.1", echo, Faults(reset_after=1000)) as proxy:
        with pytest.raises(ConnectionResetError):
            _roundtrip(proxy.port, b"x" * 100000)
        assert proxy.counters.resets == 1


def test_cut_stalls_until_the_client_times_out(echo: int) -> None:
    with FaultProxy("127.0.0.1", "127.0.0.1", echo, Faults(cut_after=10)) as proxy:
        with pytest.raises(TimeoutError):
            _roundtrip(proxy.port, b"x" * 1000, timeout=0.5)
        assert proxy.counters.cuts == 1


def test_faults_for_the_first_connections_only(echo: int) -> None:
    with FaultProxy("127.0.0.1", "127.0.0.1", echo) as proxy:
        proxy.set_faults(Faults(cut_after=10, connections=1))
        with pytest.raises(TimeoutError):
            _roundtrip(proxy.port, b"x" * 1000, timeout=0.5)
        # the next connection passes untouched
        assert _roundtrip(proxy.port, b"y" * 1000) == b"y" * 1000
        assert proxy.counters.cuts == 1
        # set_faults counts again from zero
        proxy.set_faults(Faults(refuse=True, connections=1))
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            _roundtrip(proxy.port, b"z")
        assert _roundtrip(proxy.port, b"z") == b"z"
        assert proxy.counters.refused == 1


def test_refuse_and_loopback_only(echo: int) -> None:
    with FaultProxy("127.0.0.1", "127.0.0.1", echo, Faults(refuse=True)) as proxy:
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            _roundtrip(proxy.port, b"hello")
        assert proxy.counters.refused == 1
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("127.0.0.1", "10.1.2.3", echo)
