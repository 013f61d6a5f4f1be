"""Connection abuse against the real server classes on real sockets (ganeti.server.connlimit).

LUXI server, node daemon and transfer receiver: connection cap with an error
reply, idle and half-written requests timed out, a memory budget for
unfinished requests, a failed thread start survived, EMFILE backed off with a
bounded number of log lines (in a subprocess with a low RLIMIT_NOFILE).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.luxi_fakes import FakeContext, FakeQueue

from ganeti import crypto, errors, luxi, pathutils
from ganeti.backend import NodeContext
from ganeti.server import connlimit, luxi_server, noded
from ganeti.storage.extents import DiskReader, DiskWriter
from ganeti.transfer import COMPRESS_NONE, TransferError
from ganeti.transfer import protocol as proto
from ganeti.transfer.node import registry
from ganeti.transfer.node.sender import connect

WAIT = 30.0  # generous: other test processes share two cores


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _closed_by_peer(sock: socket.socket, timeout: float = WAIT) -> bool:
    """True once the server closed (EOF or reset); False if still open after ``timeout``."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def _drip(sock: socket.socket, data: bytes, interval: float, limit: float) -> bool:
    """Send ``data`` a byte at a time; True if the server cut us off within ``limit``."""
    deadline = time.monotonic() + limit
    for byte in data:
        if time.monotonic() > deadline:
            return False
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return True
        time.sleep(interval)
        try:
            sock.setblocking(False)
            if sock.recv(4096) == b"":
                return True
        except (BlockingIOError, ssl.SSLWantReadError):
            pass
        except OSError:
            return True
        finally:
            sock.setblocking(True)
    return False


# --- the building blocks ----------------------------------------------------------------


def test_rate_limited_log_counts_what_it_suppressed(caplog: pytest.LogCaptureFixture) -> None:
    log = connlimit.RateLimitedLog(logging.getLogger("test.rl"), interval=0.2)
    with caplog.at_level(logging.INFO, "test.rl"):
        written = sum(log.log(logging.ERROR, "emfile", "accept: %s", "EMFILE")
                      for _ in range(10_000))
        assert written == 1
        time.sleep(0.25)
        assert log.log(logging.ERROR, "emfile", "accept: %s", "EMFILE")
        assert log.log(logging.ERROR, "other", "something else")  # own budget
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "9999 similar message(s) suppressed" in lines[1]


def test_accept_backoff_grows_and_resets() -> None:
    backoff = connlimit.AcceptBackoff(first=0.01, maximum=0.08)
    assert [backoff.failed() for _ in range(6)] == [0.01, 0.02, 0.04, 0.08, 0.08, 0.08]
    backoff.succeeded()
    assert backoff.failed() == 0.01


def test_watchdog_shuts_down_late_sockets_and_forgets_cancelled_ones() -> None:
    dog = connlimit.Watchdog()
    left, right = socket.socketpair()
    with left, right:
        for _ in range(10_000):  # one per request that finished in time
            dog.cancel(dog.arm(left, 100))
        assert len(dog._heap) < 200
        late = dog.arm(left, 0.1)
        left.settimeout(WAIT)
        assert left.recv(1) == b""  # woken by the shutdown, not by data
        assert late.expired and dog.expired == 1


def test_limit_options_parse_and_refuse_nonsense() -> None:
    import argparse
    parser = argparse.ArgumentParser()
    connlimit.add_options(parser, luxi_server.DEFAULT_LIMITS, luxi_server.OPTION_FIELDS)
    opts = parser.parse_args(["--max-connections", "7", "--idle-timeout", "1.5"])
    limits = connlimit.from_options(opts, luxi_server.DEFAULT_LIMITS)
    assert (limits.max_connections, limits.idle_timeout) == (7, 1.5)
    assert limits.request_timeout == luxi_server.DEFAULT_LIMITS.request_timeout
    for bad in (["--max-connections", "0"], ["--idle-timeout", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


# --- LUXI server ------------------------------------------------------------------------


@pytest.fixture
def address(tmp_path: Path) -> Path:
    return tmp_path / "run" / "ganeti-master"


# a LUXI method that keeps its connection busy until the test lets it go
RELEASE = threading.Event()


def _block() -> bool:
    return RELEASE.wait(WAIT)


@contextmanager
def luxi_running(address: Path, max_message: int = 1 << 20,
                 **limits: Any) -> Iterator[luxi_server.LuxiServer]:
    backend = luxi_server.MasterBackend(FakeQueue(), FakeContext())
    methods = {**luxi_server.build_method_table(backend),
               "Block": luxi_server.Method(_block, ())}
    server = luxi_server.LuxiServer(
        address, methods, max_message=max_message,
        limits=dataclasses.replace(luxi_server.DEFAULT_LIMITS, **limits))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _raw(address: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(str(address))
    return sock


def _works(address: Path) -> bool:
    with luxi.Client(str(address), timeout=WAIT) as cl:
        return cl.query_jobs(None, ["id"]) == []


def test_luxi_at_the_cap_idle_and_unfinished_connections_make_room(address: Path) -> None:
    with luxi_running(address, max_connections=4) as server:
        held = [_raw(address) for _ in range(4)]
        held[1].sendall(b'{"method": "Que')  # half-written
        _wait_for(lambda: server.gate.active == 4, "4 connections served")
        newcomers = []
        for _ in range(3):  # each (staying) newcomer takes the longest-waiting one's slot
            cl = luxi.Client(str(address), timeout=WAIT)
            assert cl.query_jobs(None, ["id"]) == []
            newcomers.append(cl)
        assert [_closed_by_peer(sock, timeout=2) for sock in held] == \
            [True, True, True, False]
        assert server.gate.stats.evicted == 3 and server.gate.stats.peak == 4
        assert server.gate.stats.refused == 0
        for sock in held:
            sock.close()
        for cl in newcomers:
            cl.close()
        _wait_for(lambda: server.gate.active == 0, "connections released")


def test_luxi_over_the_cap_of_busy_connections_gets_a_typed_error(address: Path) -> None:
    RELEASE.clear()
    with luxi_running(address, max_connections=2) as server:
        callers = [threading.Thread(target=lambda: luxi.Client(
            str(address), timeout=WAIT).call_method("Block", [])) for _ in range(2)]
        try:
            for thread in callers:
                thread.start()
            _wait_for(lambda: server.gate.active == 2 and not any(
                s.reading for s in server.gate._slots.values()), "2 requests running")
            for _ in range(3):
                with pytest.raises(errors.ServerBusyError, match="maximum of 2"):
                    _works(address)
            assert server.gate.stats.refused == 3
        finally:
            RELEASE.set()
            for thread in callers:
                thread.join(WAIT)
        _wait_for(lambda: server.gate.active == 0, "connections released")
        assert _works(address)


def test_luxi_idle_connection_closed(address: Path) -> None:
    with luxi_running(address, idle_timeout=0.3) as server:
        sock = _raw(address)
        assert _closed_by_peer(sock, timeout=10), "idle connection still open"
        sock.close()
        _wait_for(lambda: server.gate.active == 0, "slot released")
        # a client reusing a connection the server closed as idle just reconnects
        with luxi.Client(str(address), timeout=WAIT) as cl:
            assert cl.query_jobs(None, ["id"]) == []
            time.sleep(0.6)
            assert cl.query_jobs(None, ["id"]) == []


def test_luxi_half_written_request_timed_out(address: Path) -> None:
    with luxi_running(address, request_timeout=0.5) as server:
        sock = _raw(address)
        request = json.dumps(luxi.format_request("QueryJobs", [None, ["id"]])).encode()
        # one byte every 0.1 s: each read is quick, the request never completes
        assert _drip(sock, request * 10, 0.1, 15), "slow request not cut off"
        sock.close()
        _wait_for(lambda: server.gate.active == 0, "slot released")
        assert _works(address)


def test_luxi_half_written_request_gets_the_reason(address: Path) -> None:
    with luxi_running(address, request_timeout=0.3) as server:
        sock = _raw(address)
        sock.sendall(b'{"method": "QueryJobs", "ar')
        reply = luxi.MessageStream(sock).recv()
        assert reply["success"] is False
        err = errors.decode(reply["result"])
        assert isinstance(err, errors.TimeoutError) and "--request-timeout" in str(err)
        sock.close()
        _wait_for(lambda: server.gate.active == 0, "slot released")


def test_luxi_unfinished_requests_share_a_memory_budget(address: Path) -> None:
    part = b'"' + b"a" * (700 * 1024)
    with luxi_running(address, max_message=4 << 20, max_buffered=1 << 20) as server:
        budget = server.budget
        assert budget is not None
        first = _raw(address)
        first.sendall(part)
        _wait_for(lambda: budget.used >= 700 * 1024, "first request buffered")
        second = _raw(address)
        try:
            second.sendall(part)
        except OSError:
            pass
        reply = luxi.MessageStream(second).recv()
        err = errors.decode(reply["result"])
        assert isinstance(err, errors.ServerBusyError) and "--max-buffered" in str(err)
        assert budget.peak <= budget.total
        # the first one still completes (and gets its answer: not a valid request)
        first.sendall(b'"\x03')
        reply = luxi.MessageStream(first).recv()
        assert "must be a JSON object" in str(errors.decode(reply["result"]))
        first.close()
        second.close()
        _wait_for(lambda: server.gate.active == 0 and budget.used == 0, "budget returned")


def _failing_thread_start(monkeypatch: pytest.MonkeyPatch, name: str, times: int) -> list[int]:
    real_start = threading.Thread.start
    failed: list[int] = []

    def start(self: threading.Thread) -> None:
        if self.name == name and len(failed) < times:
            failed.append(1)
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return failed


def test_luxi_failed_thread_start_is_survived(address: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with luxi_running(address) as server:
        failed = _failing_thread_start(monkeypatch, "luxi-client", 3)
        for _ in range(3):
            with pytest.raises(errors.ServerBusyError, match="cannot start a thread"):
                _works(address)
        assert len(failed) == 3 and server.gate.stats.thread_failures == 3
        assert server.gate.active == 0
        assert _works(address)


EMFILE_SERVER = textwrap.dedent("""
    import logging, resource, sys, time
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from support.luxi_fakes import FakeContext, FakeQueue
    from ganeti.server import luxi_server
    logging.basicConfig(filename=sys.argv[2], level=logging.INFO)
    backend = luxi_server.MasterBackend(FakeQueue(), FakeContext())
    server = luxi_server.LuxiServer(Path(sys.argv[1]), luxi_server.build_method_table(backend))
    server.start()
    import os
    used = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, resource.getrlimit(
        resource.RLIMIT_NOFILE)[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    s = server.gate.stats
    print(s.accepted, s.resource_errors, flush=True)
    server.stop()
""")


def test_luxi_out_of_descriptors_backs_off_logs_little_and_recovers(
        address: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", EMFILE_SERVER, str(address), str(log),
         str(Path(__file__).parent)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        held = [_raw(address) for _ in range(40)]  # 8 free descriptors: most wait
        time.sleep(3)
        lines = [line for line in log.read_text().splitlines() if "accept" in line]
        assert 1 <= len(lines) <= 3, lines  # one line per 5 s, not one per attempt
        assert "Too many open files" in lines[0]
        for sock in held:
            sock.close()
        # descriptors free again: the server accepts and answers
        assert _works(address)
        proc.stdin.write("\n")
        proc.stdin.flush()
        accepted, resource_errors = map(int, proc.stdout.readline().split())
        assert resource_errors >= 1 and accepted >= 1
        assert proc.wait(WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- node daemon ------------------------------------------------------------------------


@dataclasses.dataclass
class Node:
    server: noded.NodeRpcServer
    client_ctx: ssl.SSLContext

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def node_certs(tmp_path_factory: pytest.TempPathFactory) -> pathutils.Paths:
    paths = pathutils.Paths.for_root(tmp_path_factory.mktemp("node"))
    ca_cert, ca_key = crypto.generate_cluster_ca("abuse.example.com", 5)
    cert, key = crypto.generate_node_certificate(ca_cert, ca_key, "node", ["127.0.0.1"], 5)
    crypto.write_pem_pair(paths.node_cert_file, cert, key)
    paths.cluster_ca_file.write_text(ca_cert)
    return paths


@contextmanager
def noded_running(paths: pathutils.Paths, **limits: Any) -> Iterator[Node]:
    ctx = crypto.server_ssl_context(paths.node_cert_file, paths.cluster_ca_file)
    server = noded.NodeRpcServer(
        ("127.0.0.1", 0), ctx, NodeContext(paths=paths),
        {"ping": lambda _ctx: True, "hold": lambda _ctx: RELEASE.wait(WAIT)},
        limits=dataclasses.replace(noded.DEFAULT_LIMITS, **limits))
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    client = crypto.client_ssl_context(paths.node_cert_file, paths.cluster_ca_file)
    try:
        yield Node(server, client)
    finally:
        server.shutdown()
        server.server_close()


def _ping(node: Node) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=node.client_ctx,
                                       timeout=WAIT)
    try:
        conn.request("POST", "/ping", body=b"[]")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _tls(node: Node) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", node.port), timeout=WAIT)
    return node.client_ctx.wrap_socket(raw, server_side=False)


# a TLS record header announcing a 16 KiB handshake record, then its body
_CLIENT_HELLO_DRIP = b"\x16\x03\x01\x40\x00" + b"\x01" * 400


def test_noded_handshake_has_a_total_deadline(node_certs: pathutils.Paths) -> None:
    with noded_running(node_certs, handshake_timeout=0.5) as node:
        silent = socket.create_connection(("127.0.0.1", node.port), timeout=WAIT)
        assert _closed_by_peer(silent, timeout=10), "half-open handshake kept open"
        silent.close()
        # each byte comes well within any per-read timeout; the whole never does
        dripper = socket.create_connection(("127.0.0.1", node.port), timeout=WAIT)
        assert _drip(dripper, _CLIENT_HELLO_DRIP, 0.05, 15), "dripped handshake kept open"
        dripper.close()
        _wait_for(lambda: node.server.gate.active == 0, "slots released")
        assert _ping(node) == (200, [True, True])


def test_noded_slow_headers_and_idle_keepalive_closed(node_certs: pathutils.Paths) -> None:
    with noded_running(node_certs, request_timeout=0.5, idle_timeout=0.5) as node:
        idle = _tls(node)
        assert _closed_by_peer(idle, timeout=10), "idle keep-alive connection kept open"
        idle.close()
        slow = _tls(node)
        headers = b"POST /ping HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 400
        assert _drip(slow, headers, 0.05, 15), "slow-loris headers kept open"
        slow.close()
        _wait_for(lambda: node.server.gate.active == 0, "slots released")
        assert _ping(node) == (200, [True, True])


def _call(node: Node, procedure: str) -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=node.client_ctx,
                                       timeout=WAIT)
    try:
        conn.request("POST", f"/{procedure}", body=b"[]")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_noded_at_the_cap_idle_and_handshaking_connections_make_room(
        node_certs: pathutils.Paths) -> None:
    with noded_running(node_certs, max_connections=3) as node:
        held = [_tls(node), socket.create_connection(("127.0.0.1", node.port)), _tls(node)]
        _wait_for(lambda: node.server.gate.active == 3, "3 connections served")
        newcomers = []
        for _ in range(2):  # each (staying) newcomer takes the longest-waiting one's slot
            conn = http.client.HTTPSConnection("127.0.0.1", node.port,
                                               context=node.client_ctx, timeout=WAIT)
            conn.request("POST", "/ping", body=b"[]")
            assert conn.getresponse().read() == b"[true, true]"
            newcomers.append(conn)
        closed = [_closed_by_peer(sock, timeout=2) for sock in held]
        assert sorted(closed) == [False, True, True] and closed[2] is False
        assert node.server.gate.stats.evicted == 2 and node.server.gate.stats.peak == 3
        for sock in held:
            sock.close()
        for conn in newcomers:
            conn.close()


def test_noded_over_the_cap_of_busy_connections_gets_503(node_certs: pathutils.Paths) -> None:
    RELEASE.clear()
    with noded_running(node_certs, max_connections=2) as node:
        holders = [threading.Thread(target=_call, args=(node, "hold")) for _ in range(2)]
        try:
            for thread in holders:
                thread.start()
            _wait_for(lambda: node.server.gate.active == 2 and not any(
                s.reading for s in node.server.gate._slots.values()), "2 requests running")
            status, body = _ping(node)
            assert status == 503 and body[0] is False and "maximum of 2" in body[1]
        finally:
            RELEASE.set()
            for thread in holders:
                thread.join(WAIT)
        _wait_for(lambda: node.server.gate.active == 0, "slots released")
        assert _ping(node) == (200, [True, True])


def test_noded_failed_thread_start_is_survived(node_certs: pathutils.Paths,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with noded_running(node_certs) as node:
        failed = _failing_thread_start(monkeypatch, "noded-conn", 3)
        for _ in range(3):
            with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
                _ping(node)
        assert len(failed) == 3 and node.server.gate.stats.thread_failures == 3
        assert node.server.gate.active == 0
        assert _ping(node) == (200, [True, True])


# --- transfer receiver ------------------------------------------------------------------


def _stream_ctx(paths: pathutils.Paths, server: bool) -> ssl.SSLContext:
    make = crypto.server_ssl_context if server else crypto.client_ssl_context
    return make(paths.node_cert_file, paths.cluster_ca_file)


def test_transfer_strangers_holding_handshakes_do_not_block_the_sender(
        node_certs: pathutils.Paths, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(os.urandom(256 * 1024))
    dest = tmp_path / "dest"
    # each stranger may hold its handshake for 3 s; the sender waits 5 s for its own
    recv_opts = registry.StreamOptions(connect_timeout=3, listen_timeout=WAIT,
                                       progress_timeout=WAIT)
    recv = registry.start_receive(
        "abuse-r1", "test", "127.0.0.1", _stream_ctx(node_certs, True), "magic-abuse-1",
        None, lambda n: DiskWriter.create(dest, n), lambda: dest.unlink(missing_ok=True),
        recv_opts)
    silent = [socket.create_connection(("127.0.0.1", recv.port or 0), timeout=WAIT)
              for _ in range(6)]
    stranger = socket.create_connection(("127.0.0.1", recv.port or 0), timeout=WAIT)
    dripping = threading.Thread(target=_drip, args=(stranger, _CLIENT_HELLO_DRIP, 0.05, 20))
    dripping.start()
    try:
        time.sleep(0.2)  # the strangers are first in line
        send = registry.start_send(
            "abuse-s1", "test", "127.0.0.1", recv.port or 0, _stream_ctx(node_certs, False),
            "magic-abuse-1", lambda: DiskReader(src), COMPRESS_NONE,
            registry.StreamOptions(connect_timeout=5, progress_timeout=WAIT))
        assert recv.join(WAIT) and send.join(WAIT)
        assert (send.success, recv.success) == (True, True), (send.error, recv.error)
        assert dest.read_bytes() == src.read_bytes()
    finally:
        dripping.join(WAIT)
        for sock in [stranger, *silent]:
            sock.close()
        registry.cleanup(["abuse-r1", "abuse-s1"])


def test_transfer_header_has_a_total_deadline(node_certs: pathutils.Paths,
                                              tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    recv = registry.start_receive(
        "abuse-r2", "test", "127.0.0.1", _stream_ctx(node_certs, True), "magic-abuse-2",
        None, lambda n: DiskWriter.create(dest, n), lambda: dest.unlink(missing_ok=True),
        registry.StreamOptions(listen_timeout=WAIT, progress_timeout=0.5))
    try:
        sock = connect("127.0.0.1", recv.port or 0, _stream_ctx(node_certs, False), WAIT)
        header = proto.encode_json(proto.HEADER, {"magic": "magic-abuse-2", "pad": "x" * 400})
        dripping = threading.Thread(target=_drip, args=(sock, header, 0.05, 20))
        dripping.start()
        assert recv.join(WAIT)
        assert recv.success is False and "no complete header" in (recv.error or "")
        assert not dest.exists()
        dripping.join(WAIT)
        sock.close()
    finally:
        registry.cleanup(["abuse-r2"])


def test_transfer_failed_thread_start_leaves_nothing(node_certs: pathutils.Paths,
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    failed = _failing_thread_start(monkeypatch, "transfer-receive-abuse-r3", 1)
    dest = tmp_path / "dest"
    with pytest.raises(TransferError, match="Cannot start a thread"):
        registry.start_receive(
            "abuse-r3", "test", "127.0.0.1", _stream_ctx(node_certs, True), "magic-abuse-3",
            None, lambda n: DiskWriter.create(dest, n), None, registry.StreamOptions())
    assert failed and registry.get("abuse-r3") is None
    assert "abuse-r3" not in registry.list_transfers()
