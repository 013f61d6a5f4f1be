"""Query registry: resources, their fields and a small filter evaluator.

Every resource ("job", "lock", "node", ...) is a table of fields plus a data
source, registered with :func:`register`; the master's resources are all
registered in one place, :func:`ganeti.query_resources.register_all`.  The
master's ``Query``/``QueryFields`` LUXI calls then work without knowing about
them.  Results use Ganeti's layout: each value travels as ``[status, value]``.
"""

from __future__ import annotations

import functools
import operator
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, NamedTuple

from ganeti import errors, gc_pause

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

# Sizes a list command formats with --units besides the "unit" fields (MiB): lists of
# sizes in MiB typed "other" (as Ganeti types them), and byte counts typed "number"
SIZE_LIST_FIELDS: Final = frozenset({"disk.sizes"})
BYTE_FIELDS: Final = frozenset({"export.bytes", "export.data_bytes", "export.disk_bytes"})

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
RESOURCE_TRANSFER: Final = "transfer"


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


# NamedTuples, not dataclasses: the gnt-* list commands import this module, and
# dataclasses would make them import inspect too


class _FieldDefTuple(NamedTuple):
    name: str
    title: str
    kind: str
    doc: str
    getter: Getter


class FieldDef(_FieldDefTuple):
    """One field of a resource: its name, title, kind, description and getter."""

    __slots__ = ()

    def __new__(cls, name: str, title: str, kind: str, doc: str, getter: Getter
                ) -> FieldDef:
        if kind not in QFT_ALL:
            raise errors.ProgrammerError(f"Field {name}: bad kind {kind!r}")
        return super().__new__(cls, name, title, kind, doc, getter)

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "kind": self.kind, "doc": self.doc}


def plain(value: Any) -> Any:
    """``value`` with a status marker turned into None (for opcode results)."""
    return None if isinstance(value, _Status) else value


class _ItemGetter:
    """Getter reading ``item[key]``; filters read ``key`` and skip the call."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __call__(self, _source: Any, item: Any) -> Any:
        return item[self.key]


def item_getter(key: Any) -> Getter:
    """Getter reading ``item[key]`` (rows as dicts or sequences)."""
    return _ItemGetter(key)


class _ItemFunction:
    """Getter ``fn(item)`` that needs no source: query() calls ``fn`` directly."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, _source: Any, item: Any) -> Any:
        return self.fn(item)


def item_function(fn: Callable[[Any], Any]) -> Getter:
    """Getter computing the value from the item alone (``fn(item)``)."""
    return _ItemFunction(fn)


class Resource(NamedTuple):
    name: str
    fields: dict[str, FieldDef]
    data_source: Callable[..., Iterable[Any]]
    # data_source(source, needed_field_names) instead of data_source(source)
    wants_fields: bool = False
    # ... and, with wants_names, the names the filter is limited to (None: any)
    wants_names: bool = False

    def items(self, source: Any, needed: frozenset[str],
              names: frozenset[str] | None = None) -> Iterable[Any]:
        if self.wants_names:
            return self.data_source(source, needed, names)
        if self.wants_fields:
            return self.data_source(source, needed)
        return self.data_source(source)


_REGISTRY: dict[str, Resource] = {}
_REGISTRY_LOCK = threading.Lock()


def register(resource: str, fields: Sequence[FieldDef],
             data_source: DataSource | Callable[[Any, frozenset[str]], Iterable[Any]]
             | Callable[[Any, frozenset[str], frozenset[str] | None], Iterable[Any]],
             *, wants_fields: bool = False, wants_names: bool = False) -> None:
    """Make a resource queryable; registering again replaces it.

    With ``wants_fields`` the data source also receives the names of the fields
    the query needs (selected or used by the filter), to avoid computing others;
    with ``wants_names`` also the item names the filter allows
    (:func:`requested_names`), so asking for one item costs one item, not all.
    """
    table: dict[str, FieldDef] = {}
    for fdef in fields:
        if fdef.name in table:
            raise errors.ProgrammerError(f"Duplicate field {fdef.name} in {resource}")
        table[fdef.name] = fdef
    with _REGISTRY_LOCK:
        _REGISTRY[resource] = Resource(resource, table, data_source,
                                       wants_fields or wants_names, wants_names)


def resources() -> list[str]:
    with _REGISTRY_LOCK:
        return sorted(_REGISTRY)


def get_resource(what: str) -> Resource:
    with _REGISTRY_LOCK:
        res = _REGISTRY.get(what)
    if res is None:
        # an unknown entity (RAPI: 404 for /2/query/NAME), not a malformed argument
        raise errors.OpPrereqError(f"Resource '{what}' is not queryable (queryable:"
                                   f" {', '.join(resources())})", errors.ECODE_NOENT)
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


_UNKNOWN: Final = _Status(RS_UNKNOWN, "unknown")


def _unknown_value(_item: Any) -> Any:
    return _UNKNOWN


def _item_function(fdef: FieldDef | None, source: Any) -> Callable[[Any], Any]:
    """``item -> value or marker`` for one field, bound once per query (not per row)."""
    if fdef is None:
        return _unknown_value
    getter = fdef.getter
    if isinstance(getter, _ItemGetter):
        return operator.itemgetter(getter.key)
    if isinstance(getter, _ItemFunction):
        return getter.fn
    return functools.partial(getter, source)


def query(what: str, fields: Sequence[str], qfilter: Any = None,
          source: Any = None) -> dict[str, Any]:
    """Run a query: ``{"fields": [...], "data": [[[status, value], ...], ...]}``.

    Each field's getter is bound once per query; a row then costs one call
    per field and one pair per value (10,000 instances: issue 20).
    """
    res = get_resource(what)
    flt = compile_filter(qfilter, res) if qfilter is not None else None
    defs = [res.fields.get(n) for n in fields]
    needed = frozenset(n for n in fields if n in res.fields) | filter_fields(qfilter)
    names = requested_names(qfilter) if res.wants_names and flt is not None else None
    functions = [_item_function(d, source) for d in defs]
    status = _Status
    data: list[list[list[Any]]] = []
    append = data.append
    with gc_pause.paused():
        for item in res.items(source, needed, names):
            if flt is not None and not flt(source, item):
                continue
            row: list[list[Any]] = []
            cell = row.append
            for function in functions:
                try:
                    value = function(item)
                except (KeyError, IndexError, AttributeError):
                    cell([RS_UNAVAIL, None])
                    continue
                cell([value.code, None] if value.__class__ is status
                     else [RS_NORMAL, value])
            append(row)
    return {
        "fields": [d.to_dict() if d is not None else _unknown_field(n)
                   for n, d in zip(fields, defs, strict=True)],
        "data": data,
    }


# --- filters ---------------------------------------------------------------------
#
# The operators are Ganeti's (ganeti.qlang builds these lists from the -F text):
# logic ``|``/``&`` (any number of subfilters), ``!`` (one subfilter), ``?`` (the
# field's value is true), and binary ``[op, field, value]`` with = == != < <= > >=,
# ``=~`` (regexp search) and ``=[]`` (the field's list, string or dict contains the
# value).  A filter is compiled once into nested closures, then run per item.

Predicate = Callable[[Any, Any], bool]

# Host-name fields: equality there also accepts the first labels, case-insensitively
# ("web1" == "web1.example.com"), as Ganeti's QFF_HOSTNAME fields do
HOSTNAME_FIELDS: Final[dict[str, frozenset[str]]] = {
    RESOURCE_NODE: frozenset({"name"}),
    RESOURCE_INSTANCE: frozenset({"name", "pnode"}),
    RESOURCE_EXPORT: frozenset({"node"}),
}

# Job-id fields: a value may also be the id as a string ("42"), as Ganeti's
# QFF_JOB_ID fields take it
JOB_ID_FIELDS: Final[dict[str, frozenset[str]]] = {
    RESOURCE_JOB: frozenset({"id"}),
}

# How deep filters may nest (Ganeti's limit; also bounds the compiler's recursion)
FILTER_LEVELS_MAX: Final = 10

_LOGIC_OPS: Final = frozenset({"|", "&"})
_UNARY_OPS: Final = frozenset({"!", "?"})
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
BINARY_OPS: Final = frozenset({"=", "==", "!=", "=~", "=[]", *_ORDERINGS})
FILTER_OPS: Final = _LOGIC_OPS | _UNARY_OPS | BINARY_OPS


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


# What a filter may compare a field of each kind with (as Ganeti checks it)
_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    QFT_TEXT: (lambda v: isinstance(v, str), "a string"),
    QFT_BOOL: (lambda v: isinstance(v, bool), "a boolean"),
    QFT_NUMBER: (_is_number, "a number"),
    QFT_UNIT: (_is_int, "an integer"),
    QFT_TIMESTAMP: (_is_number, "a number (seconds since the epoch)"),
    QFT_OTHER: (lambda _v: True, "anything"),
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

    Refuses, before any item is looked at, unknown operators and fields, wrong
    operand counts, values of the wrong type for the field and bad regexps.
    """
    return _compile(qfilter, res, 0)


def _compile(qfilter: Any, res: Resource, level: int) -> Predicate:
    if not isinstance(qfilter, (list, tuple)) or not qfilter or \
            not isinstance(qfilter[0], str):
        raise _bad_filter(f"expected [operator, ...], got {qfilter!r:.100}")
    if level >= FILTER_LEVELS_MAX:
        raise _bad_filter(f"nested deeper than {FILTER_LEVELS_MAX} levels")
    op, operands = qfilter[0], list(qfilter[1:])
    if op in _LOGIC_OPS:
        return _compile_logic(op, [_compile(sub, res, level + 1) for sub in operands])
    if op == "!":
        if len(operands) != 1:
            raise _bad_filter(f"'!' takes exactly one operand, got {len(operands)}")
        sub = _compile(operands[0], res, level + 1)
        return lambda src, item: not sub(src, item)
    if op == "?":
        if len(operands) != 1:
            raise _bad_filter(f"'?' takes exactly one field, got {len(operands)} operands")
        getter = _filter_getter(operands[0], res)

        def truth(src: Any, item: Any) -> bool:
            value = getter(src, item)
            return not isinstance(value, _Status) and bool(value)
        return truth
    if op not in BINARY_OPS:
        raise _bad_filter(f"unknown operator {op!r} (known: {' '.join(sorted(FILTER_OPS))})")
    if len(operands) != 2:
        raise _bad_filter(f"'{op}' takes a field and a value, got {len(operands)} operands")
    return _compile_binary(op, operands[0], operands[1], res)


def _compile_logic(op: str, subs: list[Predicate]) -> Predicate:
    # plain loops: any()/all() over a generator cost twice as much per item
    if op == "|":
        def any_of(src: Any, item: Any) -> bool:
            for sub in subs:  # noqa: SIM110
                if sub(src, item):
                    return True
            return False
        return any_of

    def all_of(src: Any, item: Any) -> bool:
        for sub in subs:  # noqa: SIM110
            if not sub(src, item):
                return False
        return True
    return all_of


def _compile_binary(op: str, name: Any, wanted: Any, res: Resource) -> Predicate:
    getter = _filter_getter(name, res)
    kind = res.fields[name].kind
    check, expected = _VALUE_CHECKS.get(kind, (lambda _v: True, "anything"))
    if op == "=~":
        if not isinstance(wanted, str):
            raise _bad_filter(f"'=~' on field '{name}' needs a regular expression (a string),"
                              f" got {wanted!r:.60}")
        try:
            regex = re.compile(wanted)
        except re.error as err:
            raise _bad_filter(f"bad regular expression {wanted!r} for field '{name}':"
                              f" {err}") from None
        search = regex.search

        def match(src: Any, item: Any) -> bool:
            value = getter(src, item)
            return isinstance(value, str) and search(value) is not None
        return match
    if isinstance(wanted, str) and name in JOB_ID_FIELDS.get(res.name, ()):
        if not wanted.isdigit():
            raise _bad_filter(f"invalid job id {wanted!r} for field '{name}'")
        wanted = int(wanted)
    if not check(wanted):
        raise _bad_filter(f"cannot compare field '{name}' ({kind}) with {wanted!r:.60}"
                          f" ({type(wanted).__name__}); expected {expected}")
    if kind == QFT_TIMESTAMP:
        getter = _timestamp_getter(getter)
    if op == "=[]":
        def contains(src: Any, item: Any) -> bool:
            value = getter(src, item)
            if not isinstance(value, (list, tuple, str, dict)):
                return False
            try:
                return wanted in value
            except TypeError:  # a number "in" a string
                return False
        return contains
    if op in ("=", "==", "!="):
        if name in HOSTNAME_FIELDS.get(res.name, ()):
            equal = _hostname_equal(getter, wanted)
        else:
            def equal(src: Any, item: Any) -> bool:
                return bool(getter(src, item) == wanted)
        if op == "!=":
            return lambda src, item: not equal(src, item)
        return equal
    order = _ORDERINGS[op]

    def compare(src: Any, item: Any) -> bool:
        value = getter(src, item)
        if isinstance(value, _Status):
            return False
        try:
            return bool(order(value, wanted))
        except TypeError:
            return False
    return compare


def requested_names(qfilter: Any, field: str = "name") -> frozenset[str] | None:
    """The names a filter limits ``field`` to, when it is only equalities on it
    (``["=", "name", "a"]``, or an ``|`` of those); None when it may match others.

    The filter still runs on every row; this only lets a data source skip the
    items it cannot match (see :func:`name_matches` for host names).
    """
    if not isinstance(qfilter, list) or not qfilter:
        return None
    if qfilter[0] in ("=", "==") and len(qfilter) == 3 and qfilter[1] == field \
            and isinstance(qfilter[2], str):
        return frozenset({qfilter[2]})
    if qfilter[0] == "|" and len(qfilter) > 1:
        names: set[str] = set()
        for sub in qfilter[1:]:
            part = requested_names(sub, field)
            if part is None:
                return None
            names |= part
        return frozenset(names)
    return None


def name_matches(name: str, wanted: frozenset[str]) -> bool:
    """``name`` may pass an equality with one of ``wanted`` (as host names compare)."""
    if name in wanted:
        return True
    low = name.lower()
    return any(low == w.lower() or low.startswith(w.lower() + ".") for w in wanted)


def _hostname_equal(getter: Getter, wanted: str) -> Predicate:
    """``wanted`` is the name, or its first labels (any case): "web1" is web1.example.com."""
    prefix = re.compile(re.escape(wanted) + r"(\..*)?$", re.IGNORECASE).match

    def equal(src: Any, item: Any) -> bool:
        value = getter(src, item)
        return value == wanted or (isinstance(value, str) and prefix(value) is not None)
    return equal


def _filter_getter(name: Any, res: Resource) -> Getter:
    if not isinstance(name, str) or name not in res.fields:
        raise errors.OpPrereqError(f"Unknown field '{name}' in query filter for {res.name}",
                                   errors.ECODE_INVAL)
    raw = res.fields[name].getter
    if isinstance(raw, _ItemFunction):
        fn = raw.fn

        def get_fn(_src: Any, item: Any) -> Any:
            try:
                return fn(item)
            except (KeyError, IndexError, AttributeError):
                return UNAVAIL
        return get_fn
    if isinstance(raw, _ItemGetter):
        key = raw.key

        def get_item(_src: Any, item: Any) -> Any:
            try:
                return item[key]
            except (KeyError, IndexError):
                return UNAVAIL
        return get_item

    def get(src: Any, item: Any) -> Any:
        try:
            return raw(src, item)
        except (KeyError, IndexError, AttributeError):
            return UNAVAIL
    return get


def _timestamp_getter(getter: Getter) -> Getter:
    """Timestamps as seconds, also where a field holds Ganeti's ``[sec, usec]`` pairs."""
    def get(src: Any, item: Any) -> Any:
        value = getter(src, item)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return value[0] + value[1] / 1_000_000
        return value
    return get


def compile_local_filter(what: str, fields: Sequence[FieldDef],
                         qfilter: Any) -> Callable[[Any], bool]:
    """A predicate over items for lists a client builds itself (no Query resource).

    Same operators, checks and errors as the master's Query; None keeps everything.
    """
    if qfilter is None:
        return lambda _item: True
    res = Resource(what, {f.name: f for f in fields}, lambda _source: ())
    pred = compile_filter(qfilter, res)
    return lambda item: pred(None, item)
