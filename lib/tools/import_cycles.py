"""Import cycles and layer leaks of the ``ganeti`` package, read from its source.

An import inside a function still runs, only later, so it counts; so does
the package an import implies (``import ganeti.a.b`` runs ``ganeti/a/__init__``
first), and so does ``importlib.import_module`` of a module whose name is
spelled out in the calling module (e.g. a table of LU modules).  Imports
under ``if TYPE_CHECKING:`` never run and are left out unless asked for
(``--type-checking``).  ``--layers`` also checks that the
master side and the node side only meet through the shared modules
(:data:`LAYERS`), apart from the pairs in :data:`ALLOWED`.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "ganeti"

TOP = "top"
LAZY = "lazy"
DYNAMIC = "dynamic"  # a module named by a string in a module calling import_module
TYPE = "type-checking"
RUNTIME = (TOP, LAZY, DYNAMIC)

MASTER_SIDE = (
    "ganeti.cmdlib",
    "ganeti.rpc",
    "ganeti.transfer.master",
    "ganeti.client",
    "ganeti.server.masterd",
    "ganeti.server.luxi_server",
)
NODE_SIDE = (
    "ganeti.backend",
    "ganeti.transfer.node",
    "ganeti.storage",
    "ganeti.hypervisor",
    "ganeti.server.noded",
)
# What the node side must not import: the master's machinery.  The RPC call
# table itself (ganeti.rpc.defs) is the contract both ends share; its runner
# (ganeti.rpc.client) is the master's.
MASTER_ONLY = (
    "ganeti.cmdlib",
    "ganeti.rpc.client",
    "ganeti.transfer.master",
    "ganeti.client",
    "ganeti.server.masterd",
    "ganeti.server.luxi_server",
    "ganeti.mcpu",
    "ganeti.jqueue",
    "ganeti.context",
)
# The transfer modules both sides use (besides the package's own constants)
SHARED_TRANSFER = (
    "ganeti.transfer.protocol",
    "ganeti.transfer.checksum",
    "ganeti.transfer.ratelimit",
    "ganeti.transfer.priority",
)
# The remote API and its daemon: a LUXI client of masterd, like the gnt-* commands
RAPI_SIDE = ("ganeti.rapi", "ganeti.server.rapi")
# (importers, what they must not import, why); one source for the tool and its test
LAYERS: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (MASTER_SIDE, NODE_SIDE, "the master reaches node code only through RPC"),
    (NODE_SIDE, MASTER_ONLY, "node daemons run without the master's machinery"),
    (SHARED_TRANSFER, ("ganeti.transfer.master", "ganeti.transfer.node"),
     "what both transfer sides share depends on neither"),
    (RAPI_SIDE, ("ganeti.cmdlib", "ganeti.jqueue", "ganeti.mcpu", "ganeti.server.masterd",
                 "ganeti.server.luxi_server", "ganeti.rpc.client", *NODE_SIDE),
     "RAPI is a LUXI client of masterd: it submits jobs, never runs them"),
)
# (importer, imported) -> why the pair may stay; prefixes as in LAYERS
ALLOWED: dict[tuple[str, str], str] = {
    ("ganeti.cmdlib.instance_utils", "ganeti.hypervisor"):
        "hvparams are checked on the master against each driver's PARAMETERS, their"
        " one definition (as Ganeti does)",
    ("ganeti.cmdlib.instance", "ganeti.hypervisor.base"):
        "check_instance_name: the one rule for names that become node directories,"
        " applied before the job starts",
}


@dataclass(frozen=True)
class Import:
    """One reason why running ``source`` runs ``target``."""

    source: str
    target: str
    line: int
    kind: str  # TOP, LAZY, DYNAMIC or TYPE
    via: str | None = None  # the submodule imported, when target is its package

    def describe(self) -> str:
        how = self.kind if self.via is None else f"{self.kind}, package of {self.via}"
        return f"{self.source} -> {self.target} (line {self.line}, {how})"


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def find_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (the package's directory)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, kind: str = TOP) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with how it runs; a type-only block stays type-only."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, kind
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), TYPE)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), kind)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, TYPE if kind == TYPE else LAZY)
        else:
            yield from _walk(child, kind)


def _imports_dynamically(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                return True
    return False


class ImportGraph:
    """Who imports whom inside one package, with the line of each import."""

    def __init__(self, modules: Mapping[str, Path]) -> None:
        self.modules = dict(modules)
        self.imports: list[Import] = []
        for name, path in self.modules.items():
            tree = ast.parse(path.read_text(), str(path))
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for stmt, kind in _walk(tree):
                for target, attribute in self._targets(stmt, package):
                    self._add(name, target, stmt.lineno, kind, attribute)
            if _imports_dynamically(tree):
                for const in ast.walk(tree):
                    if (isinstance(const, ast.Constant) and isinstance(const.value, str)
                            and const.value in self.modules):
                        self._add(name, const.value, const.lineno, DYNAMIC)

    @classmethod
    def of_package(cls, root: Path, package: str = PACKAGE) -> ImportGraph:
        return cls(find_modules(root, package))

    def _known(self, name: str) -> str | None:
        """The module ``name`` is, or the one it is an attribute of."""
        while name and name not in self.modules:
            name = name.rpartition(".")[0]
        return name or None

    def _targets(self, stmt: ast.Import | ast.ImportFrom,
                 package: str) -> Iterator[tuple[str, bool]]:
        """(module, whether a name defined by that module's own code is read)."""
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                known = self._known(alias.name)
                if known:
                    yield known, False
            return
        if stmt.level:
            base = package.rsplit(".", stmt.level - 1)[0] if stmt.level > 1 else package
            source = f"{base}.{stmt.module}" if stmt.module else base
        else:
            source = stmt.module or ""
        known = self._known(source)
        if not known:
            return
        attribute = False
        for alias in stmt.names:
            if f"{source}.{alias.name}" in self.modules:
                yield f"{source}.{alias.name}", False  # its packages follow implicitly
            else:
                attribute = True
        if attribute:
            yield known, True

    def _add(self, source: str, target: str, line: int, kind: str,
             attribute: bool = False) -> None:
        """``target`` and each package above it that is not already running.

        A module's own packages run before it, so naming one as a module
        imports nothing; reading a name one defines still depends on its code.
        """
        if target == source or (within(source, target) and not attribute):
            return
        self.imports.append(Import(source, target, line, kind))
        package = target.rpartition(".")[0]
        while package and package in self.modules:
            if not within(source, package):
                self.imports.append(Import(source, package, line, kind, via=target))
            package = package.rpartition(".")[0]

    def edges(self, kinds: Iterable[str] = RUNTIME) -> dict[str, dict[str, list[Import]]]:
        """source -> target -> the imports behind that edge, of the kinds asked for."""
        wanted = set(kinds)
        result: dict[str, dict[str, list[Import]]] = {m: {} for m in self.modules}
        for imp in self.imports:
            if imp.kind in wanted:
                result[imp.source].setdefault(imp.target, []).append(imp)
        return result


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module, each sorted (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def shortest_cycle(graph: Mapping[str, Iterable[str]], start: str,
                   members: set[str]) -> list[str]:
    """The shortest path from ``start`` back to itself inside one component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if child not in members:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return [start]


@dataclass(frozen=True)
class Cycle:
    members: list[str]
    example: list[str]
    imports: list[Import]

    def describe(self) -> str:
        lines = [f"cycle of {len(self.members)} modules: {' -> '.join(self.example)}"]
        lines += [f"    {imp.describe()}" for imp in self.imports]
        return "\n".join(lines)


def find_cycles(graph: ImportGraph, kinds: Iterable[str] = RUNTIME) -> list[Cycle]:
    edges = graph.edges(kinds)
    cycles = []
    for members in strongly_connected(edges):
        inside = set(members)
        imports = [imp for m in members for target, imps in sorted(edges[m].items())
                   if target in inside for imp in imps]
        cycles.append(Cycle(members, shortest_cycle(edges, members[0], inside), imports))
    return cycles


def _allowed(imp: Import) -> bool:
    return any(within(imp.source, src) and within(imp.target, dst)
               for src, dst in ALLOWED)


def layer_violations(graph: ImportGraph,
                     rules: Sequence[tuple[tuple[str, ...], tuple[str, ...], str]] = LAYERS,
                     kinds: Iterable[str] = (*RUNTIME, TYPE)) -> list[tuple[Import, str]]:
    """Imports breaking a rule of ``rules``, with the rule's reason (type-only ones too)."""
    wanted = set(kinds)
    found = []
    for imp in graph.imports:
        if imp.kind not in wanted or imp.via is not None or _allowed(imp):
            continue
        for importers, forbidden, why in rules:
            if (any(within(imp.source, p) for p in importers)
                    and any(within(imp.target, p) for p in forbidden)):
                found.append((imp, why))
                break
    return found


def unused_allowances(graph: ImportGraph) -> list[tuple[str, str]]:
    """Entries of :data:`ALLOWED` no import needs any more (so they can go)."""
    used = {(src, dst) for imp in graph.imports for src, dst in ALLOWED
            if within(imp.source, src) and within(imp.target, dst)}
    return [pair for pair in ALLOWED if pair not in used]


def default_root() -> Path:
    import ganeti

    return Path(ganeti.__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="import-cycles", description=__doc__)
    parser.add_argument("--root", type=Path, default=None,
                        help="Directory of the package (default: ganeti's, as imported)")
    parser.add_argument("--package", default=PACKAGE,
                        help="Its import name (default: %(default)s)")
    parser.add_argument("--type-checking", action="store_true",
                        help="Count imports under 'if TYPE_CHECKING:' too")
    parser.add_argument("--layers", action="store_true",
                        help="Also report master-side/node-side layer leaks")
    opts = parser.parse_args(argv)
    graph = ImportGraph.of_package(opts.root or default_root(), opts.package)
    kinds = (*RUNTIME, TYPE) if opts.type_checking else RUNTIME
    cycles = find_cycles(graph, kinds)
    for cycle in cycles:
        print(cycle.describe())
    failed = bool(cycles)
    if opts.layers:
        for imp, why in layer_violations(graph):
            print(f"layer leak: {imp.describe()}: {why}")
            failed = True
    if not failed:
        print(f"no import cycles among {len(graph.modules)} modules")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
