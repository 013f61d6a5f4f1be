"""The RPC contract: one annotated backend function per call, marked with :func:`procedure`.

A node procedure's signature *is* the call's definition.  Its parameters after
the :class:`~ganeti.backend.NodeContext` are the wire arguments, in order, with
their types; its return annotation is the payload type.  The decorator adds
what the signature cannot say: the timeout (a class or a function of the
master's arguments), whether the call targets one node or many, and the
master-side encoders (:mod:`ganeti.rpc.encoders`) turning master values into
wire values.

Both sides derive their view from it:

- the node daemon collects the marked functions of the backend modules it
  serves (:func:`collect`) and validates every call's arguments once, at the
  boundary, against the signature (:meth:`Procedure.validate`; one pydantic
  TypeAdapter per procedure, built when the table is built);
- the master never imports the node side: ``python -m ganeti.tools.rpc_gen`` writes
  :mod:`ganeti.rpc.stubs` (typed ``call_<name>`` methods and the call table)
  from the same functions, and a unit test fails when that file is stale.

This module is neutral: it imports neither the backend nor the RPC client.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pydantic
import typing_extensions

from ganeti import errors
from ganeti.rpc.calltypes import TIMEOUT_CLASSES, TIMEOUT_KW, TimeoutFn

# Attribute the decorator sets on a backend function
MARK = "__rpc_procedure__"
# Longest rendering of a bad value in an error message
_MAX_VALUE_REPR = 80


class ArgumentError(errors.RpcFail):
    """The arguments of a call do not match its procedure's signature."""


@dataclass(frozen=True)
class Meta:
    """What a procedure's signature does not say (set by :func:`procedure`)."""

    timeout: str | TimeoutFn = "normal"
    single_node: bool = False
    # master-side argument name -> encoder (ganeti.rpc.encoders)
    encoders: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    # rewrites all master-side arguments into the wire arguments (ganeti.rpc.encoders)
    prepare: Callable[..., list[Any]] | None = None
    name: str | None = None


_F = typing.TypeVar("_F", bound=Callable[..., Any])


def procedure(timeout: str | TimeoutFn = "normal", *, single_node: bool = False,
              encoders: Mapping[str, Callable[[Any], Any]] | None = None,
              prepare: Callable[..., list[Any]] | None = None,
              name: str | None = None) -> Callable[[_F], _F]:
    """Mark a backend function as the RPC procedure (and call) of its name."""
    if isinstance(timeout, str) and timeout not in TIMEOUT_CLASSES:
        raise ValueError(f"Unknown timeout class {timeout!r}")
    meta = Meta(timeout, single_node, MappingProxyType(dict(encoders or {})), prepare, name)

    def mark(func: _F) -> _F:
        setattr(func, MARK, meta)
        return func
    return mark


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    required: bool
    default: Any = None


class Procedure:
    """One procedure of the node daemon: its function, metadata and argument validator."""

    def __init__(self, name: str, func: Callable[..., Any], meta: Meta | None = None) -> None:
        self.name = name
        self.func = func
        self.meta = meta or Meta()
        self.doc = _first_line(func.__doc__) or name.replace("_", " ").capitalize()
        hints = _type_hints(func)
        params = list(inspect.signature(func).parameters.values())[1:]  # after the context
        for param in params:
            if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                raise ValueError(f"Procedure {name}: argument {param.name} must be positional")
            if param.name == TIMEOUT_KW:
                raise ValueError(f"Procedure {name}: argument name {TIMEOUT_KW} is reserved")
        self.params = tuple(
            Param(p.name, hints.get(p.name, Any), p.default is p.empty,
                  None if p.default is p.empty else p.default)
            for p in params)
        self.returns: Any = hints.get("return", Any)
        self._names = tuple(p.name for p in self.params)
        self._min_args = sum(1 for p in self.params if p.required)
        unknown = set(self.meta.encoders) - set(self._names)
        if unknown:
            raise ValueError(f"Procedure {name}: encoders for unknown arguments {unknown}")
        fields = {p.name: p.annotation if p.required else typing_extensions.NotRequired[
            p.annotation] for p in self.params if p.annotation is not Any}
        self._checked = frozenset(fields)
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        if fields:
            # pydantic wants typing_extensions' TypedDict before Python 3.12
            make_typed_dict: Any = typing_extensions.TypedDict
            typed = make_typed_dict(f"{name}_args", fields)
            typed.__pydantic_config__ = pydantic.ConfigDict(strict=True)
            self._adapter = pydantic.TypeAdapter(typed)

    def validate(self, args: list[Any]) -> list[Any]:
        """The wire arguments checked against the signature (ArgumentError naming the bad one).

        Strict: JSON numbers are no strings, booleans no numbers; values typed
        ``Any`` are passed through, checked by the procedure itself.  Keep
        argument types simple (``X | None`` is fine): for a union of several
        types pydantic names every alternative in the message.
        """
        if not self._min_args <= len(args) <= len(self._names):
            if self._min_args == len(self._names):
                expected = str(self._min_args)
            else:
                expected = f"{self._min_args} to {len(self._names)}"
            raise ArgumentError(f"Invalid arguments for procedure '{self.name}': expected"
                                f" {expected} arguments, got {len(args)}")
        if self._adapter is None:
            return args
        values = dict(zip(self._names, args, strict=False))
        try:
            checked = self._adapter.validate_python(
                {k: v for k, v in values.items() if k in self._checked})
        except pydantic.ValidationError as err:
            raise ArgumentError(_describe(self.name, err)) from None
        values.update(checked)
        return [values[n] for n in self._names[:len(args)]]

    def run(self, ctx: Any, args: list[Any]) -> Any:
        """Validate the wire arguments, then run the procedure (what the daemon does)."""
        return self.func(ctx, *self.validate(args))

    def __repr__(self) -> str:
        return f"Procedure({self.name!r})"


def _describe(name: str, err: pydantic.ValidationError) -> str:
    problems = []
    for item in err.errors(include_url=False):
        loc = [str(part) for part in item["loc"]]
        where = loc[0] + "".join(f"[{part}]" for part in loc[1:])
        value = repr(item.get("input"))
        if len(value) > _MAX_VALUE_REPR:
            value = value[:_MAX_VALUE_REPR] + "..."
        problems.append(f"argument '{where}': {item['msg']} (got {value})")
    return f"Invalid {'; '.join(problems)} for procedure '{name}'"


def _first_line(doc: str | None) -> str:
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ") if doc else ""


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except (NameError, TypeError) as err:
        raise ValueError(f"Cannot resolve the annotations of {func.__qualname__}: {err}"
                         ) from None


def collect(*modules: types.ModuleType,
            extra: Mapping[str, Callable[..., Any]] | None = None
            ) -> Mapping[str, Procedure]:
    """The procedures marked in ``modules`` (plus unmarked ``extra`` ones), by name."""
    table: dict[str, Procedure] = {}

    def add(proc: Procedure) -> None:
        if proc.name in table:
            raise ValueError(f"Duplicate RPC procedure {proc.name}")
        table[proc.name] = proc

    for module in modules:
        for func in _marked(vars(module).values(), module.__name__):
            meta: Meta = getattr(func, MARK)
            add(Procedure(meta.name or func.__name__, func, meta))
    for name, func in (extra or {}).items():
        add(Procedure(name, func, getattr(func, MARK, None)))
    return MappingProxyType(table)


def _marked(values: Iterable[Any], module: str) -> list[Callable[..., Any]]:
    # only functions defined in the module itself (not ones it imported)
    return [v for v in values if callable(v) and hasattr(v, MARK)
            and getattr(v, "__module__", None) == module]


def procedures(funcs: Mapping[str, Callable[..., Any]]) -> Mapping[str, Procedure]:
    """Procedures for a plain name -> function table (tests, ad hoc servers)."""
    return collect(extra=funcs)
