"""Query registry: resources, their fields and a small filter evaluator.

Every resource ("job", "lock", "node", ...) is a table of fields plus a data
source, registered with :func:`register`; the master's resources are all
registered in one place, :func:`ganeti.query_resources.register_all`.  The
master's ``Query``/``QueryFields`` LUXI calls then work without knowing about
them.  Results use Ganeti's layout: each value travels as ``[status, value]``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ganeti import errors

# Field kinds (wire strings as in Ganeti)
QFT_UNKNOWN: Final = "unknown"
QFT_TEXT: Final = "text"
QFT_NUMBER: Final = "number"
QFT_BOOL: Final = "bool"
QFT_UNIT: Final = "unit"
QFT_TIMESTAMP: Final = "timestamp"
QFT_OTHER: Final = "other"
QFT_ALL: Final = frozenset({QFT_TEXT, QFT_NUMBER, QFT_BOOL, QFT_UNIT, QFT_TIMESTAMP,
                            QFT_OTHER})

# Result status of one value
RS_NORMAL: Final = 0
RS_UNKNOWN: Final = 1
RS_NODATA: Final = 2
RS_UNAVAIL: Final = 3
RS_OFFLINE: Final = 4

RESOURCE_JOB: Final = "job"
RESOURCE_LOCK: Final = "lock"
RESOURCE_NODE: Final = "node"
RESOURCE_INSTANCE: Final = "instance"
RESOURCE_EXPORT: Final = "export"


class _Status:
    """Marker a getter returns instead of a value (no data, unavailable, offline)."""

    def __init__(self, code: int, name: str) -> None:
        self.code = code
        self.name = name

    def __repr__(self) -> str:
        return f"<query {self.name}>"


NODATA: Final = _Status(RS_NODATA, "nodata")
UNAVAIL: Final = _Status(RS_UNAVAIL, "unavail")
OFFLINE: Final = _Status(RS_OFFLINE, "offline")

# getter(source, item) -> value or one of the status markers
Getter = Callable[[Any, Any], Any]
# data_source(source) -> items; ``source`` is whatever the caller of query() passes
# (in the master: an object with ``queue`` and ``context`` attributes)
DataSource = Callable[[Any], Iterable[Any]]


@dataclass(frozen=True)
class FieldDef:
    name: str
    title: str
    kind: str
    doc: str
    getter: Getter

    def __post_init__(self) -> None:
        if self.kind not in QFT_ALL:
            raise errors.ProgrammerError(f"Field {self.name}: bad kind {self.kind!r}")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "kind": self.kind, "doc": self.doc}


def plain(value: Any) -> Any:
    """``value`` with a status marker turned into None (for opcode results)."""
    return None if isinstance(value, _Status) else value


def item_getter(key: Any) -> Getter:
    """Getter reading ``item[key]`` (rows as dicts or sequences)."""
    def get(_source: Any, item: Any) -> Any:
        return item[key]
    return get


@dataclass(frozen=True)
class Resource:
    name: str
    fields: dict[str, FieldDef]
    data_source: Callable[..., Iterable[Any]]
    # data_source(source, needed_field_names) instead of data_source(source)
    wants_fields: bool = False

    def items(self, source: Any, needed: frozenset[str]) -> Iterable[Any]:
        if self.wants_fields:
            return self.data_source(source, needed)
        return self.data_source(source)


_REGISTRY: dict[str, Resource] = {}
_REGISTRY_LOCK = threading.Lock()


def register(resource: str, fields: Sequence[FieldDef],
             data_source: DataSource | Callable[[Any, frozenset[str]], Iterable[Any]],
             *, wants_fields: bool = False) -> None:
    """Make a resource queryable; registering again replaces it.

    With ``wants_fields`` the data source also receives the names of the fields
    the query needs (selected or used by the filter), to avoid computing others.
    """
    table: dict[str, FieldDef] = {}
    for fdef in fields:
        if fdef.name in table:
            raise errors.ProgrammerError(f"Duplicate field {fdef.name} in {resource}")
        table[fdef.name] = fdef
    with _REGISTRY_LOCK:
        _REGISTRY[resource] = Resource(resource, table, data_source, wants_fields)


def resources() -> list[str]:
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY)


def get_resource(what: str) -> Resource:
    with _REGISTRY_LOCK:
        res = _REGISTRY.get(what)
    if res is None:
        raise errors.OpPrereqError(f"Resource '{what}' is not queryable", errors.ECODE_INVAL)
    return res


def _unknown_field(name: str) -> dict[str, str]:
    return {"name": name, "title": name, "kind": QFT_UNKNOWN, "doc": "Unknown field"}


def query_fields(what: str, fields: Sequence[str] | None = None) -> dict[str, Any]:
    """Definitions of the given fields (all when ``fields`` is empty or None)."""
    res = get_resource(what)
    if not fields:
        defs = [f.to_dict() for _, f in sorted(res.fields.items())]
    else:
        defs = [res.fields[n].to_dict() if n in res.fields else _unknown_field(n)
                for n in fields]
    return {"fields": defs}


def _value(fdef: FieldDef, source: Any, item: Any) -> list[Any]:
    try:
        value = fdef.getter(source, item)
    except (KeyError, IndexError, AttributeError):
        return [RS_UNAVAIL, None]
    if isinstance(value, _Status):
        return [value.code, None]
    return [RS_NORMAL, value]


def query(what: str, fields: Sequence[str], qfilter: Any = None,
          source: Any = None) -> dict[str, Any]:
    """Run a query: ``{"fields": [...], "data": [[[status, value], ...], ...]}``."""
    res = get_resource(what)
    flt = compile_filter(qfilter, res) if qfilter is not None else None
    defs = [res.fields.get(n) for n in fields]
    needed = frozenset(n for n in fields if n in res.fields) | filter_fields(qfilter)
    data: list[list[list[Any]]] = []
    for item in res.items(source, needed):
        if flt is not None and not flt(source, item):
            continue
        data.append([_value(d, source, item) if d is not None else [RS_UNKNOWN, None]
                     for d in defs])
    return {
        "fields": [d.to_dict() if d is not None else _unknown_field(n)
                   for n, d in zip(fields, defs, strict=True)],
        "data": data,
    }


# --- filters ---------------------------------------------------------------------

Predicate = Callable[[Any, Any], bool]

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: bool(a == b),
    "==": lambda a, b: bool(a == b),
    "!=": lambda a, b: bool(a != b),
    "<": lambda a, b: bool(a < b),
    ">": lambda a, b: bool(a > b),
    "<=": lambda a, b: bool(a <= b),
    ">=": lambda a, b: bool(a >= b),
    "=[]": lambda a, b: isinstance(a, (list, tuple)) and b in a,
}


def filter_fields(qfilter: Any) -> frozenset[str]:
    """Names of the fields a (well-formed) filter refers to."""
    if not isinstance(qfilter, (list, tuple)) or not qfilter:
        return frozenset()
    op, operands = qfilter[0], qfilter[1:]
    if op in ("|", "&", "!"):
        return frozenset().union(*(filter_fields(sub) for sub in operands))
    if operands and isinstance(operands[0], str):
        return frozenset({operands[0]})
    return frozenset()


def _bad_filter(msg: str) -> errors.QueryFilterParseError:
    return errors.QueryFilterParseError(f"Invalid query filter: {msg}")


def compile_filter(qfilter: Any, res: Resource) -> Predicate:
    """Turn a filter in list form into a predicate over (source, item).

    Supported: ``["|", f...]``, ``["&", f...]``, ``["!", f]``, ``["?", field]``
    (true value), ``[op, field, value]`` with op in = != < > <= >= =[] and
    ``["=~", field, regex]``.
    """
    if not isinstance(qfilter, (list, tuple)) or not qfilter or \
            not isinstance(qfilter[0], str):
        raise _bad_filter(f"expected [operator, ...], got {qfilter!r:.100}")
    op, operands = qfilter[0], list(qfilter[1:])
    if op in ("|", "&"):
        subs = [compile_filter(sub, res) for sub in operands]
        if op == "|":
            return lambda src, item: any(s(src, item) for s in subs)
        return lambda src, item: all(s(src, item) for s in subs)
    if op == "!":
        if len(operands) != 1:
            raise _bad_filter("'!' takes exactly one operand")
        sub = compile_filter(operands[0], res)
        return lambda src, item: not sub(src, item)
    if op == "?":
        if len(operands) != 1:
            raise _bad_filter("'?' takes exactly one field")
        fdef = _filter_field(operands[0], res)

        def truth(src: Any, item: Any) -> bool:
            value = _filter_value(fdef, src, item)
            return not isinstance(value, _Status) and bool(value)
        return truth
    if op == "=~":
        if len(operands) != 2 or not isinstance(operands[1], str):
            raise _bad_filter("'=~' takes a field and a regular expression")
        fdef = _filter_field(operands[0], res)
        try:
            regex = re.compile(operands[1])
        except re.error as err:
            raise _bad_filter(f"bad regular expression {operands[1]!r}: {err}") from None

        def match(src: Any, item: Any) -> bool:
            value = _filter_value(fdef, src, item)
            return isinstance(value, str) and regex.search(value) is not None
        return match
    cmp = _COMPARISONS.get(op)
    if cmp is None:
        raise _bad_filter(f"unknown operator {op!r}")
    if len(operands) != 2:
        raise _bad_filter(f"'{op}' takes a field and a value")
    fdef = _filter_field(operands[0], res)
    wanted = operands[1]

    def compare(src: Any, item: Any) -> bool:
        value = _filter_value(fdef, src, item)
        if isinstance(value, _Status):
            return False
        try:
            return cmp(value, wanted)
        except TypeError:
            return False
    return compare


def _filter_field(name: Any, res: Resource) -> FieldDef:
    if not isinstance(name, str) or name not in res.fields:
        raise errors.OpPrereqError(f"Unknown field '{name}' in query filter for {res.name}",
                                   errors.ECODE_INVAL)
    return res.fields[name]


def _filter_value(fdef: FieldDef, src: Any, item: Any) -> Any:
    try:
        return fdef.getter(src, item)
    except (KeyError, IndexError, AttributeError):
        return UNAVAIL
