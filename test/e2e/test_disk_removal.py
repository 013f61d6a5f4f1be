"""Removing an instance removes its disks' snapshots too, on a real cluster.

A snapshot a crashed export left next to a file disk must not outlive the
disk: nothing would list it any more (its disk is gone from the config) and
``gnt-cluster verify`` would report it as an orphan forever.  LVM removes an
origin's snapshots with it; the file driver now does the same.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ganeti import config_journal
from ganeti.tools.local_cluster import LocalCluster

pytestmark = pytest.mark.e2e


def _disk_files(cluster: LocalCluster, name: str) -> list[Path]:
    data = config_journal.load(cluster.master.paths.cluster_conf_file)[0]
    inst = next(i for i in data["instances"].values() if i["name"] == name)
    return [Path(d["logical_id"][1]) for d in inst["disks"]]


def test_instance_removal_takes_leftover_snapshots(cluster: LocalCluster) -> None:
    add = cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk",
                      "0:size=4M", "--disk", "1:size=4M", "--no-start",
                      "snapleft1")
    assert add.returncode == 0, add.stdout + add.stderr
    disks = _disk_files(cluster, "snapleft1")
    planted = [disk.with_name(disk.name + ".snap-export-20260101T000000") for disk in disks]
    for disk, snap in zip(disks, planted, strict=True):
        shutil.copyfile(disk, snap)  # what a crash between snapshot and cleanup leaves

    gone = cluster.gnt("gnt-instance", "remove", "-f", "snapleft1")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert [p for p in [*disks, *planted] if p.exists()] == []
    assert not disks[0].parent.exists(), "the instance's storage directory goes too"
    verify = cluster.gnt("gnt-cluster", "verify")
    assert "orphan disk file" not in verify.stdout + verify.stderr
