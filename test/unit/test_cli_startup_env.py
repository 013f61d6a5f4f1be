"""The gnt-* scripts without the README's environment step: one line saying what to do.

Two ways to get there: an interpreter that cannot import the package at all (the
system python3, or here the venv's python with -I -S: no site-packages), and one
that finds the package but not a dependency a command imports when it runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((TOP / "scripts").glob("gnt-*"))


def _one_line(proc: subprocess.CompletedProcess[str], prog: str, missing: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # no traceback
    line = lines[0]
    assert line.startswith(f"{prog}: No module named '{missing}'"), line
    assert "README" in line and "tools/setup-env" in line and ".venv/bin" in line
    return line


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_package_not_importable(script: Path, tmp_path: Path) -> None:
    assert script.stat().st_mode & 0o111  # run as the administrator would: executable
    proc = subprocess.run([sys.executable, "-I", "-S", str(script), "list"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin"})
    line = _one_line(proc, script.name, "ganeti")
    assert f"(python: {sys.executable})" in line


def _without_dependencies(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a script where only the package (no site-packages: no pydantic) is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "ganeti").symlink_to(TOP / "lib")
    return subprocess.run([sys.executable, "-S", str(TOP / "scripts" / argv[0]), *argv[1:]],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pkg),
                               "GANETI_ROOT": str(tmp_path / "root")})


def test_dependency_missing_for_options(tmp_path: Path) -> None:
    """gnt-cluster modify's options come from a pydantic model, built when it runs."""
    proc = _without_dependencies(tmp_path, "gnt-cluster", "modify", "--backup-bwlimit", "5")
    _one_line(proc, "gnt-cluster", "pydantic")


def test_dependency_missing_for_the_job(tmp_path: Path) -> None:
    """gnt-instance stop builds its opcode (pydantic) when it runs."""
    proc = _without_dependencies(tmp_path, "gnt-instance", "stop", "inst1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert "No module named" in proc.stderr and "tools/setup-env" in proc.stderr


def test_list_needs_no_dependency(tmp_path: Path) -> None:
    """A list command needs only the standard library: it gets as far as the master."""
    proc = _without_dependencies(tmp_path, "gnt-instance", "list")
    assert proc.returncode == 1
    assert "Master daemon is not running" in proc.stderr, proc.stderr
