"""Ganeti's query filter language: ``gnt-* list -F 'TEXT'`` into the filter lists of Query.

A filter travels as a list, ``[operator, operands...]`` (``["&", ["=~", "name",
"^web"], ["==", "status", "running"]]``); :mod:`ganeti.query` evaluates it.  This
module turns what a user types into that list, giving the same lists as Ganeti
3.0, so its clients and ours send the same thing.  The grammar is a pyparsing 3
grammar (doc/query-language.md describes the language; doc/dependencies.md why
pyparsing).  :func:`parse_filter` takes text and returns a list, for the CLI and
any other front end (RAPI).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from ganeti import errors

if TYPE_CHECKING:
    import pyparsing as pp
# pyparsing itself is imported where a text is parsed: importing it costs every
# gnt-* command ~50 ms, and most never parse a filter

# Operators of the wire format (Ganeti's QLANG_OP_* values)
OP_OR: Final = "|"
OP_AND: Final = "&"
OP_NOT: Final = "!"
OP_TRUE: Final = "?"
OP_EQUAL: Final = "=="
OP_EQUAL_LEGACY: Final = "="
OP_NOT_EQUAL: Final = "!="
OP_LT: Final = "<"
OP_LE: Final = "<="
OP_GT: Final = ">"
OP_GE: Final = ">="
OP_REGEXP: Final = "=~"
OP_CONTAINS: Final = "=[]"

# A single command argument holding one of these is read as a filter, not a name
FILTER_DETECTION_CHARS: Final = frozenset(" \t\n\v\f\r!\"'()/<=>\\~")
# ... and a name holding one of these as a glob pattern
GLOB_DETECTION_CHARS: Final = frozenset("*?")

REGEXP_DELIMITERS: Final = "/#^|"
REGEXP_FLAGS: Final = frozenset("si")

# What the user writes between field and value -> wire operator
_COMPARISON_OPS: Final = {
    "==": OP_EQUAL, "=": OP_EQUAL, "!=": OP_NOT_EQUAL,
    "<": OP_LT, "<=": OP_LE, ">": OP_GT, ">=": OP_GE,
}


def glob_to_regexp(pattern: str) -> str:
    """The regexp of a DNS-name glob: ``*``/``?`` stop at dots, a suffix domain may follow.

    So ``web*`` matches ``web1`` and ``web1.example.com``, not ``aweb1``; only ``*``
    and ``?`` are special (no ranges, no escapes), as in Ganeti.
    """
    parts = []
    for piece in re.split(r"([*?])", pattern):
        if piece == "*":
            parts.append("[^.]*")
        elif piece == "?":
            parts.append("[^.]")
        else:
            parts.append(re.escape(piece))
    return "^" + "".join(parts) + r"(\..*)?$"


class _Node:
    """One parsed (sub)filter, opaque to pyparsing so it never regroups our lists."""

    __slots__ = ("value",)

    def __init__(self, value: list[Any]) -> None:
        self.value = value


def _unwrap(token: Any) -> list[Any]:
    import pyparsing as pp

    # pyparsing versions differ in how many groups they put around a
    # parenthesised operand; the _Node inside is what counts
    while isinstance(token, pp.ParseResults):
        if len(token) != 1:
            raise errors.ProgrammerError(f"Unexpected parse result {token!r}")
        token = token[0]
    if not isinstance(token, _Node):
        raise errors.ProgrammerError(f"Unexpected parse result {token!r}")
    return token.value


def _regexp_value(text: str, loc: int, toks: pp.ParseResults) -> str:
    """``m/re/flags`` -> ``(?flags)re``, refusing unknown flags and bad expressions."""
    import pyparsing as pp

    body, flags = str(toks[0][0]), str(toks[0][1])
    unknown = sorted(set(flags) - REGEXP_FLAGS)
    if unknown:
        raise pp.ParseFatalException(
            text, loc, f"Unknown regular expression flags: '{''.join(unknown)}'"
                     f" (known: {', '.join(sorted(REGEXP_FLAGS))})")
    pattern = (f"(?{''.join(sorted(flags))})" if flags else "") + body
    try:
        re.compile(pattern)
    except re.error as err:
        raise pp.ParseFatalException(
            text, loc, f"Invalid regular expression ({err})") from None
    return pattern


def _logic(op: str) -> Any:
    def action(toks: pp.ParseResults) -> _Node:
        operands = [_unwrap(t) for t in toks[0]]
        return _Node(operands[0] if len(operands) == 1 else [op, *operands])
    return action


def _build_parser() -> pp.ParserElement:
    import pyparsing as pp

    field = pp.Word(pp.alphas, pp.alphanums + "_/.").set_name("field name")
    number = pp.Regex(r"[-+]?[0-9]+").set_name("integer")
    number.set_parse_action(lambda toks: int(toks[0]))
    string = pp.quoted_string.copy().set_parse_action(pp.remove_quotes)
    value = (number | string).set_name("value (integer or quoted string)")

    def cond(expr: pp.ParserElement, build: Any) -> pp.ParserElement:
        return expr.set_parse_action(lambda toks: _Node(build(*toks)))

    comparison = cond(field + pp.one_of(list(_COMPARISON_OPS)) + value,
                      lambda name, op, val: [_COMPARISON_OPS[op], name, val])
    truth = cond(field.copy(), lambda name: [OP_TRUE, name])
    contains = cond(value + pp.Suppress("in") + field,
                    lambda val, name: [OP_CONTAINS, name, val])
    not_contains = cond(value + pp.Suppress("not") + pp.Suppress("in") + field,
                        lambda val, name: [OP_NOT, [OP_CONTAINS, name, val]])
    # Flags may follow after blanks, as in Ganeti, but a keyword there is the next
    # operator: Ganeti 3.0 reads "name =~ m/^web/ and x" as flags "and" and fails
    keyword = pp.Keyword("and") | pp.Keyword("or") | pp.Keyword("not")
    regexp = pp.Group(pp.Optional("m").suppress()
                      + pp.MatchFirst([pp.QuotedString(d, esc_char="\\")
                                       for d in REGEXP_DELIMITERS])
                      + pp.Optional(~keyword + pp.Word(pp.alphas), default=""))
    regexp.set_name("regular expression (m/.../)")
    regexp.set_parse_action(_regexp_value)
    matches = cond(field + pp.Suppress("=~") + regexp,
                   lambda name, rx: [OP_REGEXP, name, rx])
    not_matches = cond(field + pp.Suppress("!~") + regexp,
                       lambda name, rx: [OP_NOT, [OP_REGEXP, name, rx]])
    globs = cond(field + pp.Suppress("=*") + string,
                 lambda name, pat: [OP_REGEXP, name, glob_to_regexp(pat)])
    not_globs = cond(field + pp.Suppress("!*") + string,
                     lambda name, pat: [OP_NOT, [OP_REGEXP, name, glob_to_regexp(pat)]])
    # the longest alternative wins ("a == 1" is a comparison, not the truth of "a")
    condition = pp.Or([comparison, truth, contains, not_contains, matches, not_matches,
                       globs, not_globs]).set_name("condition")

    expr: pp.ParserElement = pp.infix_notation(condition, [  # type: ignore[no-untyped-call]
        (pp.Keyword("not").suppress(), 1, pp.OpAssoc.RIGHT,
         lambda toks: _Node([OP_NOT, _unwrap(toks[0][0])])),
        (pp.Keyword("and").suppress(), 2, pp.OpAssoc.LEFT, _logic(OP_AND)),
        (pp.Keyword("or").suppress(), 2, pp.OpAssoc.LEFT, _logic(OP_OR)),
    ])
    parser: pp.ParserElement = pp.StringStart() + expr + pp.StringEnd()
    parser.parse_with_tabs()
    return parser


_PARSER: pp.ParserElement | None = None
_PARSER_LOCK = threading.Lock()


def _parser() -> pp.ParserElement:
    global _PARSER
    with _PARSER_LOCK:
        if _PARSER is None:
            _PARSER = _build_parser()
        return _PARSER


_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]+")


def _parse_error(text: str, err: pp.ParseBaseException) -> errors.QueryFilterParseError:
    import pyparsing as pp

    token = _TOKEN_RE.match(text, err.loc)
    found = repr(token.group(0)) if token else "end of text"
    what = err.msg if isinstance(err, pp.ParseFatalException) else f"{err.msg}, found {found}"
    where = f"line {err.lineno}, column {err.col}" if "\n" in text else f"column {err.col}"
    exc = errors.QueryFilterParseError(
        f"Failed to parse query filter '{text}': {what} (at {where})")
    # for the caret display of the CLI (not sent over LUXI: args stay one string)
    exc.filter_text = err.line  # type: ignore[attr-defined]
    exc.column = err.col  # type: ignore[attr-defined]
    return exc


def parse_filter(text: str) -> list[Any]:
    """The filter list of a query filter text; QueryFilterParseError naming the column."""
    if not isinstance(text, str):
        raise errors.QueryFilterParseError(f"Query filter must be a string, not {text!r}")
    import pyparsing as pp

    parser = _parser()
    try:
        # a ParserElement is not reentrant across threads (its caches); one at a time
        with _PARSER_LOCK:
            result = parser.parse_string(text)
    except pp.ParseBaseException as err:
        raise _parse_error(text, err) from None
    return _unwrap(result[0])


def filter_details(err: errors.QueryFilterParseError) -> list[str]:
    """The failing line of the filter and a caret under the column, when known."""
    line = getattr(err, "filter_text", None)
    column = getattr(err, "column", None)
    if not isinstance(line, str) or not isinstance(column, int):
        return []
    return [line, " " * max(column - 1, 0) + "^"]


def looks_like_filter(text: str) -> bool:
    return not FILTER_DETECTION_CHARS.isdisjoint(text)


def is_glob(text: str) -> bool:
    return not GLOB_DETECTION_CHARS.isdisjoint(text)


def _name_part(namefield: str, text: str, isnumeric: bool) -> list[Any]:
    if isnumeric:
        try:
            return [OP_EQUAL, namefield, int(text)]
        except (TypeError, ValueError):
            raise errors.OpPrereqError(f"Invalid job ID passed: '{text}' is not a number",
                                       errors.ECODE_INVAL) from None
    if is_glob(text):
        return [OP_REGEXP, namefield, glob_to_regexp(text)]
    return [OP_EQUAL, namefield, text]


def make_filter(args: Sequence[str] | None, force_filter: bool,
                namefield: str | None = "name", isnumeric: bool = False) -> list[Any] | None:
    """The filter of a list command's arguments.

    One argument that looks like a filter (or any with ``force_filter``, -F) is
    parsed as one; otherwise the names become an OR of name equalities, a name
    with ``*``/``?`` a glob match.  No arguments: None (everything).
    """
    field = namefield or "name"
    if force_filter or (args and len(args) == 1 and looks_like_filter(args[0])):
        if not args or len(args) != 1:
            raise errors.OpPrereqError("Exactly one argument must be given as a filter",
                                       errors.ECODE_INVAL)
        return parse_filter(args[0])
    if args:
        return [OP_OR, *[_name_part(field, arg, isnumeric) for arg in args]]
    return None


def plain_names(args: Sequence[str] | None, force_filter: bool) -> list[str] | None:
    """The arguments when make_filter reads them as exact names, else None (a filter)."""
    names = list(args or ())
    if force_filter or (len(names) == 1 and looks_like_filter(names[0])) or \
            any(is_glob(n) for n in names):
        return None
    return names


def and_filters(*filters: list[Any] | None) -> list[Any] | None:
    """Both filters (None: no condition), as Ganeti's GenericList combines names and -F."""
    present = [f for f in filters if f is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else [OP_AND, *present]
