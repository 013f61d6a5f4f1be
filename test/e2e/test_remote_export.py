"""Remote (inter-cluster) export end to end: two real clusters on one machine.

Each cluster has its own roots and loopback subnet; they share a cluster
domain secret set with ``gnt-cluster renew-crypto``.  Instances move both
ways through ``tools/move-instance``; tampered, unsigned, expired or foreign
data and connections are refused and leave nothing half imported.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster, cluster_pair

from ganeti import constants, crypto, errors, luxi, opcodes
from ganeti.backend import x509
from ganeti.backup import remote
from ganeti.hypervisor import guest_sim
from ganeti.tools import move_instance
from ganeti.tools.local_cluster import SOURCE_TOP
from ganeti.transfer import protocol as proto

pytestmark = pytest.mark.e2e

MIB = 1 << 20
MOVE = SOURCE_TOP / "tools" / "move-instance"


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[E2ECluster, E2ECluster]]:
    """Two 2-node clusters sharing one cluster domain secret."""
    with cluster_pair(tmp_path_factory.mktemp("rie")) as pair:
        yield pair


def secret_file(cluster: E2ECluster) -> Path:
    return cluster.master.paths.cluster_domain_secret_file


def secret(cluster: E2ECluster) -> str:
    return secret_file(cluster).read_text().strip()


def move(src: E2ECluster, dst: E2ECluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(MOVE), "--src-root", src.master.root,
                           "--dest-root", dst.master.root, *argv],
                          capture_output=True, text=True, timeout=300, env=src.env())


def client(cluster: E2ECluster) -> luxi.Client:
    return luxi.Client(str(cluster.master.paths.master_socket))


def disk_path(cluster: E2ECluster, name: str) -> Path:
    conf = cluster.instance_conf(name)
    assert conf is not None, f"{name} not in the configuration"
    return Path(conf["disks"][0]["logical_id"][1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def disk_files(cluster: E2ECluster, name: str) -> list[Path]:
    return [p for n in cluster.nodes for p in n.paths.file_storage_dir.glob(f"{name}/*")
            if p.is_file()]


def add_with_data(cluster: E2ECluster, name: str, size_mib: int = 8) -> str:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                f"0:size={size_mib}M", "--no-start", name)
    with open(disk_path(cluster, name), "r+b") as handle:
        handle.write(os.urandom(MIB))
        handle.seek(5 * MIB)
        handle.write(b"remote" * 1000)
    return sha256(disk_path(cluster, name))


def job_error(cl: luxi.Client, op: opcodes.OpCode) -> str:
    with pytest.raises(errors.GenericError) as info:
        move_instance._run_one(cl, op, "test", lambda _m: None)
    return errors.format_error(info.value)


def prepare(cl: luxi.Client, name: str) -> dict[str, Any]:
    op = opcodes.OpBackupPrepare.create(instance_name=name, mode="remote")
    return dict(move_instance._run_one(cl, op, "source", lambda _m: None))


def start_import(src_cl: luxi.Client, dst_cl: luxi.Client, name: str, new_name: str
                 ) -> tuple[dict[str, Any], move_instance.Job, dict[str, Any]]:
    """Prepare on the source; start the destination's import and wait for its endpoints."""
    prepared = prepare(src_cl, name)
    data = move_instance._run_one(src_cl, opcodes.OpInstanceQueryData.create(
        instances=[name], static=True), "source", lambda _m: None)[name]
    opts = argparse.Namespace(start=False, dest_instance_name=new_name,
                              dest_primary_node="node2", shutdown_timeout=0)
    create = move_instance.import_opcode(data, opts, prepared, name)
    job = move_instance.Job(dst_cl, dst_cl.submit_job([create]), "destination",
                            lambda _m: None)
    while constants.ELOG_REMOTE_IMPORT not in job.structured:
        assert not job.finished, job.result()
        job.poll()
    return prepared, job, job.structured[constants.ELOG_REMOTE_IMPORT]


def export_op(name: str, prepared: dict[str, Any], entry: dict[str, Any],
              **overrides: Any) -> opcodes.OpCode:
    fields = {"instance_name": name, "mode": "remote", "target_node": entry["disks"],
              "x509_key_name": prepared["x509_key_name"],
              "destination_x509_ca": entry["x509_ca"], **overrides}
    return opcodes.OpBackupExport.create(**fields)


def finish(job: move_instance.Job) -> None:
    while not job.finished:
        job.poll()


# --- moves ---------------------------------------------------------------------------


def test_move_instance_both_ways_with_data_verified(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    src, dst = clusters
    digest = add_with_data(src, "mv1")
    proc = move(src, dst, "-n", "node2", "mv1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "[destination] Listening for 1 disk(s) of mv1 on node2" in out
    assert "[source] disk/0 finished" in out and "[destination] disk/0 finished" in out
    assert "Export (source): job" in out and "Import (destination): job" in out
    assert "FAILED" not in out
    # moved: gone from the source (default), same bytes at the destination
    assert src.instance_conf("mv1") is None and disk_files(src, "mv1") == []
    assert sha256(disk_path(dst, "mv1")) == digest
    assert dst.nodes[1].paths.file_storage_dir in disk_path(dst, "mv1").parents
    # the destination's per-import key is gone; the source's stays until it expires
    assert list(x509.x509_dir(dst.nodes[1].paths).iterdir()) == []
    assert list(x509.x509_dir(src.nodes[1].paths).iterdir())
    # and back, compressed, under a new name, keeping the source
    proc = move(dst, src, "-n", "node1", "--keep-source-instance", "--compress", "zstd",
                "--dest-instance-name", "mv1-back", "mv1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sha256(disk_path(src, "mv1-back")) == digest
    assert sha256(disk_path(dst, "mv1")) == digest
    conf = src.instance_conf("mv1-back")
    assert conf is not None and conf["disks"][0]["size"] == 8
    dst.gnt("gnt-instance", "remove", "-f", "mv1")
    src.gnt("gnt-instance", "remove", "-f", "mv1-back")


def test_running_instance_moves_and_runs_at_the_destination(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    src, dst = clusters
    src.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
            "-H", "process:write_interval_ms=2,blocks=128", "run1")
    written = src.wait_guest_generation("node2", "run1", 20)
    proc = move(src, dst, "-n", "node2", "run1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[source] Shutting down instance run1" in proc.stdout
    assert "[destination] * starting instance..." in proc.stdout
    assert src.instance_conf("run1") is None
    listing = dst.gnt("gnt-instance", "list", "--no-headers", "-o", "name,status",
                      "run1").stdout.split()
    assert listing == ["run1", "running"]
    conf = dst.instance_conf("run1")
    assert conf is not None and conf["hvparams"]["blocks"] == 128
    # the guest runs on the moved data: no torn block, generations from the source kept
    assert dst.wait_guest_generation("node2", "run1", written) > written
    report = guest_sim.verify_disk(disk_path(dst, "run1"))
    assert report.formatted and report.invalid_blocks == 0
    assert report.max_generation >= written
    dst.gnt("gnt-instance", "remove", "-f", "run1")


def test_wrong_secret_is_refused_and_nothing_is_created(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    src, dst = clusters
    digest = add_with_data(src, "ws1")
    dst.gnt("gnt-cluster", "renew-crypto", "--new-cluster-domain-secret")
    try:
        proc = move(src, dst, "ws1")
    finally:
        dst.gnt("gnt-cluster", "renew-crypto", "--cluster-domain-secret",
                str(secret_file(src)))
    assert proc.returncode == 1
    assert "source_handshake: HMAC does not match" in proc.stdout
    assert "Export (source): not started" in proc.stdout
    assert dst.instance_conf("ws1") is None and disk_files(dst, "ws1") == []
    assert sha256(disk_path(src, "ws1")) == digest      # source untouched
    src.gnt("gnt-instance", "remove", "-f", "ws1")


def test_tampered_unsigned_and_expired_data_is_refused(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    src, dst = clusters
    add_with_data(src, "tp1")
    key = secret(src)
    with client(src) as src_cl, client(dst) as dst_cl:
        prepared = prepare(src_cl, "tp1")
        data = move_instance._run_one(src_cl, opcodes.OpInstanceQueryData.create(
            instances=["tp1"], static=True), "source", lambda _m: None)["tp1"]
        opts = argparse.Namespace(start=False, dest_instance_name="tp1",
                                  dest_primary_node=None, shutdown_timeout=0)
        good_create = move_instance.import_opcode(data, opts, prepared, "tp1").to_dict()
        expired_pem, _ = crypto.generate_self_signed("expired", -60)
        expired = remote.sign_certificate(key, expired_pem)
        ca = prepared["x509_ca"]
        tampered_ca = ca.replace(ca.splitlines()[3], ca.splitlines()[3][::-1])
        unsigned_ca = ca.split("\n", 1)[1]
        handshake = list(prepared["handshake"])
        for change, message in (
                ({"source_handshake": [handshake[0], "0" * 40, handshake[2]]},
                 "source_handshake: HMAC does not match"),
                ({"source_handshake": [handshake[0] + 1, *handshake[1:]]},
                 "source_handshake: HMAC does not match"),
                ({"source_x509_ca": tampered_ca},
                 "source_x509_ca: certificate signature does not match"),
                ({"source_x509_ca": unsigned_ca}, "source_x509_ca: certificate is not signed"),
                ({"source_x509_ca": expired}, "expired"),
                ({"source_handshake": None}, "source_handshake is required")):
            op = opcodes.from_dict({**good_create, **change})
            assert message in job_error(dst_cl, op)
        assert dst.instance_conf("tp1") is None and disk_files(dst, "tp1") == []

        # the source checks the key name, the destination CA and every endpoint
        my_pem, _ = crypto.generate_self_signed("destination", 3600)
        entry = {"disks": [remote.sign_disk_info(key, 0, "127.0.0.1", 9, "m" * 32)],
                 "x509_ca": remote.sign_certificate(key, my_pem)}
        name, digest, salt = prepared["x509_key_name"]
        disk = list(entry["disks"][0])
        for overrides, message in (
                ({"x509_key_name": [name, "f" * 40, salt]}, "x509_key_name: HMAC does not"),
                ({"x509_key_name": [name.upper(), digest, salt]}, "x509_key_name: HMAC"),
                ({"target_node": [[disk[0], disk[1] + 1, *disk[2:]]]},
                 "target_node[0]: HMAC does not match"),
                ({"target_node": [[*disk[:2], "x" * 32, *disk[3:]]]},
                 "target_node[0]: HMAC does not match"),
                ({"target_node": []}, "0 destination(s) given"),
                ({"destination_x509_ca": expired}, "destination_x509_ca: Certificate"),
                ({"destination_x509_ca": unsigned_ca}, "is not signed"),
                ({"destination_x509_ca": None}, "destination_x509_ca is required")):
            text = job_error(src_cl, export_op("tp1", prepared, entry, **overrides))
            assert message in text, text
        # a key that expired and was cleaned up cannot be used any more
        for path in x509.x509_dir(src.nodes[1].paths).glob(f"{name}/*"):
            path.unlink()
        text = job_error(src_cl, export_op("tp1", prepared, entry))
        assert f"Certificate {name} does not exist on this node" in text
    assert src.instance_conf("tp1") is not None
    src.gnt("gnt-instance", "remove", "-f", "tp1")


def test_wrong_magic_is_refused_before_any_data(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    src, dst = clusters
    digest = add_with_data(src, "wm1")
    key = secret(src)
    with client(src) as src_cl, client(dst) as dst_cl:
        prepared, job, entry = start_import(src_cl, dst_cl, "wm1", "wm1")
        host, port, _magic, _h, _s = entry["disks"][0]
        wrong = {**entry, "disks": [remote.sign_disk_info(key, 0, host, port, "a" * 32)]}
        text = job_error(src_cl, export_op("wm1", prepared, wrong))
        assert "Export failed, errors in disk export: disk(s) 0" in text
        finish(job)
        with pytest.raises(errors.OpExecError, match="Wrong stream magic"):
            job.result()
    assert dst.instance_conf("wm1") is None and disk_files(dst, "wm1") == []
    assert sha256(disk_path(src, "wm1")) == digest
    src.gnt("gnt-instance", "remove", "-f", "wm1")


def _foreign_tls(host: str, port: int, magic: str, cert: tuple[str, str] | None,
                 tmp: Path) -> str:
    """Connect as a stranger; returns what happened (never a READY frame)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        pair = tmp / "foreign.pem"
        crypto.write_pem_pair(pair, *cert)
        ctx.load_cert_chain(str(pair))
    with socket.create_connection((host, port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(proto.encode_json(proto.HEADER,
                                              proto.make_header(magic, 8 * MIB, MIB, "none")))
                answer = tls.recv(1)
                assert answer == b"", f"a stranger got an answer: {answer!r}"
                return "closed"
        except (ssl.SSLError, OSError) as err:
            return f"refused: {err}"


def test_port_scan_and_foreign_clients_cannot_connect(
        clusters: tuple[E2ECluster, E2ECluster], tmp_path: Path) -> None:
    src, dst = clusters
    digest = add_with_data(src, "fc1")
    with client(src) as src_cl, client(dst) as dst_cl:
        prepared, job, entry = start_import(src_cl, dst_cl, "fc1", "fc1")
        host, port, magic, _h, _s = entry["disks"][0]
        for _ in range(3):      # a port scan: connect and go away
            socket.create_connection((host, port), timeout=10).close()
        outcomes = [_foreign_tls(host, port, magic, None, tmp_path),
                    _foreign_tls(host, port, magic,
                                 crypto.generate_self_signed("intruder", 3600), tmp_path)]
        assert all(o.startswith(("refused", "closed")) for o in outcomes), outcomes
        # the real source still gets through, and only its data lands
        result = move_instance._run_one(src_cl, export_op("fc1", prepared, entry),
                                        "source", lambda _m: None)
        assert result == [True, [True]]
        finish(job)
        assert job.result() == ["node2"]
    assert sha256(disk_path(dst, "fc1")) == digest
    dst.gnt("gnt-instance", "remove", "-f", "fc1")
    src.gnt("gnt-instance", "remove", "-f", "fc1")


# --- domain secret and cleaner ------------------------------------------------------


def test_renew_crypto_sets_and_refuses_clearly(
        clusters: tuple[E2ECluster, E2ECluster], tmp_path: Path) -> None:
    src, dst = clusters
    assert secret(src) == secret(dst) and len(secret(src)) >= 64
    assert secret_file(src).stat().st_mode & 0o777 == 0o600
    short = tmp_path / "short"
    short.write_text("abc\n")
    for argv, message in (
            ((), "exactly one of"),
            (("--new-cluster-domain-secret", "--cluster-domain-secret", str(short)),
             "exactly one of"),
            (("--cluster-domain-secret", str(short)), "at least 32 characters"),
            (("--cluster-domain-secret", str(tmp_path / "missing")), "cannot read")):
        proc = src.gnt("gnt-cluster", "renew-crypto", *argv, ok=False)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert secret(src) == secret(dst)


def test_cleaner_removes_only_expired_transfer_keys(
        clusters: tuple[E2ECluster, E2ECluster]) -> None:
    src, _dst = clusters
    node = src.nodes[1]
    add_with_data(src, "cl1", size_mib=1)
    with client(src) as cl:
        fresh = prepare(cl, "cl1")["x509_key_name"][0]
    old = x509.x509_dir(node.paths) / f"x509-{int(time.time()) - 90000}-{secrets.token_hex(8)}"
    old.mkdir(mode=0o700)
    cert, key = crypto.generate_self_signed("old", -60)
    crypto.write_pem_pair(old / x509.KEY_FILE, cert, key)
    (old / x509.CERT_FILE).write_text(cert)
    proc = subprocess.run([sys.executable, str(SOURCE_TOP / "tools" / "x509-cleaner"),
                           "--root", node.root, "-v"], capture_output=True, text=True,
                          timeout=60, env=src.env())
    assert proc.returncode == 0, proc.stderr
    assert f"removed expired transfer key {old.name}" in proc.stdout
    assert not old.exists()
    key_file = x509.x509_dir(node.paths) / fresh / x509.KEY_FILE
    assert key_file.is_file() and key_file.stat().st_mode & 0o777 == 0o600
    src.gnt("gnt-instance", "remove", "-f", "cl1")
