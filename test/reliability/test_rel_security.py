"""Security: mutual TLS for RPC, LUXI socket permissions, secrets kept out of the
job store and logs, file modes of keys and exports."""

from __future__ import annotations

import http.client
import json
import os
import pwd
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import add_instance, client, wait_final

from ganeti import constants, crypto, opcodes

pytestmark = [pytest.mark.e2e]

USER = "ganeti-reltest"


cluster = cluster_fixture("sec", 2)


def _post(cluster: E2ECluster, ctx: ssl.SSLContext) -> tuple[int, object]:
    conn = http.client.HTTPSConnection(cluster.nodes[1].address, cluster.port, context=ctx,
                                       timeout=15)
    try:
        conn.request("POST", "/version", body=b"[]")
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _client_ctx(cert: Path | None, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert))
    return ctx


def test_rpc_needs_this_clusters_client_certificate(cluster: E2ECluster,
                                                    tmp_path: Path) -> None:
    paths = cluster.master.paths
    # with the cluster's certificate: accepted
    assert _post(cluster, _client_ctx(paths.node_cert_file, paths.cluster_ca_file)) == \
        (200, [True, constants.PROTOCOL_VERSION])
    # no client certificate at all: the handshake fails
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _post(cluster, _client_ctx(None, paths.cluster_ca_file))
    # a valid certificate of another cluster (its own CA): refused
    ca_cert, ca_key = crypto.generate_cluster_ca("other.cluster", 30)
    cert, key = crypto.generate_node_certificate(ca_cert, ca_key, "node1", ["127.0.0.1"], 30)
    foreign = tmp_path / "foreign.pem"
    crypto.write_pem_pair(foreign, cert, key)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _post(cluster, _client_ctx(foreign, paths.cluster_ca_file))
    # and the node daemon still serves its cluster
    assert _post(cluster, _client_ctx(paths.node_cert_file, paths.cluster_ca_file))[0] == 200


@pytest.fixture
def unprivileged_user() -> Iterator[pwd.struct_passwd]:
    created = False
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip("needs root to create a throwaway user")
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", USER], check=True, capture_output=True)
        created = True
        entry = pwd.getpwnam(USER)
    try:
        yield entry
    finally:
        if created:
            subprocess.run(["userdel", USER], check=False, capture_output=True)


def test_luxi_socket_refuses_other_users(cluster: E2ECluster,
                                         unprivileged_user: pwd.struct_passwd) -> None:
    sock_path = cluster.master.paths.master_socket
    mode = sock_path.stat().st_mode
    assert not mode & (stat.S_IWOTH | stat.S_IROTH), oct(mode)
    assert not sock_path.parent.stat().st_mode & stat.S_IRWXO
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(sock_path)!r})\n"
        "except PermissionError:\n"
        "    print('refused'); sys.exit(0)\n"
        "print('connected'); sys.exit(1)\n")
    proc = subprocess.run(
        ["setpriv", f"--reuid={unprivileged_user.pw_uid}",
         f"--regid={unprivileged_user.pw_gid}", "--clear-groups", "/usr/bin/python3", "-c",
         probe], capture_output=True, text=True, timeout=30, cwd="/")
    assert proc.stdout.strip() == "refused", proc.stdout + proc.stderr
    # root (the administrator) still gets in
    with client(cluster) as cl:
        assert cl.query_cluster_info()["cluster_name"]


def _secrets(cluster: E2ECluster) -> list[str]:
    """The secret material of every node: domain secret and private key bodies."""
    found = []
    for node in cluster.nodes:
        paths = node.paths
        if paths.cluster_domain_secret_file.exists():
            found.append(paths.cluster_domain_secret_file.read_text().strip())
        for pem in [paths.node_cert_file, *paths.crypto_dir.glob("*.pem")]:
            text = pem.read_text()
            if "PRIVATE KEY-----" in text:
                body = text.split("PRIVATE KEY-----")[1]
                found += [line for line in body.splitlines() if len(line) > 20]
    assert found
    return found


def test_secrets_never_reach_job_store_or_logs(cluster: E2ECluster) -> None:
    secret = cluster.master.paths.cluster_domain_secret_file.read_text().strip()
    with client(cluster) as cl:
        job_id = cl.submit_job([opcodes.OpClusterRenewCrypto.create(
            cluster_domain_secret=secret)])
        wait_final(cl, [job_id])
        (ops,), = cl.query_jobs([job_id], ["ops"]) or [[None]]
    assert ops[0]["cluster_domain_secret"] == "<redacted>"
    add_instance(cluster, "sec1", "node1", "4M", "--no-start")
    cluster.gnt("gnt-backup", "export", "-n", "node2", "sec1")
    info = cluster.gnt("gnt-job", "info", str(job_id)).stdout
    blobs = [info]
    for node in cluster.nodes:
        for directory in (node.paths.data_dir / "queue", node.paths.log_dir):
            if directory.exists():
                blobs += [p.read_bytes().decode("latin-1") for p in directory.rglob("*")
                          if p.is_file()]
    for item in _secrets(cluster):
        assert not any(item in blob for blob in blobs), "a secret leaked"


def test_modes_of_keys_config_and_exports(cluster: E2ECluster) -> None:
    add_instance(cluster, "modes1", "node1", "4M", "--no-start")
    cluster.gnt("gnt-backup", "export", "-n", "node2", "modes1")
    for node in cluster.nodes:
        paths = node.paths
        private = [paths.node_cert_file, paths.cluster_conf_file,
                   *paths.crypto_dir.glob("*.pem")]
        if paths.cluster_domain_secret_file.exists():
            private.append(paths.cluster_domain_secret_file)
        for path in private:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
        assert stat.S_IMODE(paths.crypto_dir.stat().st_mode) == 0o700
    export = cluster.nodes[1].paths.export_dir / "modes1"
    assert not stat.S_IMODE(export.stat().st_mode) & stat.S_IRWXO
    for item in export.iterdir():
        assert not stat.S_IMODE(item.stat().st_mode) & stat.S_IRWXO, item
    queue_dir = cluster.master.paths.data_dir / "queue"
    assert not stat.S_IMODE(queue_dir.stat().st_mode) & stat.S_IRWXO

