"""The RAPI daemon of a running 3-node cluster: TLS, users, permissions, bad requests.

The daemon is the one ``LocalCluster.start`` runs on the master's address;
users come from the real users file, jobs are checked in masterd's queue.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster
from support.rapi import RapiClient, add_rapi_user
from support.reliability import kill9, watcher

from ganeti import constants, crypto, daemon, limits, luxi
from ganeti.rapi import auth
from ganeti.tools.local_cluster import SOURCE_TOP, STATE_FILE, LocalCluster, random_subnet

WAIT = 60.0
AUTHENTICATE = 'Basic realm="Ganeti Remote API"'
# a real change, always submitted with dry-run (the cluster stays as it is)
CHANGE = {"backup_defaults": {"notify": "always"}}


def _job_ids(cluster: E2ECluster) -> set[int]:
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        return {row[0] for row in cl.query_jobs(None, ["id"])}


def _wait_job(cluster: E2ECluster, job_id: int) -> str:
    deadline = time.monotonic() + WAIT
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        while True:
            status = cl.query_jobs([job_id], ["status"])[0][0]
            if status in ("success", "error", "canceled") or time.monotonic() > deadline:
                return str(status)
            time.sleep(0.1)


def test_daemon_runs_on_the_masters_address_with_its_certificate(
        cluster: E2ECluster) -> None:
    host, port = cluster.rapi_address
    assert host == cluster.master.address
    assert cluster.is_running(constants.RAPI, cluster.master)
    assert not any(cluster.is_running(constants.RAPI, node) for node in cluster.nodes[1:])
    cert = cluster.master.paths.rapi_cert
    assert cert.stat().st_mode & 0o077 == 0
    # rapi.pem is its own CA file, valid for the master's address
    ctx = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection((host, port), timeout=WAIT) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        token = base64.b64encode(b"reader:secret").decode()
        tls.sendall(f"GET /version HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}"
                    "\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"\r\n\r\n2")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_verifies_rapi_pem(cluster: E2ECluster) -> None:
    host, port = cluster.rapi_address
    proc = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(cluster.master.paths.rapi_cert),
         "-u", "reader:secret", f"https://{host}:{port}/2/features"],
        capture_output=True, text=True, timeout=WAIT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["instance-create-reqv1"]


def test_info_is_the_clusters(cluster: E2ECluster) -> None:
    answer = RapiClient(cluster, "reader").request("GET", "/2/info")
    assert answer.status == 200
    assert answer.body["name"] == cluster.cluster_name
    assert answer.body["master"] == cluster.master.name
    assert answer.body["software_version"] == constants.RELEASE_VERSION
    assert RapiClient(cluster).request("GET", "/version").body == constants.RAPI_VERSION


def test_unauthenticated_requests_get_401(cluster: E2ECluster) -> None:
    before = _job_ids(cluster)
    for user, password in ((None, ""), ("admin", "wrong"), ("nobody", "secret"),
                           ("admin", "")):
        client = RapiClient(cluster, user, password)
        for method, path, body in (("GET", "/2/info", None), ("PUT", "/2/modify", {})):
            answer = client.request(method, path, body)
            assert answer.status == 401, (user, method, path)
            assert answer.headers["WWW-Authenticate"] == AUTHENTICATE
            assert answer.body == {"code": 401, "message": "Unauthorized",
                                   "explain": "Authentication is required"}
    assert _job_ids(cluster) == before


def test_read_only_user_cannot_write_and_nothing_is_submitted(cluster: E2ECluster) -> None:
    before = _job_ids(cluster)
    answer = RapiClient(cluster, "reader").request("PUT", "/2/modify", {})
    assert answer.status == 403
    assert answer.body["code"] == 403 and "reader" in answer.body["explain"]
    assert _job_ids(cluster) == before
    # the writer's same request is a job
    answer = RapiClient(cluster, "admin").request("PUT", "/2/modify", CHANGE,
                                                  query={"dry-run": 1, "reason": "e2e"})
    assert answer.status == 200, answer.body
    assert isinstance(answer.body, int) and answer.body not in before
    assert _wait_job(cluster, answer.body) == "success"
    with luxi.Client(address=str(cluster.master.paths.master_socket)) as cl:
        (ops,) = cl.query_jobs([answer.body], ["ops"])[0]
    assert ops[0]["OP_ID"] == "OP_CLUSTER_SET_PARAMS" and ops[0]["dry_run"] is True
    assert ops[0]["backup_defaults"] == CHANGE["backup_defaults"]
    sources = [entry[0] for entry in ops[0]["reason"]]
    assert sources[:2] == ["gnt:user", "gnt:library:rlib2:modify"]
    assert ops[0]["reason"][0][1] == "e2e"


def test_users_added_to_the_file_work_without_restart(cluster: E2ECluster) -> None:
    pid = daemon.read_pid(cluster.master.paths.pid_file(constants.RAPI))
    late = RapiClient(cluster, "late", "pw")
    assert late.request("GET", "/2/features").status == 401
    add_rapi_user(cluster, "late", "pw", "")
    assert late.request("GET", "/2/features").status == 200
    assert late.request("PUT", "/2/modify", {}).status == 403
    add_rapi_user(cluster, "late", "{HA1}" + auth.ha1("late", "other"), "write")
    assert late.request("GET", "/2/features").status == 401
    writer = RapiClient(cluster, "late", "other")
    assert writer.request("GET", "/2/features").status == 200
    answer = writer.request("PUT", "/2/modify", CHANGE, query={"dry-run": "1"})
    assert answer.status == 200 and isinstance(answer.body, int)
    assert daemon.read_pid(cluster.master.paths.pid_file(constants.RAPI)) == pid


def test_unknown_resource_404_and_wrong_method_405(cluster: E2ECluster) -> None:
    client = RapiClient(cluster)
    answer = client.request("GET", "/2/no-such-thing")
    assert answer.status == 404
    assert answer.body["code"] == 404 and answer.body["message"] == "Not Found"
    answer = client.request("DELETE", "/2/info")
    assert answer.status == 405
    assert answer.headers["Allow"] == "GET"
    assert answer.body["code"] == 405


def test_oversized_body_refused_before_it_is_sent(cluster: E2ECluster) -> None:
    host, port = cluster.rapi_address
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    before = _job_ids(cluster)
    token = base64.b64encode(b"admin:secret").decode()
    with socket.create_connection((host, port), timeout=WAIT) as raw, \
            ctx.wrap_socket(raw) as tls:
        tls.sendall(f"PUT /2/modify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}"
                    f"\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {limits.RAPI_BODY.maximum + 1}\r\n\r\n".encode())
        answer = b""
        while chunk := tls.recv(65536):  # the server answers and closes: no body sent
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == 413
    assert _job_ids(cluster) == before


def test_bad_input_is_400_naming_it_and_nothing_is_submitted(cluster: E2ECluster) -> None:
    client = RapiClient(cluster)
    before = _job_ids(cluster)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"raw": b"{not json", "headers": {"Content-Type": "application/json"}},
         "not valid JSON"),
        ({"body": {"bogus": 1}}, "bogus"),
        ({"body": {"backup_defaults": 3}}, "backup_defaults"),
        ({"body": [1, 2]}, "body"),
        ({"body": {}, "query": "frobnicate=1"}, "frobnicate"),
        ({"body": {}, "query": "dry-run=maybe"}, "dry-run"),
    ]
    for kwargs, named in cases:
        answer = client.request("PUT", "/2/modify", **kwargs)
        assert answer.status == 400, (kwargs, answer.body)
        assert answer.body["code"] == 400 and answer.body["message"] == "Bad Request"
        assert named in answer.body["explain"], (kwargs, answer.body)
    answer = client.request("GET", "/2/info", query={"bulk": 1})
    assert answer.status == 400 and "bulk" in answer.body["explain"]
    answer = client.request("PUT", "/2/modify", raw=b"{}", headers={"Content-Type":
                                                                    "text/plain"})
    assert answer.status == 415
    assert _job_ids(cluster) == before


def test_openapi_document_is_served(cluster: E2ECluster) -> None:
    answer = RapiClient(cluster, "reader").request("GET", "/openapi.json")
    assert answer.status == 200
    assert answer.body["openapi"].startswith("3.1")
    assert {"/version", "/2/info", "/2/features", "/2/modify"} <= set(answer.body["paths"])


def _served_certificate(cluster: E2ECluster) -> bytes:
    host, port = cluster.rapi_address
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=WAIT) as raw, \
            ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_renew_crypto_replaces_the_certificate_without_restart(cluster: E2ECluster) -> None:
    paths = cluster.master.paths
    pid = daemon.read_pid(paths.pid_file(constants.RAPI))
    secret = paths.cluster_domain_secret_file.read_text()
    old_pem = paths.rapi_cert.read_text()
    old = _served_certificate(cluster)
    assert old == ssl.PEM_cert_to_DER_cert(old_pem[old_pem.index("-----BEGIN CERT"):])
    proc = cluster.gnt("gnt-cluster", "renew-crypto", "--new-rapi-certificate")
    assert proc.stdout.strip() == f"RAPI certificate renewed: {paths.rapi_cert}"
    new_pem = paths.rapi_cert.read_text()
    assert new_pem != old_pem and paths.rapi_cert.stat().st_mode & 0o077 == 0
    new = _served_certificate(cluster)
    assert new == ssl.PEM_cert_to_DER_cert(new_pem[new_pem.index("-----BEGIN CERT"):])
    # the same daemon; the cluster domain secret untouched; verifiable by address
    assert daemon.read_pid(paths.pid_file(constants.RAPI)) == pid
    assert paths.cluster_domain_secret_file.read_text() == secret
    host, port = cluster.rapi_address
    ctx = ssl.create_default_context(cafile=str(paths.rapi_cert))
    with socket.create_connection((host, port), timeout=WAIT) as raw, \
            ctx.wrap_socket(raw, server_hostname=host):
        pass
    # nothing asked for: refused before any job
    proc = cluster.gnt("gnt-cluster", "renew-crypto", ok=False)
    assert proc.returncode == 1 and "--new-rapi-certificate" in proc.stderr


def test_missing_certificate_is_created_at_start(cluster: E2ECluster) -> None:
    """A cluster made before RAPI has no rapi.pem: the daemon makes one when it starts."""
    paths = cluster.master.paths
    pid = daemon.read_pid(paths.pid_file(constants.RAPI))
    assert pid is not None
    old = paths.rapi_cert.read_bytes()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT
    while cluster.is_running(constants.RAPI, cluster.master):
        assert time.monotonic() < deadline, "ganeti-rapi did not stop on SIGTERM"
        time.sleep(0.05)
    assert not paths.pid_file(constants.RAPI).exists()
    paths.rapi_cert.unlink()
    cluster.start(log=lambda _msg: None)
    assert paths.rapi_cert.read_bytes() != old
    cert = crypto.load_certificate_file(paths.rapi_cert)
    alt_names = str(cert.extensions)
    assert cluster.master.name in alt_names and cluster.master.address in alt_names
    assert RapiClient(cluster).request("GET", "/version").body == 2
    log = paths.log_file(constants.RAPI).read_text()
    assert f"Created {paths.rapi_cert}" in log


def test_watcher_restarts_a_dead_rapi_daemon_where_it_listened(cluster: E2ECluster) -> None:
    address = cluster.rapi_address
    assert daemon.recorded_address(
        cluster.master.paths.address_file(constants.RAPI)) == address
    kill9(cluster, constants.RAPI)
    out = watcher(cluster)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ganeti-watcher: restarted ganeti-rapi" in out.stdout.splitlines()
    assert cluster.is_running(constants.RAPI, cluster.master)
    assert RapiClient(cluster, "reader").request("GET", "/version").body == 2
    again = watcher(cluster)
    assert "ganeti-rapi" not in again.stdout, again.stdout
    # a node other than the master never runs it
    node2 = cluster.nodes[1]
    assert "ganeti-rapi" not in watcher(cluster, node2).stdout
    assert not cluster.is_running(constants.RAPI, node2)


def test_a_cluster_made_before_rapi_gets_it_at_its_next_start(tmp_path: Path) -> None:
    """No rapi_port in the state file and no rapi.pem: start picks a port on the
    master's address, records it, and the daemon makes its certificate."""
    root = tmp_path / "old"
    made = LocalCluster.create(root, 1, subnet=random_subnet())
    state = json.loads((root / STATE_FILE).read_text())
    del state["rapi_port"]
    (root / STATE_FILE).write_text(json.dumps(state))
    made.master.paths.rapi_cert.unlink()
    cluster = LocalCluster(root)
    assert cluster.rapi_port is None
    with pytest.raises(RuntimeError):
        _ = cluster.rapi_address
    try:
        cluster.start(log=lambda _msg: None)
        assert cluster.rapi_port is not None
        assert LocalCluster(root).rapi_address == (cluster.master.address, cluster.rapi_port)
        assert cluster.master.paths.rapi_cert.exists()
        add_rapi_user(cluster, "admin", "secret")
        assert RapiClient(cluster).request("GET", "/version").body == 2
        status = subprocess.run([sys.executable, str(SOURCE_TOP / "tools" / "local-cluster"),
                                 "--root", str(root), "status"], capture_output=True,
                                text=True, timeout=WAIT, check=True).stdout
        host, port = cluster.rapi_address
        assert "ganeti-rapi running" in status and f"RAPI: https://{host}:{port}/" in status
    finally:
        cluster.stop(log=lambda _msg: None)
    assert not cluster.is_running(constants.RAPI, cluster.master)
