"""Limits and typed errors on a live two-node cluster, through the CLI and raw sockets.

Every case: a typed error naming the field, nothing left behind (no disk file,
directory, instance, lock or staging dir), and the daemons keep serving.
``GANETI_SOAK=1`` repeats the hostile submissions many more times.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import (
    add_instance,
    client,
    fill_disk,
    import_planted,
    instance_running,
    luxi_exchange,
    master_pid,
    rpc_post,
    rss_kib,
    scaled,
)

from ganeti import config_journal, constants, errors, limits

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

cluster = cluster_fixture("limits", 2)
FIGURES: dict[str, Any] = {}


def _instances(cluster: E2ECluster) -> list[str]:
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name").stdout
    return out.split()


def _storage_entries(cluster: E2ECluster) -> list[str]:
    found = []
    for node in cluster.nodes:
        base = node.paths.file_storage_dir
        if base.exists():
            found += [f"{node.name}:{p.relative_to(base)}" for p in base.rglob("*")]
    return sorted(found)


def _export_entries(export_dir: Path) -> list[str]:
    """Exports and leftovers in an export dir; the empty .staging/.journal dirs are layout."""
    if not export_dir.exists():
        return []
    entries = []
    for entry in sorted(export_dir.iterdir()):
        if entry.name in (".staging", ".journal") and entry.is_dir():
            entries += [f"{entry.name}/{child.name}" for child in sorted(entry.iterdir())]
        else:
            entries.append(entry.name)
    return entries


def _assert_nothing_left(cluster: E2ECluster, before: list[str], name: str) -> None:
    assert _storage_entries(cluster) == before
    locks = cluster.gnt("gnt-debug", "locks", "--no-headers", "-o", "name").stdout
    assert name not in locks, locks


# --- gnt-instance add -------------------------------------------------------------------


@pytest.mark.parametrize("extra, needle", [
    ([f"--disk={i}:size=1M" for i in range(17)], "OP_INSTANCE_CREATE.disks"),
    (["--disk=0:size=9223372036854775808"], "disks[0].size"),
    (["--disk=0:size=" + "9" * 400], "disks[0].size"),
    (["--disk=0:size=1M", "--disk=1:size=9223372036854775808"], "disks[1].size"),
    (["--disk=0:size=1M", "-o", "../../bin/sh"], "os_type"),
    (["--disk=0:size=1M", "-B", "memory=9223372036854775808"], "beparams.maxmem"),
    ([f"--net={i}:mode=bridged" for i in range(9)] + ["--disk=0:size=1M"],
     "OP_INSTANCE_CREATE.nics"),
], ids=["17-disks", "2^63-MiB", "400-digits", "2^63-second-disk", "os-path", "2^63-memory",
        "9-nics"])
def test_add_beyond_limits_fails_cleanly(cluster: E2ECluster, extra: list[str],
                                         needle: str) -> None:
    before = _storage_entries(cluster)
    res = cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--no-start",
                      *extra, "big1", ok=False)
    assert res.returncode != 0
    assert needle in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "OverflowError" not in res.stderr
    assert "big1" not in _instances(cluster)
    _assert_nothing_left(cluster, before, "big1")


@pytest.mark.parametrize("duration", ["1e308", "nan", "inf", "86401"])
def test_test_delay_bounds_through_the_cli(cluster: E2ECluster, duration: str) -> None:
    res = cluster.gnt("gnt-debug", "delay", duration, ok=False)
    assert res.returncode != 0 and "OP_TEST_DELAY.duration" in res.stderr, res.stderr
    assert "OverflowError" not in res.stderr


def test_names_at_the_limit(cluster: E2ECluster) -> None:
    """201 characters: refused naming the field; 200: created, exported, re-imported."""
    res = cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk",
                      "0:size=1M", "--no-start", "n" * 201, ok=False)
    assert res.returncode != 0 and "OP_INSTANCE_CREATE.instance_name" in res.stderr
    name = "n" * 200
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk", "0:size=1M",
                "--no-start", "-o", "debootstrap+default", name)
    try:
        cluster.gnt("gnt-backup", "export", "-n", "node2", name)
        cluster.gnt("gnt-instance", "remove", "-f", name)
        cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node2",
                    "--no-start", name)
        out = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name,os").stdout
        assert f"{name} debootstrap+default" in out
    finally:
        cluster.gnt("gnt-instance", "remove", "-f", name, ok=False)
        cluster.gnt("gnt-backup", "remove", name, ok=False)


def test_export_refuses_an_instance_import_could_not_restore(cluster: E2ECluster) -> None:
    """An instance beyond a limit (as made before the limit existed): refused up front."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk", "0:size=1M",
                "--no-start", "old1")
    cluster.stop(log=lambda _m: None)
    conf_file = cluster.master.paths.cluster_conf_file
    data, serial = config_journal.load(conf_file)
    inst = next(i for i in data["instances"].values() if i["name"] == "old1")
    inst["tags"] = ["t" * 129]
    config_journal.compact(conf_file, data, serial)
    cluster.start(log=lambda _m: None)
    try:
        res = cluster.gnt("gnt-backup", "export", "-n", "node2", "old1", ok=False)
        assert res.returncode != 0
        assert "could not be imported again, so it is not exported" in res.stderr
        assert "tags[0]: 129 characters is outside the limit 1..128" in res.stderr, res.stderr
        export_dir = cluster.node("node2").paths.export_dir
        assert _export_entries(export_dir) == []
    finally:
        cluster.gnt("gnt-instance", "remove", "-f", "old1")


# --- LUXI -------------------------------------------------------------------------------


def _failure(reply: Any) -> tuple[str, str]:
    assert reply is not None and reply["success"] is False, reply
    name, args = reply["result"]
    assert isinstance(getattr(errors, name, None), type), name
    return name, str(args[0])


def test_submit_100000_disks_is_refused_and_rss_stays_bounded(cluster: E2ECluster) -> None:
    pid = master_pid(cluster)
    rss_before = rss_kib(pid)
    op = {"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "huge1", "disk_template": "file",
          "pnode": "node1", "disks": [{"size": 1}] * 100_000}
    rounds = scaled(3, 30)
    elapsed = []
    peak = rss_before
    for _ in range(rounds):
        start = time.monotonic()
        with client(cluster, timeout=120) as cl, pytest.raises(errors.OpPrereqError) as err:
            cl.submit_job([op])
        elapsed.append(time.monotonic() - start)
        peak = max(peak, rss_kib(pid))
        message = err.value.args[0]
        assert "'OP_INSTANCE_CREATE.disks'" in message and "at most 16" in message
        assert len(message) < 1000
    rss_after = rss_kib(pid)
    FIGURES["100k disks"] = (f"{rounds} submissions of {len(json.dumps(op)) // 1024} KiB,"
                             f" refused in {min(elapsed):.2f}..{max(elapsed):.2f}s each;"
                             f" master RSS {rss_before // 1024} -> peak {peak // 1024}"
                             f" -> {rss_after // 1024} MiB")
    print(f"\n{FIGURES['100k disks']}")
    # before the limit: RSS grew from 50 MiB to 1 GiB and the config to 33 MB
    assert peak - rss_before < 200 * 1024, FIGURES["100k disks"]
    assert "huge1" not in _instances(cluster)
    conf = cluster.master.paths.cluster_conf_file.stat().st_size
    assert conf < 1024 * 1024


@pytest.mark.parametrize("payload, needle", [
    (b'{"method": "QueryJobs", "args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "nested deeper than 64 levels"),
    (b'{"method": "AutoArchiveJobs", "args": [NaN, 10]}', "NaN is not a JSON value"),
    (b'{"method": "AutoArchiveJobs", "args": [1e999, 10]}', "out of range"),
    (b'{"method": "AutoArchiveJobs", "args": [1e308, 10]}', "argument 'age'"),
    (b'{"method": "AutoArchiveJobs", "args": [10, 1e308]}', "argument 'timeout'"),
    (b'{"method": "SubmitJob", "args": [[{"OP_ID": "OP_TEST_DELAY", "duration": 1e308}]]}',
     "OP_TEST_DELAY.duration"),
    (b'{"method": "QueryJobs", "args": [null, ["\xff"]]}', "not UTF-8"),
], ids=["deep-nesting", "nan-age", "1e999-age", "1e308-age", "1e308-timeout",
        "1e308-delay", "non-utf8"])
def test_hostile_luxi_requests_get_typed_errors(cluster: E2ECluster, payload: bytes,
                                                needle: str) -> None:
    for _ in range(scaled(2, 50)):
        name, message = _failure(luxi_exchange(cluster, payload))
        assert needle in message, (name, message)
    with client(cluster) as cl:
        assert cl.query_cluster_info()["cluster_name"]


# --- RPC --------------------------------------------------------------------------------


@pytest.mark.parametrize("body, needle", [
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
    (b"[NaN]", "NaN is not a JSON value"),
    (b"[1e999]", "out of range"),
    (b'["\xff"]', "not UTF-8"),
])
def test_hostile_rpc_bodies_get_typed_errors(cluster: E2ECluster, body: bytes,
                                             needle: str) -> None:
    for _ in range(scaled(2, 50)):
        status, reply = rpc_post(cluster, "/test_delay", body)
        assert status == 400 and reply[0] is False and needle in reply[1], reply
    assert rpc_post(cluster, "/version", b"[]") == (200, [True, constants.PROTOCOL_VERSION])


# --- import ----------------------------------------------------------------------------


def test_import_of_non_utf8_config_names_the_file(cluster: E2ECluster) -> None:
    before = _storage_entries(cluster)
    res = import_planted(cluster, "latin1", {
        constants.EXPORT_CONF_FILE:
            b"[export]\nversion=0\ntimestamp=1\nsource=node1\nos=caf\xe9\n[instance]\n"
            b"name=latin1\ndisk_count=1\ndisk0_dump=disk0.img\ndisk0_size=1\nnic_count=0\n",
        "disk0.img": b"\0" * 4096})
    assert res.returncode != 0
    assert "config.ini is not UTF-8 text (undecodable byte at line 5" in res.stderr, \
        res.stderr
    assert "UnicodeDecodeError" not in res.stderr
    assert "latin1-copy" not in _instances(cluster)
    assert _storage_entries(cluster) == before


# --- gnt-cluster verify ----------------------------------------------------------------


def test_verify_reports_a_planted_orphan_disk_file(cluster: E2ECluster) -> None:
    res = cluster.gnt("gnt-cluster", "verify", ok=False)
    assert res.returncode == 0, res.stdout + res.stderr
    node2 = cluster.node("node2")
    stray = node2.paths.file_storage_dir / "ghost.example.com" / "0e1f.disk0"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"\0" * 1024)
    try:
        res = cluster.gnt("gnt-cluster", "verify", ok=False)
        assert res.returncode != 0
        output = res.stdout + res.stderr
        assert f"node node2: orphan disk file {stray}" in output, output
    finally:
        stray.unlink()
        stray.parent.rmdir()
    assert cluster.gnt("gnt-cluster", "verify", ok=False).returncode == 0


# --- disk full at the export target ---------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs",
                    str(path)], check=True, capture_output=True)


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def test_disk_full_at_the_target_says_it_once(cluster: E2ECluster) -> None:
    """A 4 MiB tmpfs as node2's export dir, a 16 MiB disk of random data: ENOSPC."""
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("needs root to mount a tmpfs")
    add_instance(cluster, "full1", "node1", "16M")
    fill_disk(cluster, "full1", 16)
    export_dir = cluster.node("node2").paths.export_dir
    _mount_tmpfs(export_dir, "4m")
    try:
        res = cluster.gnt("gnt-backup", "export", "-n", "node2", "--compress", "none",
                          "--long-sleep", "full1", ok=False)
        leftovers = _export_entries(export_dir)
    finally:
        _umount(export_dir)
    output = res.stdout + res.stderr
    FIGURES["disk full"] = [line for line in output.splitlines() if "space" in line]
    print("\n" + "\n".join(FIGURES["disk full"]))
    assert res.returncode != 0
    assert "No space left on device" in output, output
    for line in output.splitlines():
        for prefix in ("Receiver failed: ", "Sender failed: ", "disk/0: "):
            assert line.count(prefix) <= 1, line
        assert line.count("No space left on device") <= 1, line
    assert "Receiver failed: Receiver failed" not in output
    assert output.count("No space left on device") == 1, output
    assert leftovers == []  # the staging dir went with the failure
    assert instance_running(cluster, "full1")
    cluster.gnt("gnt-instance", "remove", "-f", "full1")


def test_daemons_alive_and_figures(cluster: E2ECluster) -> None:
    with client(cluster) as cl:
        assert cl.query_cluster_info()["cluster_name"]
    assert limits.DISKS.maximum == 16
    print(f"\nlimits figures: {FIGURES}")
