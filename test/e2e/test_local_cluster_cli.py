"""tools/local-cluster start --subnet: the documented form works, a bad one leaves nothing."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from ganeti.tools.local_cluster import SOURCE_TOP, LocalCluster

pytestmark = pytest.mark.e2e


def local_cluster(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SOURCE_TOP / "tools" / "local-cluster"),
                           "--root", str(root), *argv], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("subnet", ["127.2", "127.2.0.5", "10.1.0", "127.300.0", "x"])
def test_bad_subnet_is_refused_before_anything_is_made(tmp_path: Path, subnet: str) -> None:
    root = tmp_path / "lc"
    proc = local_cluster(root, "start", "--nodes", "1", "--subnet", subnet)
    if root.exists():   # accepted after all: leave no daemons behind
        local_cluster(root, "stop")
    assert proc.returncode == 2 and "--subnet" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not root.exists()


def test_subnet_in_the_form_its_help_shows(tmp_path: Path) -> None:
    root = tmp_path / "lc"
    subnet = f"127.{random.randint(2, 250)}.{random.randint(0, 250)}"
    assert "such as 127.1.0" in local_cluster(root, "start", "--help").stdout
    proc = local_cluster(root, "start", "--nodes", "1", "--subnet", subnet)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert LocalCluster(root).master.address == f"{subnet}.1"
        status = local_cluster(root, "status").stdout
        assert f"{subnet}.1:" in status and "ganeti-noded running" in status
    finally:
        local_cluster(root, "stop")
