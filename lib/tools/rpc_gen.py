"""Write :mod:`ganeti.rpc.stubs` from the node procedures: ``python -m ganeti.tools.rpc_gen``.

The backend procedures (their annotated signatures and their
:func:`ganeti.rpc.contract.procedure` marks) are the one definition of every
RPC call.  The master must not import the node side at run time, so this
build step turns them into a plain module: the call table (timeouts, single
or multi node, encoders) and a mixin of typed ``call_<name>`` methods that
mypy checks at every call site.  Like Ganeti's build-time RPC client
generation, but the output is committed, and ``test_rpc_contract`` fails
when it is stale.

A build tool, not part of the master: it imports the node side (via
``ganeti.server.noded``, which knows which backend modules it serves), and
only when run, so it lives outside ``ganeti.rpc``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ganeti.rpc import contract, encoders
from ganeti.rpc.calltypes import TIMEOUT_KW

STUBS_FILE = Path(__file__).resolve().parents[1] / "rpc" / "stubs.py"
_LINE = 100
_NODE_SIDE = "ganeti.backend"

HEADER = '''\
"""Typed master-side RPC methods and the call table: GENERATED, do not edit.

Made by ``python -m ganeti.tools.rpc_gen`` from the backend procedures (their
annotated signatures and ``ganeti.rpc.contract.procedure`` marks), so the
master never imports the node side; ``test_rpc_contract`` fails when this
file is stale.  Payloads are typed in their JSON form.
"""
'''


class GenError(Exception):
    """A procedure cannot be turned into a master-side method."""


class _Imports:
    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {}

    def name(self, module: str, name: str) -> str:
        if module.startswith(_NODE_SIDE):
            raise GenError(f"{module}.{name} is a node-side type; put payload and argument"
                           " types in a module the master may import (ganeti.rpc.payloads)")
        self.names.setdefault(module, set()).add(name)
        return name


def _render(tp: Any, imports: _Imports) -> str:
    if tp is Any:
        return "Any"
    if tp is None or tp is type(None):
        return "None"
    if isinstance(tp, list):
        return "[" + ", ".join(_render(t, imports) for t in tp) + "]"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_render(a, imports) for a in args)
    if origin is typing.Literal:
        imports.name("typing", "Literal")
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        return f"{_render(origin, imports)}[{', '.join(_render(a, imports) for a in args)}]"
    if isinstance(tp, type):
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return imports.name(tp.__module__, tp.__qualname__)
    raise GenError(f"Cannot render type {tp!r}")


def _func_ref(func: Callable[..., Any], what: str) -> str:
    if getattr(func, "__module__", None) != encoders.__name__ or \
            getattr(encoders, func.__name__, None) is not func:
        raise GenError(f"{what} {func!r} must be a function of {encoders.__name__}")
    return f"encoders.{func.__name__}"


class _MasterParam(typing.NamedTuple):
    name: str
    annotation: str
    default: str | None
    encoder: str | None


def _encoder_type(func: Callable[..., Any], imports: _Imports) -> str:
    params = list(inspect.signature(func).parameters.values())
    hints = typing.get_type_hints(func)
    return _render(hints.get(params[0].name, Any), imports)


def _master_params(proc: contract.Procedure, imports: _Imports) -> list[_MasterParam]:
    meta = proc.meta
    if meta.prepare is not None:
        hints = typing.get_type_hints(meta.prepare)
        params = list(inspect.signature(meta.prepare).parameters.values())[1:]  # after paths
        return [_MasterParam(p.name, _render(hints.get(p.name, Any), imports),
                             None if p.default is p.empty else repr(p.default), None)
                for p in params]
    result = []
    for param in proc.params:
        encoder = meta.encoders.get(param.name)
        annotation = (_encoder_type(encoder, imports) if encoder is not None
                      else _render(param.annotation, imports))
        result.append(_MasterParam(
            param.name, annotation, None if param.required else repr(param.default),
            _func_ref(encoder, "Encoder") if encoder is not None else None))
    return result


def _wrap_doc(doc: str, indent: str) -> list[str]:
    text = doc.replace('"""', "'''")
    width = _LINE - len(indent) - 6
    lines = textwrap.wrap(text, width) or [""]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *(f"{indent}{line}" for line in lines[1:]),
            f'{indent}"""']


def _fits(line: str) -> bool:
    return len(line) <= _LINE


def _q(text: str) -> str:
    return json.dumps(text)


def _string_lines(prefix: str, text: str, indent: str, suffix: str) -> list[str]:
    """``prefix"text"suffix``, split into adjacent literals where too long."""
    line = f"{indent}{prefix}{_q(text)}{suffix}"
    if _fits(line):
        return [line]
    pieces = textwrap.wrap(text, _LINE - len(indent) - len(prefix) - 4,
                           drop_whitespace=False)
    inner = indent + " " * len(prefix)
    return ([f"{indent}{prefix}({_q(pieces[0])}"]
            + [f"{inner} {_q(piece)}" for piece in pieces[1:-1]]
            + [f"{inner} {_q(pieces[-1])}){suffix}"])


def _call_entry(proc: contract.Procedure, params: list[_MasterParam]) -> list[str]:
    meta = proc.meta
    indent = " " * 8
    timeout = (_q(meta.timeout) if isinstance(meta.timeout, str)
               else _func_ref(meta.timeout, "Timeout function"))
    lines = ["    RpcCall(", f"{indent}{_q(proc.name)}, {_q(proc.name)}, {timeout},"]
    args = [f"Arg({_q(p.name)}, {p.encoder})" if p.encoder else f"Arg({_q(p.name)})"
            for p in params]
    if args:
        one = f"{indent}({', '.join(args)}{',' if len(args) == 1 else ''}),"
        if _fits(one):
            lines.append(one)
        else:
            lines += [f"{indent}(", *(f"{indent}    {a}," for a in args), f"{indent}),"]
    if meta.single_node:
        lines.append(f"{indent}single_node=True,")
    if meta.prepare is not None:
        lines.append(f"{indent}prepare={_func_ref(meta.prepare, 'Prepare function')},")
    lines += _string_lines("doc=", proc.doc, indent, ",")
    lines.append("    ),")
    return lines


def _method(proc: contract.Procedure, params: list[_MasterParam], imports: _Imports
            ) -> list[str]:
    payload = _render(proc.returns, imports)
    if proc.meta.single_node:
        target, result = "node: str", f"RpcResult[{payload}]"
        target_name = "node"
    else:
        target, result = "nodes: Iterable[str]", f"dict[str, RpcResult[{payload}]]"
        target_name = "nodes"
    names = {p.name for p in params}
    if names & {"node", "nodes", "self", TIMEOUT_KW}:
        raise GenError(f"Procedure {proc.name}: an argument name is reserved on the master")
    sig = ["self", target]
    for p in params:
        sig.append(f"{p.name}: {p.annotation}" + (f" = {p.default}" if p.default else ""))
    sig += ["*", f"{TIMEOUT_KW}: float | None = None"]
    one_line = f"    def call_{proc.name}({', '.join(sig)}) -> {result}:"
    if _fits(one_line):
        lines = [one_line]
    else:
        lines = [f"    def call_{proc.name}(", *(f"        {s}," for s in sig),
                 f"    ) -> {result}:"]
    lines += _wrap_doc(proc.doc, "        ")
    call_args = ", ".join([_q(proc.name), target_name, *(p.name for p in params),
                           f"{TIMEOUT_KW}={TIMEOUT_KW}"])
    assign = f"        result: {result} = self.call({call_args})"
    if _fits(assign):
        lines.append(assign)
    else:
        lines += [f"        result: {result} = self.call(",
                  *textwrap.wrap(call_args + ")", _LINE - 12, initial_indent=" " * 12,
                                 subsequent_indent=" " * 12)]
    lines.append("        return result")
    return lines


def _import_lines(imports: _Imports) -> list[str]:
    def names(module: str) -> str:
        return ", ".join(sorted(imports.names[module], key=lambda n: (not n.isupper(), n)))
    stdlib = sorted(m for m in imports.names if not m.startswith("ganeti"))
    ours = sorted(m for m in imports.names if m.startswith("ganeti"))
    lines: list[str] = []
    for group in (stdlib, ours):
        if group and lines:
            lines.append("")
        for module in group:
            line = f"    from {module} import {names(module)}"
            if _fits(line):
                lines.append(line)
            else:
                lines += [f"    from {module} import (",
                          *(f"        {n}," for n in names(module).split(", ")), "    )"]
    return lines


def render(table: Mapping[str, contract.Procedure]) -> str:
    """The text of ganeti/rpc/stubs.py for these procedures."""
    imports = _Imports()
    calls: list[str] = []
    methods: list[str] = []
    for name in sorted(table):
        proc = table[name]
        params = _master_params(proc, imports)
        calls += _call_entry(proc, params)
        methods += ["", *_method(proc, params, imports)]
    out = [HEADER, "from __future__ import annotations", "",
           "from collections.abc import Iterable",
           "from typing import TYPE_CHECKING, Any", "",
           "from ganeti.rpc import encoders",
           "from ganeti.rpc.calltypes import Arg, RpcCall",
           "from ganeti.rpc.result import RpcResult", ""]
    type_imports = _import_lines(imports)
    if type_imports:
        out += ["if TYPE_CHECKING:", *type_imports, ""]
    out += ["# One entry per node procedure (ganeti.rpc.defs checks and indexes them)",
            "CALLS: tuple[RpcCall, ...] = (", *calls, ")", "", "",
            "class RpcStubs:",
            '    """One typed method per call; RpcRunner provides ``call``."""', "",
            "    def call(self, name: str, nodes: str | Iterable[str], *args: Any,",
            "             timeout: float | None = None, **kwargs: Any) -> Any:",
            "        raise NotImplementedError",
            *methods]
    return "\n".join(out) + "\n"


def _node_table() -> Mapping[str, contract.Procedure]:
    from ganeti.server import noded  # the node side, at build time only

    return noded.TABLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ganeti.tools.rpc_gen",
                                     description=__doc__)
    parser.add_argument("--check", action="store_true",
                        help="only report whether the stubs file is up to date")
    parser.add_argument("-o", "--output", type=Path, default=STUBS_FILE)
    opts = parser.parse_args(argv)
    text = render(_node_table())
    current = opts.output.read_text() if opts.output.exists() else ""
    if opts.check:
        if current != text:
            print(f"{opts.output} is stale: run python -m ganeti.tools.rpc_gen", file=sys.stderr)
            return 1
        return 0
    if current != text:
        opts.output.write_text(text)
        print(f"wrote {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
