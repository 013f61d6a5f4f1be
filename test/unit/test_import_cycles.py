"""No import cycle in lib/ (lazy imports count) and no leak between master and node side.

The checker itself is tested on small packages written to tmp_path, so the
lib/ assertions cannot pass by the checker seeing nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ganeti.tools import import_cycles as ic

TOP = Path(__file__).resolve().parents[2]
LIB = TOP / "lib"


@pytest.fixture(scope="module")
def lib_graph() -> ic.ImportGraph:
    return ic.ImportGraph.of_package(LIB)


def test_no_import_cycle_in_lib(lib_graph: ic.ImportGraph) -> None:
    cycles = ic.find_cycles(lib_graph)
    if cycles:
        pytest.fail("import cycles (lazy imports count):\n"
                    + "\n".join(c.describe() for c in cycles), pytrace=False)


def test_master_and_node_side_do_not_import_each_other(lib_graph: ic.ImportGraph) -> None:
    leaks = ic.layer_violations(lib_graph)
    if leaks:
        pytest.fail("layer leaks:\n" + "\n".join(
            f"  {imp.describe()}: {why}" for imp, why in leaks), pytrace=False)


def test_every_allowance_is_still_needed(lib_graph: ic.ImportGraph) -> None:
    assert ic.unused_allowances(lib_graph) == []


def test_transfer_sides_are_where_their_daemons_need_them(lib_graph: ic.ImportGraph) -> None:
    modules = set(lib_graph.modules)
    assert {"ganeti.transfer.master.coordinator", "ganeti.transfer.master.oneside",
            "ganeti.transfer.master.policy", "ganeti.transfer.node.registry",
            "ganeti.transfer.node.sender", "ganeti.transfer.node.receiver",
            "ganeti.transfer.node.ioprio"} <= modules
    assert set(ic.SHARED_TRANSFER) <= modules
    # one module named "limits" (the cluster's), not two
    assert [m for m in modules if m.rpartition(".")[2] == "limits"] == ["ganeti.limits"]


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "pkg"


def _cycles(root: Path, kinds: tuple[str, ...] = ic.RUNTIME) -> list[list[str]]:
    graph = ic.ImportGraph.of_package(root, "pkg")
    return [c.members for c in ic.find_cycles(graph, kinds)]


def test_lazy_import_closes_a_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    from pkg.a import g\n    return g\n",
    })
    assert _cycles(root) == [["pkg.a", "pkg.b"]]


def test_implicit_package_import_closes_a_cycle(tmp_path: Path) -> None:
    # importing pkg.sub.x runs pkg/sub/__init__.py, which imports pkg.a back
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "import pkg.sub.x\n",
        "sub/__init__.py": "from pkg import a\n",
        "sub/x.py": "",
    })
    graph = ic.ImportGraph.of_package(root, "pkg")
    [cycle] = ic.find_cycles(graph)
    assert cycle.members == ["pkg.a", "pkg.sub"]
    assert any(imp.via == "pkg.sub.x" for imp in cycle.imports)


def test_package_importing_its_submodules_is_no_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "from pkg.drv import one\nfrom pkg.drv.one import One\n",
        "drv/__init__.py": "from pkg.drv import base, one\n",
        "drv/base.py": "",
        "drv/one.py": ("from pkg.drv import base\nimport pkg.drv\nfrom pkg import drv\n"
                       "class One: pass\n"),
    })
    assert _cycles(root) == []


def test_name_from_own_package_init_is_a_cycle(tmp_path: Path) -> None:
    # pkg/drv/__init__ imports one, and one reads a name pkg/drv/__init__ defines
    root = _package(tmp_path, {
        "__init__.py": "",
        "drv/__init__.py": "from pkg.drv.one import One\nREGISTRY = {}\n",
        "drv/one.py": "from pkg.drv import REGISTRY\nclass One: pass\n",
    })
    assert _cycles(root) == [["pkg.drv", "pkg.drv.one"]]


def test_type_checking_imports_count_only_when_asked(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                 "    from pkg.a import A\n"),
    })
    assert _cycles(root) == []
    assert _cycles(root, kinds=(*ic.RUNTIME, ic.TYPE)) == [["pkg.a", "pkg.b"]]


def test_import_module_of_a_spelled_out_name_closes_a_cycle(tmp_path: Path) -> None:
    # a registry importing the modules of a table, one of which imports the registry
    root = _package(tmp_path, {
        "__init__.py": "",
        "registry.py": ("import importlib\nMODULES = ('pkg.lu',)\n"
                        "def load():\n    return [importlib.import_module(m) for m in MODULES]\n"),
        "lu.py": "from pkg.registry import MODULES\n",
        "other.py": "NAMES = ('pkg.lu',)  # a string alone imports nothing\n",
    })
    graph = ic.ImportGraph.of_package(root, "pkg")
    [cycle] = ic.find_cycles(graph)
    assert cycle.members == ["pkg.lu", "pkg.registry"]
    assert [imp.kind for imp in cycle.imports if imp.source == "pkg.registry"] == [ic.DYNAMIC]


def test_relative_imports_resolve(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "",
        "sub/a.py": "from . import b\n",
        "sub/b.py": "def f():\n    from ..sub.a import x\n",
    })
    assert _cycles(root) == [["pkg.sub.a", "pkg.sub.b"]]


def test_layer_rule_names_the_import_and_honours_allowances(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "master/__init__.py": "",
        "master/lu.py": "def f():\n    from pkg.node import disk\n",
        "master/ok.py": "from pkg.node.disk import NAME_RULE\n",
        "node/__init__.py": "",
        "node/disk.py": "NAME_RULE = 1\n",
    })
    graph = ic.ImportGraph.of_package(root, "pkg")
    rules = ((("pkg.master",), ("pkg.node",), "through RPC only"),)
    found = ic.layer_violations(graph, rules)
    assert [(imp.source, imp.target, imp.line, imp.kind, why) for imp, why in found] == [
        ("pkg.master.lu", "pkg.node.disk", 2, ic.LAZY, "through RPC only"),
        ("pkg.master.ok", "pkg.node.disk", 1, ic.TOP, "through RPC only")]


def test_tool_prints_cycles_and_exits_1(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "def f():\n    import pkg.a\n",
    })
    tool = [sys.executable, str(TOP / "tools" / "import-cycles"), "--root", str(root),
            "--package", "pkg"]
    bad = subprocess.run(tool, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    assert "pkg.a -> pkg.b (line 1, top)" in bad.stdout
    assert "pkg.b -> pkg.a (line 2, lazy)" in bad.stdout
    (root / "b.py").write_text("")
    good = subprocess.run(tool, capture_output=True, text=True)
    assert good.returncode == 0 and "no import cycles among 3 modules" in good.stdout
