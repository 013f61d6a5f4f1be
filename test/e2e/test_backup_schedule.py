"""Scheduled exports end to end: schedules via gnt-backup, the runner with a
controllable clock (--now), retained generations, prune, import of an older one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ganeti.backup import exportconf
from ganeti.backup import schedule as sched
from ganeti.tools.local_cluster import SOURCE_TOP, LocalCluster, NodeSpec

pytestmark = pytest.mark.e2e

MIB = 1 << 20
DAY = 86400


def run(cluster: LocalCluster, *argv: str, ok: bool = True) -> Any:
    proc = cluster.gnt(*argv)
    if ok:
        assert proc.returncode == 0, f"{' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def runner(cluster: LocalCluster, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SOURCE_TOP / "tools" / "ganeti-backup-runner"),
                           *argv], env=cluster.env(), capture_output=True, text=True,
                          timeout=300)


def node(cluster: LocalCluster, name: str) -> NodeSpec:
    return next(n for n in cluster.nodes if n.name == name)


def gen_root(cluster: LocalCluster, node_name: str, instance: str) -> Path:
    return node(cluster, node_name).paths.export_dir / ".generations" / instance


def generations(cluster: LocalCluster, node_name: str, instance: str) -> list[str]:
    root = gen_root(cluster, node_name, instance)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def disk_file(cluster: LocalCluster, instance: str) -> Path:
    proc = run(cluster, "gnt-instance", "list", "--no-headers", "-o", "name", instance)
    assert instance in proc.stdout
    data = json.loads(cluster.master.paths.cluster_conf_file.read_text())
    inst = next(i for i in data["instances"].values() if i["name"] == instance)
    return Path(inst["disks"][0]["logical_id"][1])


def fill(path: Path, marker: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(marker * (MIB // len(marker)))


def fake_generation(cluster: LocalCluster, node_name: str, instance: str,
                    stamp: float) -> str:
    """An older generation as a past run would have left it (real files, old timestamp)."""
    name = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(stamp))
    newest = node(cluster, node_name).paths.export_dir / instance
    target = gen_root(cluster, node_name, instance) / name
    shutil.copytree(newest, target)
    conf = (target / "config.ini").read_text()
    old = exportconf.parse(conf).timestamp
    (target / "config.ini").write_text(conf.replace(f"timestamp = {old}",
                                                    f"timestamp = {int(stamp)}"))
    return name


def listing(cluster: LocalCluster) -> list[list[str]]:
    out = run(cluster, "gnt-backup", "list", "-g", "--no-headers", "--separator", "|",
              "-o", "node,export,generation,size,newest").stdout
    return [line.split("|") for line in out.splitlines()]


def test_schedule_add_list_modify_remove(cluster: LocalCluster) -> None:
    run(cluster, "gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
        "--no-start", "--tags", "db", "s1")
    bad = run(cluster, "gnt-backup", "schedule", "add", "x", "--instances", "s1", "-n",
              "node3", "--cron", "0 25 * * *", ok=False)
    assert bad.returncode == 1 and "'cron'" in bad.stderr and "Bad hour" in bad.stderr
    bad = run(cluster, "gnt-backup", "schedule", "add", "x", "--instances", "nosuch", "-n",
              "node3", "--cron", "0 3 * * *", ok=False)
    assert bad.returncode == 1 and "'instances'" in bad.stderr and "nosuch" in bad.stderr
    bad = run(cluster, "gnt-backup", "schedule", "add", "x", "--instances", "s1",
              "--cron", "0 3 * * *", ok=False)
    assert bad.returncode == 1 and "'target_node'" in bad.stderr
    bad = run(cluster, "gnt-backup", "schedule", "add", "x", "--tags", "db", "-n", "node3",
              "--cron", "0 3 * * *", "--keep-daily", "-1", ok=False)
    assert bad.returncode == 2 and "--keep-daily" in bad.stderr
    run(cluster, "gnt-backup", "schedule", "add", "dbs", "--tags", "db", "--node-policy",
        "other", "--cron", "30 2 * * *", "--keep-last", "2", "--keep-weekly", "4")
    out = run(cluster, "gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
              "-o", "name,enabled,cron,instances,target,retention,shutdown_mode").stdout
    assert out.splitlines() == ["dbs|Y|30 2 * * *|tag:db|(other)|last=2,weekly=4|shutdown"]
    run(cluster, "gnt-backup", "schedule", "modify", "dbs", "--cron", "0 4 * * 0",
        "--keep-daily", "7", "-n", "node3", "--enabled", "no")
    out = run(cluster, "gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
              "-o", "name,enabled,cron,target,retention,next_run", "dbs").stdout
    assert out.splitlines() == ["dbs|N|0 4 * * 0|node3|last=2,weekly=4,daily=7|-"]
    bad = run(cluster, "gnt-backup", "schedule", "modify", "nosuch", "--enabled", "yes",
              ok=False)
    assert bad.returncode == 1 and "nosuch" in bad.stderr
    # a disabled schedule never runs on its own, run-now runs it anyway
    assert "Summary: 0 ok" in runner(cluster, "--now", "2031-01-01T00:00:00Z").stdout
    proc = run(cluster, "gnt-backup", "schedule", "run-now", "dbs")
    assert "OK        dbs s1 job" in proc.stdout and "export to node3" in proc.stdout
    assert (node(cluster, "node3").paths.export_dir / "s1" / "config.ini").is_file()
    run(cluster, "gnt-backup", "schedule", "remove", "dbs")
    assert run(cluster, "gnt-backup", "schedule", "list", "--no-headers").stdout == ""
    bad = run(cluster, "gnt-backup", "schedule", "remove", "dbs", ok=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr
    run(cluster, "gnt-backup", "remove", "s1")
    run(cluster, "gnt-instance", "remove", "-f", "s1")


def test_runner_retention_failure_and_import_of_an_older_generation(
        cluster: LocalCluster) -> None:
    run(cluster, "gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
        "--no-start", "g1")
    disk = disk_file(cluster, "g1")
    run(cluster, "gnt-backup", "schedule", "add", "nightly", "--instances", "g1", "-n",
        "node3", "--cron", "0 3 * * *", "--keep-last", "2", "--keep-daily", "2")
    # not due before the first slot after its creation
    data = json.loads(cluster.master.paths.cluster_conf_file.read_text())
    created = next(iter(data["backup_schedules"].values()))["ctime"]
    first_slot = sched.next_slot("0 3 * * *", created)
    proc = runner(cluster, "--now", str(first_slot - 1))
    assert proc.returncode == 0 and proc.stdout.splitlines() == [
        "Summary: 0 ok, 0 failed, 0 skipped"]
    fill(disk, b"AAAA")
    proc = runner(cluster, "--now", "2030-01-01T03:00:00Z")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK        nightly g1 job" in proc.stdout
    assert generations(cluster, "node3", "g1") == []          # only the newest so far
    # older runs' generations: two days back (twice), three and five days back
    now = time.time()
    fakes = [fake_generation(cluster, "node3", "g1", now - k * DAY)
             for k in (2.0, 2.1, 3.0, 5.0)]
    first = listing(cluster)[0][2]
    fill(disk, b"BBBB")
    # the master was down for days: one catch-up run, then retention
    proc = runner(cluster, "--now", "2030-01-05T10:00:00Z")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Summary: 1 ok, 0 failed, 0 skipped" in proc.stdout
    assert "4 slots since the last run, running once" in proc.stderr
    # keep-last 2: the new export and the previous one; keep-daily 2: the newest of the
    # two most recent other days (2 and 3 days back); 2.1 and 5 days back are pruned
    assert generations(cluster, "node3", "g1") == sorted([first, fakes[0], fakes[2]])
    rows = listing(cluster)
    assert [r[4] for r in rows] == ["Y", "N", "N", "N"]
    assert all(int(r[3]) >= 4 * MIB for r in rows)
    # the Ganeti-compatible view still shows one export
    plain = run(cluster, "gnt-backup", "list", "--no-headers", "--separator", "|").stdout
    assert plain.splitlines() == ["node3|g1"]
    # same time again: not due
    assert runner(cluster, "--now", "2030-01-05T10:30:00Z").stdout.startswith("Summary: 0")

    # prune --dry-run shows what would go and removes nothing
    out = run(cluster, "gnt-backup", "prune", "--keep-last", "1", "--dry-run", "g1").stdout
    assert f"node3 g1@{first}" in out and "would remove" in out
    assert "1 kept, 3 would remove" in out
    assert generations(cluster, "node3", "g1") == sorted([first, fakes[0], fakes[2]])

    # a failing export (pre hook veto on the target) leaves every generation untouched
    before = listing(cluster)
    hook_dir = node(cluster, "node3").paths.hooks_dir / "instance-export-pre.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    veto = hook_dir / "50-full"
    veto.write_text("#!/bin/sh\necho 'disk full'\nexit 1\n")
    veto.chmod(0o755)
    try:
        proc = runner(cluster, "--now", "2030-01-06T03:00:00Z")
    finally:
        veto.unlink()
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED    nightly g1 job" in proc.stdout and "disk full" in proc.stdout
    assert "Summary: 0 ok, 1 failed, 0 skipped" in proc.stdout
    assert listing(cluster) == before
    out = run(cluster, "gnt-backup", "schedule", "list", "--no-headers", "--separator", "|",
              "-o", "name,last_result").stdout
    assert out.strip() == "nightly|failed: g1"

    # import the older generation by NAME@GENERATION and by --generation
    assert (disk.read_bytes()[:4]) == b"BBBB"
    run(cluster, "gnt-backup", "import", "-n", "node1", "--src-node", "node3", "--src-dir",
        f"g1@{first}", "--no-start", "g1-old")
    assert disk_file(cluster, "g1-old").read_bytes()[:MIB] == b"AAAA" * (MIB // 4)
    run(cluster, "gnt-backup", "import", "-n", "node1", "--src-dir", "g1", "--generation",
        fakes[2], "--no-start", "g1-older")
    assert disk_file(cluster, "g1-older").read_bytes()[:4] == b"AAAA"
    bad = run(cluster, "gnt-backup", "import", "-n", "node1", "--src-node", "node3",
              "--src-dir", "g1", "--generation", "20990101T000000Z", "--no-start", "g1-x",
              ok=False)
    assert bad.returncode == 1 and "20990101T000000Z" in bad.stderr
    bad = run(cluster, "gnt-backup", "import", "-n", "node1", "--src-dir",
              "g1@20990101T000000Z", "--no-start", "g1-x", ok=False)
    assert bad.returncode == 1 and "No export of g1@20990101T000000Z" in bad.stderr
    # remove one older generation; the newest is refused (gnt-backup remove handles it)
    run(cluster, "gnt-backup", "remove", f"g1@{fakes[2]}")
    assert generations(cluster, "node3", "g1") == sorted([first, fakes[0]])
    newest = listing(cluster)[0][2]
    bad = run(cluster, "gnt-backup", "remove", "g1", "--generation", newest, ok=False)
    assert bad.returncode == 1 and "newest export" in bad.stderr
    for name in ("g1-old", "g1-older", "g1"):
        run(cluster, "gnt-instance", "remove", "-f", name)
    run(cluster, "gnt-backup", "schedule", "remove", "nightly")
    assert os.path.isdir(gen_root(cluster, "node3", "g1"))


def test_two_schedules_with_different_targets_keep_both_histories(
        cluster: LocalCluster) -> None:
    """Issue 21 defect 1: each schedule's export used to delete the other's newest."""
    run(cluster, "gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=4M",
        "--no-start", "two1")
    disk = disk_file(cluster, "two1")
    run(cluster, "gnt-backup", "schedule", "add", "near", "--instances", "two1",
        "--node-policy", "primary", "--cron", "0 1 * * *", "--keep-last", "5")
    run(cluster, "gnt-backup", "schedule", "add", "far", "--instances", "two1", "-n",
        "node3", "--cron", "0 2 * * *", "--keep-last", "5")
    for marker in (b"AAAA", b"BBBB"):
        fill(disk, marker)
        for name in ("near", "far"):
            proc = run(cluster, "gnt-backup", "schedule", "run-now", name)
            assert "Removed the older export" not in proc.stdout, proc.stdout
    rows = [r for r in listing(cluster) if r[1] == "two1"]
    assert sorted((r[0], r[4]) for r in rows) == [("node2", "N"), ("node2", "Y"),
                                                  ("node3", "N"), ("node3", "Y")]
    for node_name in ("node2", "node3"):
        newest = node(cluster, node_name).paths.export_dir / "two1" / "disk0.img"
        assert newest.read_bytes()[:MIB] == b"BBBB" * (MIB // 4)
        older = gen_root(cluster, node_name, "two1") / generations(cluster, node_name,
                                                                    "two1")[0]
        assert (older / "disk0.img").read_bytes()[:MIB] == b"AAAA" * (MIB // 4)
    for name in ("near", "far"):
        run(cluster, "gnt-backup", "schedule", "remove", name)
    run(cluster, "gnt-instance", "remove", "-f", "two1")
