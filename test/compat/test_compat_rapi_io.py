"""Ganeti 3.0's RAPI client (python3-ganeti-rapi) creates, exports and prepares exports.

The client runs in the oracle's interpreter against the cluster's ganeti-rapi
daemon: CreateInstance in import mode, ExportInstance (local), PrepareExport
(remote), each followed with WaitForJobCompletion and GetJobStatus.  The data
of the disks is compared byte for byte; the remote preparation is checked
against the cluster domain secret.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.ganeti_oracle import Ganeti3

from ganeti.backup import remote

pytestmark = pytest.mark.e2e

MIB = 1 << 20
cluster = cluster_fixture("rapi-io-compat", node_count=2)


def ganeti_client(ganeti3: Ganeti3, cluster: E2ECluster, calls: str) -> Any:
    """Run ``calls`` with ``cl``, Ganeti's client logged in as admin; ``result`` back.

    ``wait(job)`` is WaitForJobCompletion (short period) plus the job's status."""
    host, port = cluster.rapi_address
    code = (
        "from ganeti.rapi import client\n"
        f"cl = client.GanetiRapiClient({host!r}, port={port}, username='admin',"
        " password='secret')\n"
        "def wait(job):\n"
        "    ok = cl.WaitForJobCompletion(job, period=0.2)\n"
        "    return {'job': job, 'ok': ok, 'status': cl.GetJobStatus(job)}\n"
        + calls)
    return ganeti3.eval(code, timeout=240, rapi_client=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_with_data(cluster: E2ECluster, name: str) -> str:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=8M",
                "--no-start", name)
    with open(cluster.disk_path(name), "r+b") as handle:
        handle.write(os.urandom(MIB))
        handle.seek(7 * MIB)
        handle.write(b"ganeti" * 1000)
    return sha256(cluster.disk_path(name))


def test_export_instance_local_and_create_instance_import(
        ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    digest = add_with_data(cluster, "cio1")
    export = ganeti_client(ganeti3, cluster, (
        "result = wait(cl.ExportInstance('cio1', 'local', 'node1', shutdown=True))\n"))
    assert export["ok"], json.dumps(export["status"])[:2000]
    assert export["status"]["opresult"] == [[True, [True]]]
    assert sha256(cluster.node("node1").paths.export_dir / "cio1" / "disk0.img") == digest
    created = ganeti_client(ganeti3, cluster, (
        "result = wait(cl.CreateInstance('import', 'cio1-copy', 'file', [], [],"
        " pnode='node2', src_node='node1', src_path='cio1', start=False,"
        " ip_check=False, name_check=False))\n"))
    assert created["ok"], json.dumps(created["status"])[:2000]
    assert created["status"]["opresult"] == [["node2"]]
    assert sha256(cluster.disk_path("cio1-copy")) == digest
    # a bad body is refused (400 naming the field) and submits nothing
    refused = ganeti_client(ganeti3, cluster, (
        "try:\n"
        "    cl.CreateInstance('import', 'cio1-bad', 'file', [{'size': -1}], [],"
        " pnode='node2', src_node='node1', src_path='cio1')\n"
        "    result = None\n"
        "except client.GanetiApiError as err:\n"
        "    result = [err.code, str(err)]\n"))
    assert refused is not None and refused[0] == 400
    assert "OP_INSTANCE_CREATE.disks[0].size" in refused[1]
    assert cluster.instance_conf("cio1-bad") is None
    for name in ("cio1-copy", "cio1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "cio1")


def test_prepare_export_remote(ganeti3: Ganeti3, cluster: E2ECluster) -> None:
    cluster.gnt("gnt-cluster", "renew-crypto", "--new-cluster-domain-secret")
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
                "--no-start", "cio2")
    prepared = ganeti_client(ganeti3, cluster,
                             "result = wait(cl.PrepareExport('cio2', 'remote'))\n")
    assert prepared["ok"], json.dumps(prepared["status"])[:2000]
    info = prepared["status"]["opresult"][0]
    assert set(info) == {"handshake", "x509_key_name", "x509_ca"}
    secret = cluster.master.paths.cluster_domain_secret_file.read_text().strip()
    # everything is signed with the cluster domain secret, as the destination checks it
    remote.check_handshake(secret, info["handshake"])
    key_name = remote.check_key_name(secret, info["x509_key_name"])
    cert_pem, _ = remote.load_signed_certificate(secret, info["x509_ca"], "x509_ca")
    assert "BEGIN CERTIFICATE" in cert_pem
    # the key stays on the instance's primary node
    key_dir = cluster.node("node2").paths.crypto_dir / "x509" / key_name
    assert (key_dir / "key.pem").is_file()
    # an unknown mode is the client's 400, and no job
    bad = ganeti_client(ganeti3, cluster, (
        "try:\n"
        "    cl.PrepareExport('cio2', 'sideways')\n"
        "    result = None\n"
        "except client.GanetiApiError as err:\n"
        "    result = [err.code, str(err)]\n"))
    assert bad is not None and bad[0] == 400 and "OP_BACKUP_PREPARE.mode" in bad[1]
    cluster.gnt("gnt-instance", "remove", "-f", "cio2")
