"""Connection abuse against the real daemons of a two-node cluster.

The master daemon and node2's node daemon are restarted with short limits
(``--idle-timeout`` 3 s and so on) so that timeouts show within seconds.
Each case records its figures (tried, handled cleanly, lost) in FIGURES;
doc/reliability.md quotes them.  Counts grow with GANETI_SOAK=1.
"""

from __future__ import annotations

import errno
import http.client
import os
import resource
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import WAIT, client, master_pid, proc_status, rss_kib, scaled
from support.rpc import as_runner

from ganeti import constants, crypto, daemon, errors, luxi
from ganeti.rpc.client import RpcRunner
from ganeti.tools.local_cluster import SOURCE_TOP, NodeSpec
from ganeti.transfer.master.coordinator import DiskTransfer, run_transfers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIB = 1 << 20
LUXI_CAP = 128
NODED_CAP = 64
SHORT = "3"  # seconds: idle, request and handshake timeouts of the restarted daemons
FIGURES: list[str] = []

cluster = cluster_fixture("abuse", 2)


def _figure(case: str, tried: int, clean: int, lost: int, extra: str = "") -> None:
    line = f"{case}: tried {tried}, handled cleanly {clean}, lost {lost}"
    FIGURES.append(line + (f"; {extra}" if extra else ""))


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print("\nconnection abuse figures:\n  " + "\n  ".join(FIGURES))


@pytest.fixture(scope="module", autouse=True)
def _many_descriptors() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _restart(cluster: E2ECluster, name: str, node: NodeSpec, args: list[str]) -> int:
    pid = daemon.read_pid(node.paths.pid_file(name))
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while cluster.is_running(name, node):
        assert time.monotonic() < deadline, f"{name} did not stop"
        time.sleep(0.05)
    cluster._run_daemon([str(SOURCE_TOP / "daemons" / name), *args], node)
    new = daemon.read_pid(node.paths.pid_file(name))
    assert new is not None
    return new


@pytest.fixture(scope="module")
def tuned(cluster: E2ECluster) -> E2ECluster:
    """masterd and node2's noded with small caps and 3 s timeouts."""
    _restart(cluster, constants.MASTERD, cluster.master,
             ["--max-connections", str(LUXI_CAP), "--idle-timeout", SHORT,
              "--request-timeout", SHORT])
    node2 = cluster.nodes[1]
    _restart(cluster, constants.NODED, node2,
             ["--bind", node2.address, "--port", str(cluster.port),
              "--max-connections", str(NODED_CAP), "--idle-timeout", SHORT,
              "--request-timeout", SHORT, "--handshake-timeout", SHORT])
    with client(cluster) as cl:
        assert cl.query_jobs(None, ["id"]) is not None
    return cluster


def _threads(pid: int) -> int:
    return proc_status(pid, "Threads")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Peak RSS (KiB) and thread count of a process, sampled in the background."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base_rss = self.peak_rss = rss_kib(pid)
        self.base_threads = self.peak_threads = _threads(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, rss_kib(self.pid))
        self.peak_threads = max(self.peak_threads, _threads(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def describe(self) -> str:
        return (f"threads {self.base_threads} -> peak {self.peak_threads},"
                f" RSS {self.base_rss // 1024} -> peak {self.peak_rss // 1024} MiB")


def _settle(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _state(sock: socket.socket) -> str:
    """'closed' (EOF or reset), 'reply' (the server said something) or 'open'."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    return "reply" if data else "closed"


def _unix(cluster: E2ECluster) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            sock.connect(str(cluster.master.paths.master_socket))
            return sock
        except BlockingIOError:  # backlog full: the master is busy accepting
            assert time.monotonic() < deadline, "master never accepted"
            time.sleep(0.01)


def _query(cluster: E2ECluster) -> bool:
    with client(cluster) as cl:
        return isinstance(cl.query_jobs(None, ["id"]), list)


# --- LUXI -----------------------------------------------------------------------------


def test_luxi_flood_of_half_written_messages(tuned: E2ECluster) -> None:
    count = scaled(2_000, 12_000)
    pid = master_pid(tuned)
    partial = b'{"method": "QueryJobs", "args": [nu'
    socks: list[socket.socket] = []
    answered = asked = 0
    try:
        with Sampler(pid) as sampler:
            for idx in range(count):
                sock = _unix(tuned)
                socks.append(sock)
                try:
                    sock.sendall(partial)
                except OSError:
                    pass  # already evicted for a newer one
                if idx % 200 == 0:
                    asked += 1
                    answered += _query(tuned)
            # and through the CLI, as an administrator would meet it
            cli = tuned.gnt("gnt-job", "list", "--no-headers", ok=False)
        states = [_state(s) for s in socks]
    finally:
        for sock in socks:
            sock.close()
    _settle(lambda: _threads(pid) <= sampler.base_threads + 2, "client threads gone")
    assert answered == asked, "a normal client was not served during the flood"
    assert cli.returncode == 0, cli.stdout + cli.stderr
    # served (at most the cap) or not yet accepted (the listen backlog of 128)
    assert states.count("open") <= LUXI_CAP + 128
    # one thread per served connection, never one per connection attempted
    assert sampler.peak_threads <= sampler.base_threads + LUXI_CAP + 4, sampler.describe()
    assert sampler.peak_rss - sampler.base_rss < 64 * 1024, sampler.describe()
    assert _query(tuned)
    _figure("LUXI half-written messages", count, count, 0,
            f"{states.count('open')} still held or queued at the end (cap {LUXI_CAP}), the rest"
            f" closed for newcomers or after the 3 s request timeout; {answered}/{asked}"
            f" normal requests and gnt-job list answered meanwhile; {sampler.describe()}")


def test_luxi_connections_holding_large_unfinished_messages(tuned: E2ECluster) -> None:
    count = scaled(30, 100)
    pid = master_pid(tuned)
    payload = b'"' + b"a" * (15 * MIB)
    outcomes: list[str] = []
    lock = threading.Lock()

    def hold() -> None:
        sock = _unix(tuned)
        sock.settimeout(15)
        try:
            try:
                sock.sendall(payload)
            except OSError:
                pass  # the server stopped reading: its reply says why
            try:
                err = errors.decode(luxi.MessageStream(sock).recv()["result"])
                outcome = type(err).__name__
            except (OSError, errors.GenericError):
                outcome = "closed"
        finally:
            sock.close()
        with lock:
            outcomes.append(outcome)

    with Sampler(pid) as sampler:
        threads = [threading.Thread(target=hold) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
    assert len(outcomes) == count
    assert set(outcomes) <= {"ServerBusyError", "TimeoutError", "closed"}, outcomes
    growth = sampler.peak_rss - sampler.base_rss
    # bounded by --max-buffered (64 MiB), not by count * 15 MiB (the daemon's
    # large buffers are mapped, so freeing them returns the memory)
    assert growth < (constants.LUXI_MAX_BUFFERED + 32 * MIB) // 1024, sampler.describe()
    assert _query(tuned)
    _figure("LUXI connections with 15 MiB unfinished messages", count, count, 0,
            f"{outcomes.count('ServerBusyError')} refused at the 64 MiB budget,"
            f" {outcomes.count('TimeoutError')} timed out unfinished; master RSS growth"
            f" {growth // 1024} MiB (without the budget: {count * 15} MiB)")


def test_luxi_oversized_message_refused_as_it_passes_the_limit(tuned: E2ECluster) -> None:
    total = 4 * constants.LUXI_MAX_MESSAGE
    chunk = b"a" * (256 * 1024)
    sock = _unix(tuned)
    sent = 0
    try:
        sock.sendall(b'"')
        while sent < total:
            try:
                sent += sock.send(chunk)
            except OSError as err:
                assert err.errno in (errno.EPIPE, errno.ECONNRESET), err
                break
        reply = luxi.MessageStream(sock).recv()
    finally:
        sock.close()
    refused = errors.decode(reply["result"])
    assert isinstance(refused, errors.ProtocolError) and "too large" in str(refused)
    # the server stopped reading at the limit: the rest never left our side
    assert sent < constants.LUXI_MAX_MESSAGE + 8 * MIB, sent
    assert _query(tuned)
    _figure("LUXI oversized message (64 MiB, limit 16 MiB)", 1, 1, 0,
            f"server stopped reading after {sent // MIB} MiB had been sent")


def test_luxi_idle_connections_closed(tuned: E2ECluster) -> None:
    count = scaled(100, 1_000)
    pid = master_pid(tuned)
    base = _threads(pid)
    socks = [_unix(tuned) for _ in range(count)]
    try:
        _settle(lambda: all(_state(s) == "closed" for s in socks), "idle connections closed")
    finally:
        for sock in socks:
            sock.close()
    _settle(lambda: _threads(pid) <= base + 2, "client threads gone")
    assert _query(tuned)
    _figure("LUXI idle connections", count, count, 0, "all closed by the 3 s idle timeout"
            f" or for newcomers (cap {LUXI_CAP})")


def test_masterd_out_of_descriptors(tuned: E2ECluster) -> None:
    pid = master_pid(tuned)
    log = tuned.master.paths.log_file(constants.MASTERD)
    start = log.stat().st_size
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (_fds(pid) + 10, limits[1]))
    socks: list[socket.socket] = []
    try:
        socks = [_unix(tuned) for _ in range(100)]  # most wait in the backlog
        time.sleep(3)
        with open(log, "rb") as handle:
            handle.seek(start)
            lines = [ln for ln in handle.read().decode().splitlines()
                     if "cannot accept connections" in ln]
        for sock in socks:
            sock.close()
        # still under the low limit: once the connections are gone it serves again
        recovered = _query(tuned)
    finally:
        for sock in socks:
            sock.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    assert recovered
    assert 1 <= len(lines) <= 2, lines  # at most one line per 5 s, not one per attempt
    assert "Too many open files" in lines[0]
    _figure("masterd out of descriptors (EMFILE, 100 connections, 10 free fds)", 100, 100, 0,
            f"{len(lines)} log line(s) in 3 s, served again once the connections closed")


# --- node daemon ----------------------------------------------------------------------


def _node2_pid(cluster: E2ECluster) -> int:
    pid = daemon.read_pid(cluster.nodes[1].paths.pid_file(constants.NODED))
    assert pid is not None
    return pid


def _tcp(cluster: E2ECluster) -> socket.socket:
    return socket.create_connection((cluster.nodes[1].address, cluster.port), timeout=WAIT)


def _client_ctx(cluster: E2ECluster) -> ssl.SSLContext:
    paths = cluster.master.paths
    return crypto.client_ssl_context(paths.node_cert_file, paths.cluster_ca_file)


def _version_ok(rpc: RpcRunner) -> bool:
    res = rpc.call_version(["node2"])["node2"]
    return res.fail_msg is None and res.payload == constants.PROTOCOL_VERSION


def _fresh_version_ok(cluster: E2ECluster) -> bool:
    """A call on a new connection, as a master that just started would make it."""
    conn = http.client.HTTPSConnection(cluster.nodes[1].address, cluster.port,
                                       context=_client_ctx(cluster), timeout=WAIT)
    try:
        conn.request("POST", "/version", body=b"[]")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read() == b"[true, %d]" % constants.PROTOCOL_VERSION
    except OSError:
        return False
    finally:
        conn.close()


def test_noded_flood_of_half_open_handshakes(tuned: E2ECluster, rpc: RpcRunner) -> None:
    count = scaled(1_000, 6_000)
    pid = _node2_pid(tuned)
    socks: list[socket.socket] = []
    answered = asked = 0
    try:
        with Sampler(pid) as sampler:
            for idx in range(count):
                socks.append(_tcp(tuned))
                if idx % 100 == 0:
                    asked += 1
                    answered += _fresh_version_ok(tuned)
        states = [_state(s) for s in socks]
    finally:
        for sock in socks:
            sock.close()
    _settle(lambda: _threads(pid) <= sampler.base_threads + 2, "connection threads gone")
    assert answered == asked, "the master's RPC was not served during the flood"
    assert sampler.peak_threads <= sampler.base_threads + NODED_CAP + 16 + 4, \
        sampler.describe()
    assert _version_ok(rpc)
    _figure("noded half-open TLS handshakes", count, count, 0,
            f"{states.count('open')} still open at the end (cap {NODED_CAP}); {answered}/"
            f"{asked} RPC calls answered meanwhile; {sampler.describe()}")


def test_noded_slow_loris_headers(tuned: E2ECluster, rpc: RpcRunner) -> None:
    count = scaled(20, 60)
    ctx = _client_ctx(tuned)
    socks = [ctx.wrap_socket(_tcp(tuned)) for _ in range(count)]
    header = b"POST /version HTTP/1.1\r\nHost: node2\r\nX-Pad: " + b"a" * 10_000
    open_socks = list(socks)
    started = time.monotonic()
    try:
        for byte in header:  # one byte per connection every 0.1 s
            for sock in list(open_socks):
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    open_socks.remove(sock)
            if not open_socks or time.monotonic() - started > WAIT:
                break
            time.sleep(0.1)
    finally:
        for sock in socks:
            sock.close()
    assert not open_socks, f"{len(open_socks)} slow requests still open"
    assert _version_ok(rpc)
    _figure("noded slow-loris headers", count, count, 0,
            f"all cut off by the 3 s request timeout (after {time.monotonic() - started:.0f} s)")


def test_noded_over_the_cap_of_busy_connections(tuned: E2ECluster, rpc: RpcRunner) -> None:
    ctx = _client_ctx(tuned)
    statuses: list[int] = []

    def delay() -> None:
        conn = http.client.HTTPSConnection(tuned.nodes[1].address, tuned.port,
                                           context=ctx, timeout=WAIT)
        try:
            conn.request("POST", "/test_delay", body=b"[8]")
            statuses.append(conn.getresponse().status)
        finally:
            conn.close()

    busy = [threading.Thread(target=delay) for _ in range(NODED_CAP)]
    for thread in busy:
        thread.start()
    time.sleep(2)  # every slot now runs a request: a new caller is refused
    probe = http.client.HTTPSConnection(tuned.nodes[1].address, tuned.port, context=ctx,
                                        timeout=WAIT)
    try:
        probe.request("POST", "/version", body=b"[]")
        resp = probe.getresponse()
        status, body = resp.status, resp.read().decode()
    finally:
        probe.close()
    for thread in busy:
        thread.join(WAIT)
    assert status == 503 and f"maximum of {NODED_CAP}" in body, (status, body)
    assert statuses == [200] * NODED_CAP
    assert _version_ok(rpc)
    _figure("noded connections over the cap while all run requests", 1, 1, 0,
            f"refused with 503 naming the limit; the {NODED_CAP} running requests all"
            " succeeded")


# --- transfer receiver ----------------------------------------------------------------


class StrangerRpc:
    """The real RPC runner; strangers connect to each receiver before the sender does."""

    def __init__(self, rpc: RpcRunner, silent: int, dripping: int) -> None:
        self._rpc = rpc
        self.silent = silent
        self.dripping = dripping
        self.socks: list[socket.socket] = []
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rpc, name)

    def call_transfer_receive_start(self, *args: Any, **kwargs: Any) -> Any:
        res = self._rpc.call_transfer_receive_start(*args, **kwargs)
        if not res.fail_msg:
            where = (res.payload["host"], res.payload["port"])
            self.socks += [socket.create_connection(where, timeout=WAIT)
                           for _ in range(self.silent)]
            for _ in range(self.dripping):
                sock = socket.create_connection(where, timeout=WAIT)
                self.socks.append(sock)
                thread = threading.Thread(target=self._drip, args=(sock,))
                thread.start()
                self.threads.append(thread)
        return res

    def _drip(self, sock: socket.socket) -> None:
        for byte in b"\x16\x03\x01\x40\x00" + b"\x01" * 1000:
            if self.stop.wait(0.05):
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(WAIT)
        for sock in self.socks:
            sock.close()


def test_transfer_receiver_with_strangers_first(tuned: E2ECluster, rpc: RpcRunner) -> None:
    silent, dripping = scaled(10, 40), scaled(4, 12)
    src_node, dst_node = tuned.nodes
    src_dir = src_node.paths.file_storage_dir / "abuse"
    src_dir.mkdir(parents=True, exist_ok=True)
    src = src_dir / "disk.img"
    src.write_bytes(os.urandom(4 * MIB))
    dest_wire = "/srv/ganeti/export/abuse/disk.img"
    dest = dst_node.paths.root / dest_wire.lstrip("/")
    spec = DiskTransfer("disk/0", src_node.name,
                        {"kind": "file", "path": "/var/lib/ganeti/file-storage/abuse/disk.img"},
                        dst_node.name, {"kind": "file", "path": dest_wire}, size=4 * MIB,
                        dest_address=dst_node.address)
    strangers = StrangerRpc(rpc, silent, dripping)
    try:
        (result,) = run_transfers(as_runner(strangers), [spec], lambda _m: None, poll_interval=0.1,
                                  report_interval=60, connect_timeout=3, listen_timeout=20,
                                  progress_timeout=5)
    finally:
        strangers.close()
    assert result.success, result
    assert dest.read_bytes() == src.read_bytes()
    _figure("transfer receiver with strangers connecting first", silent + dripping + 1,
            silent + dripping + 1, 0, f"{silent} silent and {dripping} dripping handshakes"
            " turned away, the real stream byte-identical")


def test_noded_logs_stay_short(tuned: E2ECluster) -> None:
    """The abuse above wrote a bounded number of lines, not one per connection."""
    log = tuned.nodes[1].paths.log_file(constants.NODED).read_text().splitlines()
    abuse = [ln for ln in log if "handshake" in ln or "limit of" in ln or "not complete" in ln]
    assert len(abuse) < 200, len(abuse)
    _figure("noded log lines about abuse (whole module)", len(abuse), len(abuse), 0)
