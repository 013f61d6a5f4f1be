"""Bandwidth limits and I/O priority of export copies on a real 3-node cluster.

The limits must reach the node daemons (the job log quotes what each side
reports it applies) and the copy threads of the node daemons must run with
the asked I/O class, level and nice while the export runs.  No wall-clock
assertions: the benchmark (test/bench/bench_bwlimit.py) measures the rates.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cluster import E2ECluster, output

from ganeti import constants, daemon
from ganeti.tools.local_cluster import SOURCE_TOP
from ganeti.transfer import priority
from ganeti.transfer.node import ioprio

pytestmark = pytest.mark.e2e

MIB = 1 << 20
WAIT = 120.0
COPY_THREADS = {"node2": ("gnt-xfer-send", "gnt-xfer-read"),
                "node3": ("gnt-xfer-recv", "gnt-xfer-write")}


def add_instance(cluster: E2ECluster, name: str, size_mib: int) -> None:
    """A stopped instance whose disk is all data (zero blocks would not be sent)."""
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                f"0:size={size_mib}M", "--no-start", name)
    inst = cluster.instance_conf(name)
    assert inst is not None
    Path(inst["disks"][0]["logical_id"][1]).write_bytes(os.urandom(size_mib * MIB))


def copy_threads(cluster: E2ECluster, node_name: str) -> dict[str, int]:
    """Kernel thread name -> tid of the node daemon's copy threads."""
    pid = daemon.read_pid(cluster.node(node_name).paths.pid_file(constants.NODED))
    assert pid is not None
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue  # ended meanwhile
        if name.startswith("gnt-xfer-"):
            found[name] = int(task.name)
    return found


def priorities_while_running(cluster: E2ECluster, proc: subprocess.Popen[str]
                             ) -> dict[str, tuple[tuple[int, int], int]]:
    """``{thread name: ((class, level), nice)}`` of all copy threads, seen mid-copy."""
    seen: dict[str, tuple[tuple[int, int], int]] = {}
    wanted = {name for names in COPY_THREADS.values() for name in names}
    deadline = time.monotonic() + WAIT
    while set(seen) != wanted and proc.poll() is None and time.monotonic() < deadline:
        for node_name in COPY_THREADS:
            for name, tid in copy_threads(cluster, node_name).items():
                try:
                    seen[name] = (ioprio.get(tid), os.getpriority(os.PRIO_PROCESS, tid))
                except OSError:
                    continue
        time.sleep(0.05)
    return seen


def start_export(cluster: E2ECluster, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SOURCE_TOP / "scripts" / "gnt-backup"), "export", *argv],
        env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def test_export_limits_reach_both_nodes_and_the_copy_threads(cluster: E2ECluster) -> None:
    add_instance(cluster, "lim1", 16)
    out = output(cluster.gnt("gnt-node", "modify", "--backup-bwlimit", "8192", "node3"))
    assert "backup_bwlimit -> 8192" in out
    listing = output(cluster.gnt("gnt-node", "list", "--no-headers", "--separator", "|",
                                 "-o", "name,backup_bwlimit"))
    assert {"node2|0", "node3|8192"} <= set(listing.split())
    assert "backup_bwlimit: 8192 KiB/s" in output(cluster.gnt("gnt-node", "info", "node3"))

    # 16 MiB at 2 MiB/s: long enough to look at the node daemons' threads
    proc = start_export(cluster, "-n", "node3", "--bwlimit", "2048", "--ionice-class",
                        "best-effort", "--ionice-level", "7", "lim1")
    seen = priorities_while_running(cluster, proc)
    out = finish(proc)
    assert ("Bandwidth limit 2048 KiB/s (2.0 MiB/s); node limits: node2 none, node3 8192"
            " KiB/s (8.0 MiB/s); I/O priority: best-effort level 7") in out
    # what each node daemon says it applies (its transfer status)
    assert ("disk/0 sender on node2: export limit 2048 KiB/s (2.0 MiB/s), I/O priority"
            " best-effort level 7") in out
    assert ("disk/0 receiver on node3: node limit 8192 KiB/s (8.0 MiB/s), I/O priority"
            " best-effort level 7") in out
    assert seen == {name: ((priority.IOPRIO_CLASS_BE, 7), 15)
                    for names in COPY_THREADS.values() for name in names}
    # nothing of the copy is left behind in the daemons
    assert not copy_threads(cluster, "node2") and not copy_threads(cluster, "node3")

    # an import counts against the node limits too
    out = output(cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                             "--src-dir", "lim1", "--no-start", "lim1-copy"))
    assert "node limits: node3 8192 KiB/s (8.0 MiB/s), node1 none" in out
    assert "disk/0 sender on node3: node limit 8192 KiB/s (8.0 MiB/s)" in out

    cluster.gnt("gnt-node", "modify", "--backup-bwlimit", "none", "node3")
    assert "backup_bwlimit: none" in output(cluster.gnt("gnt-node", "info", "node3"))
    for name in ("lim1-copy", "lim1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "lim1")


def test_cluster_defaults_apply_unless_the_export_overrides(cluster: E2ECluster) -> None:
    add_instance(cluster, "lim2", 16)
    cluster.gnt("gnt-cluster", "modify", "--backup-bwlimit", "4096",
                "--backup-ionice-class", "idle")
    try:
        proc = start_export(cluster, "-n", "node3", "lim2")
        seen = priorities_while_running(cluster, proc)
        out = finish(proc)
        assert ("Bandwidth limit 4096 KiB/s (4.0 MiB/s); node limits: node2 none, node3"
                " none; I/O priority: idle") in out
        assert "disk/0 sender on node2: export limit 4096 KiB/s (4.0 MiB/s), I/O" \
               " priority idle" in out
        assert seen and all(value == ((priority.IOPRIO_CLASS_IDLE, 0), 19)
                            for value in seen.values()), seen
        # 0 on the command line: no limit for this export, whatever the default
        out = output(cluster.gnt("gnt-backup", "export", "-n", "node3", "--bwlimit", "0",
                                 "--ionice-class", "best-effort", "lim2"))
        assert "Bandwidth limit none; node limits: node2 none, node3 none; I/O priority:" \
               " best-effort level 4" in out
        assert "export limit" not in out
    finally:
        cluster.gnt("gnt-cluster", "modify", "--backup-bwlimit", "none",
                    "--backup-ionice-class", "none")
    cluster.gnt("gnt-instance", "remove", "-f", "lim2")
    cluster.gnt("gnt-backup", "remove", "lim2")


def test_bad_limits_are_refused_naming_the_field(cluster: E2ECluster) -> None:
    proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "--bwlimit", "-5", "x", ok=False)
    assert proc.returncode != 0 and "bwlimit" in proc.stderr + proc.stdout
    proc = cluster.gnt("gnt-backup", "export", "-n", "node3", "--ionice-level", "9", "x", ok=False)
    assert proc.returncode != 0 and "ionice_level" in proc.stderr + proc.stdout
    proc = cluster.gnt("gnt-node", "modify", "--backup-bwlimit", "fast", "node3", ok=False)
    assert proc.returncode != 0 and "backup_bwlimit" in proc.stderr
    assert "backup_bwlimit: none" in output(cluster.gnt("gnt-node", "info", "node3"))
