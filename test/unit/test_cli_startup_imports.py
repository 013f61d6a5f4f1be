"""The gnt-* scripts import only what the command run needs (issue 18, start-up speed).

Each case runs the real script in a fresh interpreter with ``-X importtime`` (which
names every module imported) against a root without a master: the command gets as
far as connecting, fails with its usual one-line error, and must not have loaded
pydantic, the opcode and object models, the configuration, bootstrap or crypto.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
SCRIPTS = TOP / "scripts"

# modules a list, info or help command has no use for (each costs 50-500 ms to import)
HEAVY = ("pydantic", "pydantic_core", "ganeti.opcodes", "ganeti.objects", "ganeti.config",
         "ganeti.bootstrap", "ganeti.crypto", "cryptography", "pyparsing")

GNT_SCRIPTS = sorted(p.name for p in SCRIPTS.glob("gnt-*"))

# commands that only ask the master (no job): (script, argv)
QUERY_COMMANDS = [
    ("gnt-job", ["list"]),
    ("gnt-job", ["list", "--no-headers", "-o", "id,status", "1", "2"]),
    ("gnt-instance", ["list"]),
    ("gnt-instance", ["list", "-o", "+oper_vcpus", "--units", "g", "web*"]),
    ("gnt-backup", ["list"]),
    ("gnt-backup", ["list", "--node", "node2", "inst1"]),
    ("gnt-backup", ["list", "-g"]),
    ("gnt-node", ["list"]),
    ("gnt-node", ["info", "node1"]),
    ("gnt-debug", ["locks"]),
    ("gnt-cluster", ["info"]),
    ("gnt-cluster", ["master-ping", "--timeout", "1"]),
    ("gnt-instance", ["list-tags", "inst1"]),
    ("gnt-job", ["info", "1"]),
    ("gnt-instance", ["info", "inst1"]),
    ("gnt-instance", ["info", "--static", "inst1"]),
]


def _imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines ("import time: self | cumulative | name")."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _run(script: str, argv: list[str], root: Path) -> tuple[subprocess.CompletedProcess[str],
                                                            set[str]]:
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "GANETI_ROOT": str(root), "LANG": "C.UTF-8"}
    proc = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPTS / script), *argv],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    return proc, _imported(proc.stderr)


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)


def test_every_script_is_covered() -> None:
    assert GNT_SCRIPTS == ["gnt-backup", "gnt-cluster", "gnt-debug", "gnt-instance",
                           "gnt-job", "gnt-node"]
    assert {script for script, _argv in QUERY_COMMANDS} == set(GNT_SCRIPTS)


@pytest.mark.parametrize("script", GNT_SCRIPTS)
def test_top_level_help_is_light(script: str, tmp_path: Path) -> None:
    proc, modules = _run(script, ["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "COMMAND" in proc.stdout
    assert "ganeti.cli" in modules  # the check below looks at the real import list
    assert _heavy(modules) == []


@pytest.mark.parametrize(("script", "argv"), QUERY_COMMANDS,
                         ids=[" ".join([s, *a]) for s, a in QUERY_COMMANDS])
def test_query_command_is_light(script: str, argv: list[str], tmp_path: Path) -> None:
    proc, modules = _run(script, argv, tmp_path)
    # no master under this root: the command ran up to connecting and said so in one line
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert any("Master daemon is not running" in line for line in errors), errors
    assert "Traceback" not in proc.stderr
    assert _heavy(modules) == []


@pytest.mark.parametrize(("script", "argv"), QUERY_COMMANDS,
                         ids=[" ".join([s, *a]) for s, a in QUERY_COMMANDS])
def test_query_command_help_is_light(script: str, argv: list[str], tmp_path: Path) -> None:
    proc, modules = _run(script, [argv[0], "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: ")
    assert _heavy(modules) == []


def test_bad_list_option_fails_before_connecting(tmp_path: Path) -> None:
    """A bad option is refused by the parser, naming the option, before any request."""
    proc, modules = _run("gnt-instance", ["list", "--units", "x"], tmp_path)
    assert proc.returncode == 2
    assert "--units" in proc.stderr
    assert "Master daemon" not in proc.stderr
    assert _heavy(modules) == []


# --- the rule, statically: no heavy import at module level ---------------------------------

# imported only by the commands that need them (gnt-backup schedule ..., prune: see
# cli.deferred_command in gnt_backup.py); their options and field tables come from the
# schedule and settings models at import time
LAZILY_IMPORTED = {"ganeti.client.gnt_backup_schedule"}
CLIENT_MODULES = sorted(
    ["ganeti.cli", "ganeti.luxi"]
    + [f"ganeti.client.{p.stem}" for p in (TOP / "lib" / "client").glob("*.py")
       if p.stem != "__init__"])


def _module_level_imports(path: Path) -> list[str]:
    """Modules imported when ``path`` is imported (not in functions or TYPE_CHECKING)."""
    import ast

    names: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
                names.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
    visit(ast.parse(path.read_text()).body)
    return names


@pytest.mark.parametrize("module", CLIENT_MODULES)
def test_no_heavy_module_level_import(module: str) -> None:
    path = TOP / "lib" / (module.removeprefix("ganeti.").replace(".", "/") + ".py")
    heavy = [name for name in _module_level_imports(path)
             if name.split(".")[0] in HEAVY or any(name == h or name.startswith(h + ".")
                                                  for h in HEAVY)]
    if module in LAZILY_IMPORTED:
        assert heavy, f"{module} is light now: drop it from LAZILY_IMPORTED"
    else:
        assert heavy == [], f"{module} imports {heavy} at module level"
