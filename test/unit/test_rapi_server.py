"""The RAPI HTTP server in process: TLS with rapi.pem, limits, authentication, framing.

A real server on a loopback socket with a real certificate and users file;
the backend (masterd) is a stub, since these resources never reach it.
"""

from __future__ import annotations

import base64
import dataclasses
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import bootstrap, crypto, limits, pathutils
from ganeti.rapi import auth, resources, routes
from ganeti.server import rapi as rapi_server

WAIT = 20.0


class NoMaster:
    def client(self) -> Any:
        raise AssertionError("these requests must not reach masterd")


@dataclasses.dataclass
class Running:
    server: rapi_server.RapiServer
    paths: pathutils.Paths

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> pathutils.Paths:
    paths = pathutils.Paths.for_root(tmp_path_factory.mktemp("rapi"))
    bootstrap.write_rapi_certificate(paths, ["node1.example", "localhost"], ["127.0.0.1"])
    paths.rapi_users.parent.mkdir(parents=True)
    paths.rapi_users.write_text("admin secret write\nreader secret\n")
    return paths


def _start(paths: pathutils.Paths, **limit_changes: Any) -> rapi_server.RapiServer:
    resources.load_all()
    server = rapi_server.RapiServer(
        ("127.0.0.1", 0), rapi_server.CertificateFile(paths.rapi_cert),
        auth.UsersFile(paths.rapi_users), NoMaster(),
        dataclasses.replace(rapi_server.DEFAULT_LIMITS, **limit_changes))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def running(paths: pathutils.Paths) -> Iterator[Running]:
    server = _start(paths, request_timeout=1.0, idle_timeout=2.0)
    try:
        yield Running(server, paths)
    finally:
        server.shutdown()
        server.server_close()


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _auth(user: str = "admin", password: str = "secret") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode())
            .decode()}


def _get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
         body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=WAIT, context=_insecure())
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _tls(port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return _insecure().wrap_socket(raw)


def _read_all(sock: ssl.SSLSocket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_certificate_verifies_for_the_masters_name_and_address(running: Running) -> None:
    """rapi.pem is its own CA file: verification by address and by name succeeds."""
    for host in ("127.0.0.1", "localhost"):
        ctx = ssl.create_default_context(cafile=str(running.paths.rapi_cert))
        conn = http.client.HTTPSConnection(host, running.port, timeout=WAIT, context=ctx)
        conn.request("GET", "/version", headers=_auth())
        resp = conn.getresponse()
        assert (resp.status, json.loads(resp.read())) == (200, 2)
        conn.close()
    ctx = ssl.create_default_context(cafile=str(running.paths.rapi_cert))
    with socket.create_connection(("127.0.0.1", running.port), timeout=WAIT) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname="other.example")


def test_unauthenticated_gets_401_with_the_realm(running: Running) -> None:
    for headers in ({}, _auth("admin", "wrong"), _auth("ghost", "secret"),
                    {"Authorization": "Basic %%%"}):
        status, answer_headers, body = _get(running.port, "/2/features", headers)
        assert status == 401, headers
        assert answer_headers["WWW-Authenticate"] == 'Basic realm="Ganeti Remote API"'
        assert json.loads(body)["code"] == 401


def test_answers_and_keepalive(running: Running) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", running.port, timeout=WAIT,
                                       context=_insecure())
    for path, expected in (("/version", 2), ("/2/features", ["instance-create-reqv1"]),
                           ("/", None), ("/2", None)):
        conn.request("GET", path, headers=_auth("reader"))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "application/json"
        assert json.loads(resp.read()) == expected
    conn.close()
    # HEAD is no method of Ganeti's RAPI: refused, and without a body
    status, headers, body = _get(running.port, "/version", _auth(), method="HEAD")
    assert (status, headers["Allow"], body) == (405, "GET", b"")


def test_oversized_body_refused_before_it_is_sent(running: Running) -> None:
    with _tls(running.port) as sock:
        size = limits.RAPI_BODY.maximum + 1
        head = (f"PUT /2/features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n"
                f"Authorization: {_auth()['Authorization']}\r\n\r\n").encode()
        sock.sendall(head)  # and not one byte of the body
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer
    body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert body["code"] == 413 and str(limits.RAPI_BODY.maximum) in body["explain"]


def test_expect_100_continue(running: Running) -> None:
    """curl sends Expect: 100-continue before a body: an oversized one is refused at
    once (no 100), a good one is invited and answered."""
    head = ("PUT /2/features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: {_auth()['Authorization']}\r\nExpect: 100-continue\r\n"
            "Content-Length: {}\r\n\r\n")
    with _tls(running.port) as sock:
        sock.sendall(head.format(limits.RAPI_BODY.maximum + 1).encode())
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:80]
    with _tls(running.port) as sock:
        sock.sendall(head.format(2).encode())
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n")
        sock.sendall(b"{}")
        assert sock.recv(65536).startswith(b"HTTP/1.1 405 ")


def test_framing_errors(running: Running) -> None:
    status, _, body = _get(running.port, "/2/features",
                           {**_auth(), "Content-Length": "-1"}, method="PUT")
    assert status == 400 and "Content-Length" in json.loads(body)["explain"]
    with _tls(running.port) as sock:
        sock.sendall(b"PUT /2/features HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n0\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 411 ")
    status, _, body = _get(running.port, "/2/features", _auth(), method="PUT",
                           body=b"{}")
    assert status == 405  # the method is wrong before the media type is
    status, _, body = _get(running.port, "/2/features",
                           {**_auth(), "Content-Type": "text/plain"}, method="GET",
                           body=b"{}")
    assert status == 415 and json.loads(body)["code"] == 415


def test_wrong_method_is_405_with_allow(running: Running) -> None:
    for method in ("DELETE", "PATCH", "OPTIONS"):
        status, headers, body = _get(running.port, "/version", _auth(), method=method)
        assert status == 405, method
        assert headers["Allow"] == "GET"
        assert json.loads(body)["message"] == "Method Not Allowed"


def test_unknown_resource_is_404(running: Running) -> None:
    status, _, body = _get(running.port, "/2/nothing-here", _auth())
    assert status == 404 and json.loads(body)["code"] == 404


def test_slow_headers_closed_at_the_request_deadline(running: Running) -> None:
    with _tls(running.port) as sock:
        sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n")  # never ends the headers
        start = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - start < WAIT


def test_idle_connection_closed(running: Running) -> None:
    with _tls(running.port) as sock:
        start = time.monotonic()
        assert _read_all(sock) == b""
        assert time.monotonic() - start < WAIT


@pytest.fixture
def slow_route() -> Iterator[threading.Event]:
    """A temporary resource that holds its request until the event is set."""
    release = threading.Event()

    @routes.route("/2/test-hold", "GET", access=routes.READ, result="nothing")
    def hold(req: routes.Request) -> Any:
        """Hold the request (test only)."""
        release.wait(WAIT)
        return "held"

    try:
        yield release
    finally:
        release.set()
        del routes.TABLE["/2/test-hold"]


def test_over_the_cap_of_busy_connections_gets_503(paths: pathutils.Paths,
                                                   slow_route: threading.Event) -> None:
    server = _start(paths, max_connections=1)
    try:
        result: list[int] = []
        holder = threading.Thread(
            target=lambda: result.append(_get(server.port, "/2/test-hold", _auth())[0]))
        holder.start()
        deadline = time.monotonic() + WAIT
        while server.gate.active < 1 or any(s.reading for s in
                                            server.gate._slots.values()):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        status, _, body = _get(server.port, "/version", _auth())
        assert status == 503 and json.loads(body)["code"] == 503
        slow_route.set()
        holder.join(WAIT)
        assert result == [200]
        assert _get(server.port, "/version", _auth())[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_users_added_later_work_without_restart(running: Running) -> None:
    users = running.paths.rapi_users
    assert _get(running.port, "/version", _auth("late", "pw"))[0] == 401
    original = users.read_text()
    try:
        tmp = users.with_name("users.new")
        tmp.write_text(original + f"late {{HA1}}{auth.ha1('late', 'pw')}\n")
        tmp.replace(users)
        assert _get(running.port, "/version", _auth("late", "pw"))[0] == 200
    finally:
        users.write_text(original)


def test_ensure_certificate_creates_a_missing_one(tmp_path: Path) -> None:
    paths = pathutils.Paths.for_root(tmp_path)
    paths.data_dir.mkdir(parents=True)
    rapi_server.ensure_certificate(paths, "127.0.0.9")  # no masterd: local names only
    cert = crypto.load_certificate_file(paths.rapi_cert)
    assert "127.0.0.9" in str(cert.extensions)
    assert paths.rapi_cert.stat().st_mode & 0o077 == 0
    before = paths.rapi_cert.read_bytes()
    rapi_server.ensure_certificate(paths, "127.0.0.9")
    assert paths.rapi_cert.read_bytes() == before


def test_the_daemon_parses_its_options() -> None:
    opts = rapi_server.parse_args(["-f", "-d", "--bind", "127.0.0.2", "--port", "0",
                                   "--max-connections", "3"])
    assert (opts.foreground, opts.debug, opts.bind, opts.port, opts.max_connections) \
        == (True, True, "127.0.0.2", 0, 3)
    assert rapi_server.parse_args([]).port == 5080
    with pytest.raises(SystemExit):
        rapi_server.parse_args(["--port", "70000"])


def test_cluster_info_runs_no_program(monkeypatch: pytest.MonkeyPatch) -> None:
    """/2/info's QueryClusterInfo once ran file(1) for the architecture (platform.
    architecture): 8 ms of every answer, and a fork in the threaded master."""
    import platform
    import subprocess

    from ganeti.query_resources import cluster

    expected = [platform.architecture()[0], platform.machine()]  # Ganeti's GetArchInfo

    def no_programs(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a program was run: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", no_programs)
    assert cluster.architecture() == expected


def test_luxi_connection_is_kept_per_http_connection(tmp_path: Path) -> None:
    """One LUXI connection per HTTP connection (thread), not per request; a request
    that failed half-way drops it, and the connection's end closes it."""
    from support import luxi_fakes

    address = tmp_path / "master.sock"
    with luxi_fakes.running_server(address) as server:
        backend = rapi_server.LuxiBackend(str(address))
        for _ in range(3):
            with backend.client() as cl:
                assert cl.query_jobs(None, ["id"]) == []
        assert server.gate.stats.accepted == 1
        with pytest.raises(RuntimeError), backend.client() as cl:
            cl.query_jobs(None, ["id"])
            raise RuntimeError("the handler failed mid-way")
        with backend.client() as cl:
            cl.query_jobs(None, ["id"])
        assert server.gate.stats.accepted == 2

        def other_connection() -> None:
            with backend.client() as cl:
                cl.query_jobs(None, ["id"])
            backend.end_thread()

        thread = threading.Thread(target=other_connection)
        thread.start()
        thread.join(WAIT)
        assert server.gate.stats.accepted == 3
        backend.end_thread()
        deadline = time.monotonic() + WAIT
        while server.gate.active:  # both threads' connections were closed
            assert time.monotonic() < deadline
            time.sleep(0.01)


def _peer_cert(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw, \
            _insecure().wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_replaced_certificate_serves_new_connections(tmp_path: Path) -> None:
    paths = pathutils.Paths.for_root(tmp_path)
    bootstrap.write_rapi_certificate(paths, ["old.example"], ["127.0.0.1"])
    paths.rapi_users.parent.mkdir(parents=True)
    paths.rapi_users.write_text("admin secret write\n")
    server = _start(paths)
    try:
        first = _peer_cert(server.port)
        assert first == ssl.PEM_cert_to_DER_cert(
            crypto._cert_pem(crypto.load_certificate_file(paths.rapi_cert)))
        bootstrap.write_rapi_certificate(paths, ["new.example"], ["127.0.0.1"])
        second = _peer_cert(server.port)
        assert second != first
        assert b"new.example" in second
        # a broken file is not taken: the last good certificate stays
        paths.rapi_cert.write_text("-----BEGIN CERTIFICATE-----\nbroken\n")
        assert _peer_cert(server.port) == second
        assert _get(server.port, "/version", _auth())[0] == 200
    finally:
        server.shutdown()
        server.server_close()
