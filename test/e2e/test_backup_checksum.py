"""Export checksums through gnt-backup: blake3-4m for new exports, sha256-4m still verified.

Exports made before the switch record ``sha256-4m:`` values in config.ini;
an import must re-read their dumps with that algorithm, and a value it does
not understand must stop the import before anything is created.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support.cluster import E2ECluster, output

from ganeti.backup import exportconf
from ganeti.transfer.checksum import checksum_file

pytestmark = pytest.mark.e2e

MIB = 1 << 20


def _disk(cluster: E2ECluster, name: str) -> Path | None:
    inst = cluster.instance_conf(name)
    return None if inst is None else Path(inst["disks"][0]["logical_id"][1])


def _set_recorded(conf: Path, value: str) -> None:
    text, count = re.subn(r"(?m)^disk0_checksum\s*=.*$", f"disk0_checksum = {value}",
                          conf.read_text())
    assert count == 1
    conf.write_text(text)


def test_old_sha256_export_imports_and_bad_value_is_refused(cluster: E2ECluster) -> None:
    cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node2", "--disk", "0:size=12M",
                "--no-start", "sum1")
    src = _disk(cluster, "sum1")
    assert src is not None
    with open(src, "r+b") as handle:
        handle.write(os.urandom(5 * MIB))     # crosses a 4 MiB block boundary
    cluster.gnt("gnt-backup", "export", "-n", "node3", "sum1")
    exp = cluster.node("node3").paths.export_dir / "sum1"
    conf = exp / "config.ini"
    recorded = exportconf.parse(conf.read_text()).disks[0].checksum
    assert recorded == checksum_file(exp / "disk0.img") == checksum_file(src)
    assert recorded.startswith("blake3-4m:")

    # as an export written before blake3: the sender must re-read with sha256
    _set_recorded(conf, checksum_file(exp / "disk0.img", "sha256-4m"))
    out = output(cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                             "--src-dir", "sum1", "--no-start", "sum1-old"))
    assert "All disks imported and verified" in out and "checksum sha256-4m:" in out
    copy = _disk(cluster, "sum1-old")
    assert copy is not None and copy.read_bytes() == src.read_bytes()

    # a value no node can compute: refused up front, nothing created, export kept
    _set_recorded(conf, "md5:0123")
    proc = cluster.gnt("gnt-backup", "import", "-n", "node1", "--src-node", "node3",
                       "--src-dir", "sum1", "--no-start", "sum1-bad", ok=False)
    assert proc.returncode != 0
    out = output(proc)
    assert "disk0_checksum" in out and "Unknown checksum algorithm in 'md5:0123'" in out
    assert _disk(cluster, "sum1-bad") is None
    assert (exp / "disk0.img").exists()
    for name in ("sum1-old", "sum1"):
        cluster.gnt("gnt-instance", "remove", "-f", name)
    cluster.gnt("gnt-backup", "remove", "sum1")
