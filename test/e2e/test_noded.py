"""Real ganeti-noded processes on loopback addresses, called through the RPC runner."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ganeti import constants, crypto, pathutils
from ganeti.rpc.client import RpcRunner, default_ssl_context_factory, static_resolver

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NODED = REPO / "daemons" / "ganeti-noded"
WAIT = 60.0  # generous: the machine is shared with other test runs
_LISTEN_RE = re.compile(r"Listening on [^ ]+:(\d+)")
_LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"


@dataclass
class Node:
    name: str
    address: str
    paths: pathutils.Paths
    proc: subprocess.Popen[str]
    port: int = 0
    stderr_lines: list[str] = field(default_factory=list)
    output: threading.Condition = field(default_factory=threading.Condition)

    @property
    def log_text(self) -> str:
        return self.paths.log_file(constants.NODED).read_text()

    def wait_for_output(self, pattern: str) -> bool:
        """Block until the daemon's stderr log shows ``pattern`` (event-driven)."""
        regex = re.compile(pattern)
        with self.output:
            return self.output.wait_for(
                lambda: any(regex.search(line) for line in self.stderr_lines), WAIT)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(WAIT)


class LocalCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = crypto.generate_cluster_ca("e2e.example.com", 5)
        self.master = pathutils.Paths.for_root(root / "master")
        self.install_cert(self.master, "master", "127.0.0.1")
        self.nodes: dict[str, Node] = {}

    def install_cert(self, paths: pathutils.Paths, name: str, address: str) -> None:
        cert, key = crypto.generate_node_certificate(self.ca[0], self.ca[1], name, [address], 5)
        crypto.write_pem_pair(paths.node_cert_file, cert, key)
        paths.cluster_ca_file.write_text(self.ca[0])

    def spawn(self, paths: pathutils.Paths, address: str) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop(pathutils.ROOT_ENV, None)
        return subprocess.Popen(
            [sys.executable, str(NODED), "--foreground", "--debug", "--root", str(paths.root),
             "--bind", address, "--port", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=env)

    def start_node(self, name: str, address: str) -> Node:
        paths = pathutils.Paths.for_root(self.root / name)
        self.install_cert(paths, name, address)
        node = Node(name, address, paths, self.spawn(paths, address))
        ready = threading.Event()

        def drain() -> None:
            # Reads stderr until the daemon exits, so its pipe never fills up
            assert node.proc.stderr is not None
            for line in node.proc.stderr:
                with node.output:
                    node.stderr_lines.append(line)
                    node.output.notify_all()
                match = _LISTEN_RE.search(line)
                if match and not ready.is_set():
                    node.port = int(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        assert ready.wait(WAIT), f"{name} did not start"
        assert node.port, f"{name} failed to start: {''.join(node.stderr_lines)}"
        self.nodes[name] = node
        return node

    def runner(self, offline: frozenset[str] = frozenset()) -> RpcRunner:
        table = {n.name: (n.address, n.port, n.name in offline) for n in self.nodes.values()}
        return RpcRunner(static_resolver(table), default_ssl_context_factory(self.master),
                         paths=self.master)

    def close(self) -> None:
        for node in self.nodes.values():
            if node.proc.poll() is None:
                node.proc.kill()
                node.proc.wait(WAIT)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path)
    try:
        yield local
    finally:
        local.close()


@pytest.fixture
def three(cluster: LocalCluster) -> list[Node]:
    return [cluster.start_node(f"node{i}", f"127.0.0.{i + 10}") for i in range(1, 4)]


def _log_times(node: Node, pattern: str) -> list[dt.datetime]:
    stamps = []
    for line in node.log_text.splitlines():
        if re.search(pattern, line):
            stamps.append(dt.datetime.strptime(line[:23], _LOG_TIME_FORMAT))
    return stamps


def _raw_tls_call(node: Node, ctx: ssl.SSLContext) -> int:
    """POST /version over a hand-made TLS client; returns the HTTP status."""
    conn = http.client.HTTPSConnection(node.address, node.port, timeout=WAIT, context=ctx)
    try:
        conn.request("POST", "/version", b"[]", {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def _client_context(ca_file: Path, cert_file: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(ca_file))
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file))
    return ctx


def _expired_cert(ca: tuple[str, str], path: Path) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca[0].encode())
    ca_key = serialization.load_pem_private_key(ca[1].encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old-master")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    crypto.write_pem_pair(path, cert.public_bytes(serialization.Encoding.PEM), key_pem)


def test_valid_call_returns_payload(cluster: LocalCluster) -> None:
    node = cluster.start_node("node1", "127.0.0.21")
    with cluster.runner() as runner:
        version = runner.call_version(["node1"])["node1"]
        info = runner.call_node_info(["node1"])["node1"]
    assert version.fail_msg is None and version.payload == constants.PROTOCOL_VERSION
    assert info.payload["root"] == str(node.paths.root)
    assert "RPC version from 127.0.0.1" in node.log_text


@pytest.mark.parametrize(("client", "reason"), [
    ("no-cert", "did not return a certificate"),
    ("other-ca", "certificate verify failed"),
    ("expired", "certificate has expired"),
])
def test_untrusted_clients_refused_at_tls(cluster: LocalCluster, tmp_path: Path,
                                          client: str, reason: str) -> None:
    node = cluster.start_node("node1", "127.0.0.22")
    ca_file = cluster.master.cluster_ca_file
    cert_file: Path | None = None
    if client == "other-ca":
        other = crypto.generate_cluster_ca("e2e.example.com", 5)  # same name, other key
        cert, key = crypto.generate_node_certificate(other[0], other[1], "master", [], 5)
        cert_file = tmp_path / "other.pem"
        crypto.write_pem_pair(cert_file, cert, key)
    elif client == "expired":
        cert_file = tmp_path / "expired.pem"
        _expired_cert(cluster.ca, cert_file)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _raw_tls_call(node, _client_context(ca_file, cert_file))
    # the refusal is the daemon's TLS layer, and no procedure ran
    assert node.wait_for_output(r"TLS handshake with 127\.0\.0\.1:\d+ failed: .*" + reason)
    assert "RPC version" not in node.log_text
    # the same client with the right certificate gets served
    assert _raw_tls_call(node, _client_context(ca_file, cluster.master.node_cert_file)) == 200


def test_backend_error_and_unknown_procedure_keep_daemon_serving(
        cluster: LocalCluster) -> None:
    node = cluster.start_node("node1", "127.0.0.23")
    with cluster.runner() as runner:
        refused = runner.run("upload_file", ["node1"], ["/etc/passwd", "eA==", 0o644, None],
                             WAIT)["node1"]
        assert "not allowed" in (refused.fail_msg or "")
        unknown = runner.run("no_such_procedure", ["node1"], [], WAIT)["node1"]
        assert "Unknown procedure" in (unknown.fail_msg or "")
        assert runner.call_ping(["node1"])["node1"].payload is True
    assert node.proc.poll() is None
    assert not Path("/etc/passwd").read_text().startswith("x")


def test_bad_argument_types_refused_before_the_procedure_runs(cluster: LocalCluster) -> None:
    # the daemon checks every call against its procedure's signature
    node = cluster.start_node("node1", "127.0.0.30")
    wire = "/" + node.paths.cluster_conf_file.relative_to(node.paths.root).as_posix()
    with cluster.runner() as runner:
        mode_text = runner.run("upload_file", ["node1"], [wire, "eA==", "0644", None],
                               WAIT)["node1"]
        nested = runner.run("transfer_abort", ["node1"], [["t1", 7]], WAIT)["node1"]
        missing = runner.run("test_delay", ["node1"], [], WAIT)["node1"]
        assert runner.call_ping(["node1"])["node1"].payload is True
    assert mode_text.fail_msg == ("Invalid argument 'mode': Input should be a valid integer"
                                  " (got '0644') for procedure 'upload_file'")
    assert nested.fail_msg == ("Invalid argument 'transfer_ids[1]': Input should be a valid"
                               " string (got 7) for procedure 'transfer_abort'")
    assert missing.fail_msg == ("Invalid arguments for procedure 'test_delay': expected 1"
                                " arguments, got 0")
    # nothing was written: the procedures never ran
    assert not node.paths.cluster_conf_file.exists()
    assert node.wait_for_output(r"Procedure upload_file refused: Invalid argument 'mode'")


def test_upload_file_allow_list(cluster: LocalCluster) -> None:
    node = cluster.start_node("node1", "127.0.0.24")
    cluster.master.cluster_conf_file.write_text('{"serial": 7}')
    outside = cluster.master.root / "etc" / "motd"
    outside.parent.mkdir(parents=True)
    outside.write_text("hello")
    with cluster.runner() as runner:
        ok = runner.call_upload_file(["node1"], cluster.master.cluster_conf_file)["node1"]
        bad = runner.call_upload_file(["node1"], outside)["node1"]
        key = runner.call_upload_file(["node1"], cluster.master.node_cert_file)["node1"]
    assert ok.fail_msg is None
    assert node.paths.cluster_conf_file.read_text() == '{"serial": 7}'
    assert "not allowed" in (bad.fail_msg or "")
    assert not (node.paths.root / "etc" / "motd").exists()
    assert "not allowed" in (key.fail_msg or "")
    assert crypto.load_certificate_file(node.paths.node_cert_file) != \
        crypto.load_certificate_file(cluster.master.node_cert_file)


def test_oversized_body_refused(cluster: LocalCluster) -> None:
    node = cluster.start_node("node1", "127.0.0.25")
    ctx = _client_context(cluster.master.cluster_ca_file, cluster.master.node_cert_file)
    conn = http.client.HTTPSConnection(node.address, node.port, timeout=WAIT, context=ctx)
    try:
        conn.putrequest("POST", "/write_ssconf_files")
        conn.putheader("Content-Length", str(1 << 40))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert b"too large" in response.read()
    finally:
        conn.close()
    with cluster.runner() as runner:
        assert runner.call_ping(["node1"])["node1"].payload is True


def test_timeout_then_node_answers(cluster: LocalCluster) -> None:
    cluster.start_node("node1", "127.0.0.26")
    with cluster.runner() as runner:
        res = runner.call_test_delay(["node1"], 5.0, timeout=0.5)["node1"]
        assert res.fail_msg is not None
        assert "Timeout after 0.5s" in res.fail_msg and "node1" in res.fail_msg
        assert runner.call_version(["node1"])["node1"].payload == constants.PROTOCOL_VERSION


def test_one_node_down_others_answer(cluster: LocalCluster, three: list[Node]) -> None:
    assert three[1].stop() == 0
    with cluster.runner() as runner:
        results = runner.call_version([n.name for n in three])
    assert results["node1"].payload == constants.PROTOCOL_VERSION
    assert results["node3"].payload == constants.PROTOCOL_VERSION
    msg = results["node2"].fail_msg or ""
    assert "Connection refused" in msg and "node2" in msg and "127.0.0.12" in msg


def test_parallel_calls_overlap_on_nodes(cluster: LocalCluster, three: list[Node]) -> None:
    with cluster.runner() as runner:
        results = runner.call_test_delay([n.name for n in three], 2.0)
    assert all(r.fail_msg is None for r in results.values())
    starts = [_log_times(n, r"RPC test_delay .* started")[-1] for n in three]
    ends = [_log_times(n, r"RPC test_delay .* succeeded")[-1] for n in three]
    # every node started before any node finished: the calls ran concurrently
    assert max(starts) < min(ends)


def test_offline_node_never_contacted(cluster: LocalCluster, three: list[Node]) -> None:
    with cluster.runner(offline=frozenset({"node3"})) as runner:
        results = runner.call_version([n.name for n in three])
    assert results["node3"].offline and results["node3"].fail_msg == "Node is marked offline"
    assert results["node1"].payload == results["node2"].payload == constants.PROTOCOL_VERSION
    assert "Connection from" not in three[2].log_text
    assert "Connection from" in three[0].log_text
    with cluster.runner() as runner:  # once online, the same node is reachable
        assert runner.call_version(["node3"])["node3"].payload == constants.PROTOCOL_VERSION
    assert "Connection from" in three[2].log_text


def test_second_daemon_refuses_same_pid_file(cluster: LocalCluster) -> None:
    node = cluster.start_node("node1", "127.0.0.27")
    second = cluster.spawn(node.paths, "127.0.0.28")
    _, err = second.communicate(timeout=WAIT)
    assert second.returncode == 1
    assert "already running" in err and str(node.proc.pid) in err
    with cluster.runner() as runner:
        assert runner.call_ping(["node1"])["node1"].payload is True


def test_sigterm_clean_exit(cluster: LocalCluster) -> None:
    node = cluster.start_node("node1", "127.0.0.29")
    pid_file = node.paths.pid_file(constants.NODED)
    assert pid_file.read_text().strip() == str(node.proc.pid)
    assert node.stop() == 0
    assert not pid_file.exists()
    assert "Node daemon stopped" in node.log_text
    with socket.socket() as sock:
        assert sock.connect_ex((node.address, node.port)) != 0
