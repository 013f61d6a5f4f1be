"""Our query language against Ganeti 3.0.2's own qlang.ParseFilter and MakeFilter.

Every expression goes through both; the filter lists must be equal, and where
Ganeti refuses a text we must refuse it too, at the same column.  All of Ganeti's
answers come from one run of its interpreter.  Last, Ganeti's own gnt-instance and
gnt-node list, with -F filters and globs, run against our master and must print
the rows ours print.

Ganeti 3.0.2 runs with Debian bookworm's pyparsing 3.0.9.  pyparsing 3.1 and
later change what its infixNotation hands the parse actions, so Ganeti's code
run with them wraps parenthesised and negated subfilters in one more list (or a
ParseResults), a filter its own server refuses.  When the oracle's venv has such
a pyparsing, those extra one-element wrappers are removed from Ganeti's answers
before comparing (a one-element list of a list is never a valid filter operand,
so nothing else is touched).

Which column pyparsing blames for a syntax error also changed between 3.0 and
3.3 (for "a or": 3 or 5), and 3.0 reads a lone "not" as a field name; columns and
that case are compared when both sides run the same pyparsing minor version
(with the same pyparsing they agree on all of them: checked with 3.0.9 and 3.3.3).
"""

from __future__ import annotations

import json
from typing import Any

import pyparsing
import pytest
from support.ganeti_oracle import Ganeti3

from ganeti import errors, qlang

VALID = [
    # comparisons, values
    'name == "web1"', "name = 'web1'", 'name=="x"', 'status != "running"',
    "be/vcpus < 4", "be/vcpus <= 4", "disk.count > -1", "serial_no >= +12", "x == 007",
    "x == 0", 'name == ""', "name == 'it''s'", 'name == "a\\"b"', "name == 'a\\'b'",
    'note == "tab\\there"', 'name == "ünïcödé"', "a.b/c_d == 1", "x==-3",
    # truth, not, keywords as field names
    "offline", "not offline", "not not offline", "and", "or", "not in", "notx",
    # membership
    '"web" in tags', "1 in disk.sizes", '"a" not in tags', "-5 not in x",
    "'x'in tags", '"x"infoo',
    # regular expressions
    "name =~ m/^web/", "name =~ /^web/", "name =~ m#a/b#", "name =~ m^x^",
    "name =~ m|x|", "name =~ m/x/i", "name =~ m/x/s", "name =~ m/x/si", "name =~ m/x/ii",
    "name =~ m/x/ i", "name !~ m/db/i", "name =~ m/a\\/b/", "name =~ m/\\d+/",
    "name =~ m/a|b/", "name =~ m#a|b#", "name=~m/x/",
    # globs
    'name =* "web*.example.com"', "name !* 'db?'", 'name =* "a+b[c]"', 'name =* "*"',
    'name =* ""', 'name =* "x.y"',
    # logic and grouping
    "a and b", "a or b", "a and b and c", "a or b or c", "a or b and c", "a and b or c",
    "(a or b) and c", "a and (b or c)", "not (a or b)", "not a and b", "not (not a)",
    "((a))", "(((a and b)))", "(a) and (b)", "not (a and (b or not c))",
    "(be/vcpus == 3 or be/vcpus == 6) and pnode.group =~ m/^rack/",
    'name =~ m/^web/i and status == "running" or not offline',
    "  a  ", "a\tand\tb", "a\nor\nb", "name !~ /x/i and b", "(name =~ /x/) and b",
]

# Texts Ganeti refuses and so do we (compared: refusal, and the column with the same
# pyparsing)
INVALID = [
    "", " ", "name ==", "name == ", "a or", "a and", "(a", "a)", "()",
    "x == - 5", "x in y", "1name", "name == 'x", 'name == "x', "name === 1",
    "name =~ m/x/q", "name =~ m/x/xyz", "name =~ m/(/", "name =~ m/x", "name =~ x",
    "name =* x", "name == x", "a b", "a and or b", "name ~= 1", "name <> 1", "== 1",
    "name == 1.5", "'x' in", "in tags", "a &&& b", "a || b", "name == 1 2",
    "name =~ m/x/ andb",
]

# Accepted or refused depending on the pyparsing version (3.0: the field "not")
VERSION_DEPENDENT = ["not"]

# Ganeti refuses these only because its regexp flags swallow the next keyword
# ("and" as flags: "Unknown regular expression flags"); we read the keyword as the
# operator it is.  Everything else Ganeti accepts, we parse to the same list.
KEYWORD_AFTER_REGEXP = {
    "name =~ m/^web/ and status == 'running'":
        ["&", ["=~", "name", "^web"], ["==", "status", "running"]],
    "name =~ /x/ or b": ["|", ["=~", "name", "x"], ["?", "b"]],
    "name !~ /x/ and b": ["&", ["!", ["=~", "name", "x"]], ["?", "b"]],
}

# MakeFilter: (args, force_filter, namefield, isnumeric)
MAKE_FILTER = [
    ([], False, None, False), ([], False, "id", True), (["web1"], False, None, False),
    (["web1", "db1"], False, None, False), (["web*"], False, None, False),
    (["db?", "x"], False, "node", False), (["*.site1", "*.site2"], False, None, False),
    (["7", "8"], False, "id", True), (["offline"], True, None, False),
    (["name == 'x'"], False, None, False), (["a b", "c"], False, None, False),
    (["not offline"], False, None, False), (["id > 3"], True, "id", True),
    (["a.b.c"], False, None, False),
    (["web1.example.com"], False, "name", False),
]
MAKE_FILTER_INVALID = [
    ([], True, None, False), (["a", "b"], True, None, False), (["x"], False, "id", True),
    (["1", "y"], False, "id", True), (["a ="], False, None, False),
    (["x!"], False, None, False),
]

_ORACLE_CODE = """
import pyparsing
from ganeti import errors, qlang

def plain(value):
    if isinstance(value, pyparsing.ParseResults):
        value = value.asList()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value

def parse(text):
    try:
        return {"ok": plain(qlang.ParseFilter(text))}
    except errors.QueryFilterParseError as err:
        return {"error": type(err).__name__, "column": err.args[1].col}

def make(args, force, namefield, isnumeric):
    try:
        return {"ok": plain(qlang.MakeFilter(args, force, namefield=namefield,
                                             isnumeric=isnumeric))}
    except errors.GenericError as err:
        return {"error": type(err).__name__}

cases = json.loads(CASES)
result = {"pyparsing": pyparsing.__version__,
          "parse": [parse(t) for t in cases["parse"]],
          "make": [make(*c) for c in cases["make"]]}
"""


def _strip_wrappers(value: Any) -> Any:
    """Ganeti's filter without the one-element wrappers pyparsing >= 3.1 adds."""
    if isinstance(value, list):
        while len(value) == 1 and isinstance(value[0], list):
            value = value[0]
        return [_strip_wrappers(v) for v in value]
    return value


@pytest.fixture(scope="module")
def oracle(ganeti3: Ganeti3) -> dict[str, Any]:
    texts = [*VALID, *INVALID, *KEYWORD_AFTER_REGEXP, *VERSION_DEPENDENT,
             *(t for t in _cli_texts() if t not in VALID)]
    makes = [list(c) for c in (*MAKE_FILTER, *MAKE_FILTER_INVALID)]
    code = "import json\nCASES = " + repr(json.dumps({"parse": texts, "make": makes})) + \
        "\n" + _ORACLE_CODE
    answer = ganeti3.eval(code)
    fixed = not answer["pyparsing"].startswith("3.0.")
    parse = {t: a for t, a in zip(texts, answer["parse"], strict=True)}
    make = [a for a in answer["make"]]
    # what Ganeti's client really sends, wrappers and all (for the CLI test)
    raw = {t: a.get("ok") for t, a in parse.items()}
    if fixed:
        for a in [*parse.values(), *make]:
            if "ok" in a:
                a["ok"] = _strip_wrappers(a["ok"])
    same = answer["pyparsing"].split(".")[:2] == pyparsing.__version__.split(".")[:2]
    return {"pyparsing": answer["pyparsing"], "same_pyparsing": same, "parse": parse,
            "make": make, "raw": raw}


def _ours(text: str) -> dict[str, Any]:
    try:
        return {"ok": qlang.parse_filter(text)}
    except errors.QueryFilterParseError as err:
        return {"error": type(err).__name__, "column": getattr(err, "column", None)}


@pytest.mark.parametrize("text", VALID)
def test_same_filter_as_ganeti(oracle: dict[str, Any], text: str) -> None:
    theirs = oracle["parse"][text]
    assert "ok" in theirs, f"Ganeti refuses {text!r}: {theirs}"
    assert _ours(text) == theirs, f"pyparsing of the oracle: {oracle['pyparsing']}"


@pytest.mark.parametrize("text", INVALID)
def test_refused_where_ganeti_refuses(oracle: dict[str, Any], text: str) -> None:
    theirs = oracle["parse"][text]
    assert "error" in theirs, f"Ganeti accepts {text!r}: {theirs}"
    ours = _ours(text)
    assert ours["error"] == theirs["error"]
    if oracle["same_pyparsing"]:
        assert ours["column"] == theirs["column"]


@pytest.mark.parametrize("text", VERSION_DEPENDENT)
def test_version_dependent_as_ganeti_with_the_same_pyparsing(oracle: dict[str, Any],
                                                             text: str) -> None:
    if not oracle["same_pyparsing"]:
        pytest.skip(f"the oracle runs pyparsing {oracle['pyparsing']}, we"
                    f" {pyparsing.__version__}: they differ here")
    assert _ours(text) == oracle["parse"][text]


@pytest.mark.parametrize("text", sorted(KEYWORD_AFTER_REGEXP))
def test_keyword_after_a_regexp_is_an_operator(oracle: dict[str, Any], text: str) -> None:
    theirs = oracle["parse"][text]
    assert theirs.get("error") == "QueryFilterParseError"
    assert qlang.parse_filter(text) == KEYWORD_AFTER_REGEXP[text]


def test_make_filter_as_ganeti(oracle: dict[str, Any]) -> None:
    for case, theirs in zip(MAKE_FILTER, oracle["make"][:len(MAKE_FILTER)], strict=True):
        args, force, namefield, isnumeric = case
        assert "ok" in theirs, f"Ganeti refuses {case}: {theirs}"
        ours = qlang.make_filter(args, force, namefield=namefield, isnumeric=isnumeric)
        assert ours == theirs["ok"], case


def test_make_filter_refused_as_by_ganeti(oracle: dict[str, Any]) -> None:
    for case, theirs in zip(MAKE_FILTER_INVALID, oracle["make"][len(MAKE_FILTER):],
                            strict=True):
        args, force, namefield, isnumeric = case
        assert "error" in theirs, f"Ganeti accepts {case}: {theirs}"
        with pytest.raises(getattr(errors, theirs["error"])):
            qlang.make_filter(args, force, namefield=namefield, isnumeric=isnumeric)


# Ganeti's own list commands, their filters evaluated by our master:
# (script, list arguments, names expected)
CLI_FILTERS = [
    ("gnt-instance", ("web*",), ["web1", "web2"]),
    ("gnt-instance", ("web1", "db1"), ["db1", "web1"]),
    ("gnt-instance", ("-F", "name =~ m/^web/ and be/vcpus >= 2"), ["web2"]),
    ("gnt-instance", ('not name =* "web*"',), ["db1"]),
    ("gnt-instance", ("-F", 'pnode == "node2" and not admin_state == "up"'), ["db1", "web1"]),
    ("gnt-instance", ("-F", "be/vcpus > 1 and be/vcpus < 8"), ["db1", "web2"]),
    ("gnt-node", ("-F", 'name != "node1"'), ["node2", "node3"]),
    ("gnt-node", ("node?",), ["node1", "node2", "node3"]),
    ("gnt-node", ("-F", "master_candidate and not offline"), ["node1", "node2", "node3"]),
]


def _filter_text(args: tuple[str, ...]) -> str | None:
    if args[0] == "-F":
        return args[1]
    return args[0] if len(args) == 1 and qlang.looks_like_filter(args[0]) else None


def _cli_texts() -> list[str]:
    return [t for t in (_filter_text(args) for _s, args, _e in CLI_FILTERS) if t is not None]


def test_ganeti_list_filters_on_our_master(ganeti3: Ganeti3, oracle: dict[str, Any],
                                           cluster: Any) -> None:
    # with pyparsing >= 3.1 Ganeti's client sends extra wrappers (or cannot encode
    # its filter at all); those cases say nothing about our master
    cases = [(script, args, expected) for script, args, expected in CLI_FILTERS
             if (text := _filter_text(args)) is None
             or oracle["raw"][text] == qlang.parse_filter(text)]
    assert len(cases) >= 5, oracle["pyparsing"]
    for name, node, vcpus in (("web1", "node2", 1), ("web2", "node3", 2),
                              ("db1", "node2", 4)):
        cluster.gnt("gnt-instance", "add", "-t", "file", "-n", node, "--disk", "0:size=4M",
                    "-B", f"vcpus={vcpus}", "--no-start", name)
    for script, args, expected in cases:
        argv = ("list", "--no-headers", "-o", "name", *args)
        theirs = ganeti3.run(cluster, script, *argv)
        assert theirs.returncode == 0, (script, args, theirs.stdout, theirs.stderr)
        ours = cluster.gnt(script, *argv)
        assert sorted(theirs.stdout.split()) == sorted(ours.stdout.split()) == expected, \
            (script, args)
