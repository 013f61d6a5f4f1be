"""The query filter language (ganeti.qlang) and the filter evaluator of ganeti.query."""

from __future__ import annotations

import importlib
import re
import threading
from typing import Any

import pytest

from ganeti import cli, errors, qlang, query

# --- grammar ------------------------------------------------------------------------

PARSED = [
    # comparisons ("=" is the legacy spelling of "==")
    ('name == "web1"', ["==", "name", "web1"]),
    ("name = 'web1'", ["==", "name", "web1"]),
    ('status != "running"', ["!=", "status", "running"]),
    ("be/vcpus < 4", ["<", "be/vcpus", 4]),
    ("be/vcpus <= 4", ["<=", "be/vcpus", 4]),
    ("disk.count > -1", [">", "disk.count", -1]),
    ("serial_no >= +12", [">=", "serial_no", 12]),
    ("x==007", ["==", "x", 7]),
    # truth of a field, not
    ("offline", ["?", "offline"]),
    ("not offline", ["!", ["?", "offline"]]),
    ("not not offline", ["!", ["!", ["?", "offline"]]]),
    # keywords are words: alone they are field names
    ("and", ["?", "and"]),
    # membership
    ('"web" in tags', ["=[]", "tags", "web"]),
    ("1 not in disk.sizes", ["!", ["=[]", "disk.sizes", 1]]),
    # regular expressions: m optional, four delimiters, i/s flags sorted
    ("name =~ m/^web/", ["=~", "name", "^web"]),
    ("name =~ /^web/", ["=~", "name", "^web"]),
    ("name =~ m#a/b#", ["=~", "name", "a/b"]),
    ("name =~ m^x^", ["=~", "name", "x"]),
    ("name =~ m|x|si", ["=~", "name", "(?is)x"]),
    ("name !~ m/db/i", ["!", ["=~", "name", "(?i)db"]]),
    # a backslash escapes the next character (so "\/" is a slash, "\d" a "d")
    (r"name =~ m/a\/b/", ["=~", "name", "a/b"]),
    # globs
    ('name =* "web*.example.com"', ["=~", "name", r"^web[^.]*\.example\.com(\..*)?$"]),
    ("name !* 'db?'", ["!", ["=~", "name", r"^db[^.](\..*)?$"]]),
    # strings keep their backslashes (quotes are only removed)
    (r'note == "a\"b"', ["==", "note", r"a\"b"]),
    # logic: and binds tighter than or; chains are flat; parentheses nest
    ("a and b and c", ["&", ["?", "a"], ["?", "b"], ["?", "c"]]),
    ("a or b and c", ["|", ["?", "a"], ["&", ["?", "b"], ["?", "c"]]]),
    ("(a or b) and c", ["&", ["|", ["?", "a"], ["?", "b"]], ["?", "c"]]),
    ("not (a or b)", ["!", ["|", ["?", "a"], ["?", "b"]]]),
    ("((a))", ["?", "a"]),
    ('name =~ m/^web/ and status == "running"',
     ["&", ["=~", "name", "^web"], ["==", "status", "running"]]),
    ("(name =~ /x/) and b", ["&", ["=~", "name", "x"], ["?", "b"]]),
    # flags may follow after a blank; a keyword there is the next operator (Ganeti 3.0
    # refuses these: it reads "and" as flags)
    ("name =~ /x/ i", ["=~", "name", "(?i)x"]),
    ("name =~ /x/ or b", ["|", ["=~", "name", "x"], ["?", "b"]]),
    ("not name =~ /x/i and b", ["&", ["!", ["=~", "name", "(?i)x"]], ["?", "b"]]),
    ("  a\tor\tb  ", ["|", ["?", "a"], ["?", "b"]]),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse_filter(text: str, expected: list[Any]) -> None:
    result = qlang.parse_filter(text)
    assert result == expected
    # plain lists all the way down: the result goes over LUXI as JSON
    assert _plain(result)


def _plain(value: Any) -> bool:
    if isinstance(value, list):
        return type(value) is list and all(_plain(v) for v in value)
    return isinstance(value, (str, int))


ERRORS = [
    # (text, column, words the message must contain)
    ("", 1, "Expected condition"),
    ("name == ", 6, "Expected end of text, found '=='"),
    ("a or", 5, "Expected condition, found end of text"),
    ("(a", 3, "found end of text"),
    ("x == - 5", 3, "found '=='"),
    ("x in y", 3, "found 'in'"),
    ("name =~ m/x/q", 9, "Unknown regular expression flags: 'q'"),
    ("name =~ m/(/", 9, "Invalid regular expression"),
    ("name =~ /x/ andb", 9, "Unknown regular expression flags: 'abdn'"),
    ("1name", 1, "Expected condition"),
]


@pytest.mark.parametrize(("text", "column", "words"), ERRORS)
def test_syntax_errors_name_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(errors.QueryFilterParseError) as info:
        qlang.parse_filter(text)
    message = info.value.args[0]
    assert words in message
    assert f"at column {column}" in message
    assert f"'{text}'" in message
    # one string: the error travels over LUXI
    assert len(info.value.args) == 1
    line, caret = qlang.filter_details(info.value)
    assert line == text and caret.index("^") == column - 1


def test_caret_under_the_failing_line() -> None:
    with pytest.raises(errors.QueryFilterParseError) as info:
        qlang.parse_filter("a and\n  b ==")
    assert qlang.filter_details(info.value) == ["  b ==", "    ^"]


def test_every_list_command_takes_names_and_the_shared_filter_option() -> None:
    from ganeti.client import gnt_backup_schedule
    from ganeti.tools import manpage

    tables = {prog: importlib.import_module(module).COMMANDS
              for prog, (module, _summary) in manpage.SCRIPTS.items()}
    tables["gnt-backup schedule"] = gnt_backup_schedule.COMMANDS
    listing = {(prog, name): cmd for prog, table in tables.items()
               for name, cmd in table.items() if cmd.options and cli.LIST_OPTS[0] in
               cmd.options}
    assert ("gnt-instance", "list") in listing and ("gnt-debug", "locks") in listing
    assert ("gnt-backup schedule", "list") in listing
    for (prog, name), cmd in listing.items():
        assert cli.FILTER_OPT in cmd.options, (prog, name)
        assert [a.max for a in cmd.args] == [None], (prog, name)


def test_parse_filter_refuses_a_non_string() -> None:
    with pytest.raises(errors.QueryFilterParseError, match="must be a string"):
        qlang.parse_filter(["==", "name", "x"])  # type: ignore[arg-type]


def test_parse_filter_from_many_threads() -> None:
    results: list[Any] = []

    def work() -> None:
        for _ in range(30):
            results.append(qlang.parse_filter("a and (b == 1 or c =~ /x/)"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 120
    assert all(r == ["&", ["?", "a"], ["|", ["==", "b", 1], ["=~", "c", "x"]]]
               for r in results)


# --- names, globs and the filter heuristic (make_filter) ---------------------------------


def test_make_filter_names_and_globs() -> None:
    assert qlang.make_filter([], False) is None
    assert qlang.make_filter(None, False) is None
    assert qlang.make_filter(["web1", "db1"], False) == \
        ["|", ["==", "name", "web1"], ["==", "name", "db1"]]
    assert qlang.make_filter(["web*", "db?"], False, namefield="node") == \
        ["|", ["=~", "node", r"^web[^.]*(\..*)?$"], ["=~", "node", r"^db[^.](\..*)?$"]]
    assert qlang.make_filter(["7", "8"], False, namefield="id", isnumeric=True) == \
        ["|", ["==", "id", 7], ["==", "id", 8]]
    assert qlang.make_filter(["a"], False, namefield=None) == ["|", ["==", "name", "a"]]


def test_make_filter_reads_one_filter_like_argument_as_a_filter() -> None:
    assert qlang.make_filter(["name == 'x'"], False) == ["==", "name", "x"]
    assert qlang.make_filter(["offline"], True) == ["?", "offline"]
    # two arguments are names even if they look like filters
    assert qlang.make_filter(["a b", "c"], False) == \
        ["|", ["==", "name", "a b"], ["==", "name", "c"]]


def test_make_filter_errors() -> None:
    with pytest.raises(errors.OpPrereqError, match="Exactly one argument") as info:
        qlang.make_filter(["a", "b"], True)
    assert info.value.ecode == errors.ECODE_INVAL
    with pytest.raises(errors.OpPrereqError, match="Exactly one argument"):
        qlang.make_filter([], True)
    with pytest.raises(errors.OpPrereqError, match="Invalid job ID"):
        qlang.make_filter(["x"], False, namefield="id", isnumeric=True)
    with pytest.raises(errors.QueryFilterParseError, match="column 3"):
        qlang.make_filter(["a ="], False)


def test_glob_patterns_match_dns_names() -> None:
    regex = re.compile(qlang.glob_to_regexp("web*"))
    assert regex.search("web1") and regex.search("web1.example.com")
    assert not regex.search("aweb1") and not regex.search("we.b1")
    assert re.compile(qlang.glob_to_regexp("a+b")).search("a+b")


def test_plain_names_and_and_filters() -> None:
    assert qlang.plain_names(["a", "b"], False) == ["a", "b"]
    assert qlang.plain_names(["a*"], False) is None
    assert qlang.plain_names(["a == 1"], False) is None
    assert qlang.plain_names(["a"], True) is None
    assert qlang.and_filters(None, None) is None
    assert qlang.and_filters(["?", "a"], None) == ["?", "a"]
    assert qlang.and_filters(["?", "a"], ["?", "b"]) == ["&", ["?", "a"], ["?", "b"]]


# --- evaluation (ganeti.query) ----------------------------------------------------------

FIELDS = [
    query.FieldDef("name", "Name", query.QFT_TEXT, "", query.item_getter("name")),
    query.FieldDef("vcpus", "VCPUs", query.QFT_NUMBER, "", query.item_getter("vcpus")),
    query.FieldDef("mem", "Memory", query.QFT_UNIT, "", query.item_getter("mem")),
    query.FieldDef("up", "Up", query.QFT_BOOL, "", query.item_getter("up")),
    query.FieldDef("tags", "Tags", query.QFT_OTHER, "", query.item_getter("tags")),
    query.FieldDef("ctime", "CTime", query.QFT_TIMESTAMP, "", query.item_getter("ctime")),
]
ROWS: list[dict[str, Any]] = [
    {"name": "web1.example.com", "vcpus": 2, "mem": 512, "up": True, "tags": ["web", "a"],
     "ctime": 100.0},
    {"name": "web2", "vcpus": 4, "mem": 1024, "up": False, "tags": [], "ctime": [200, 500000]},
    {"name": "db1", "vcpus": 8, "mem": 4096, "up": True, "tags": ["db"], "ctime": 300},
    # a row whose data is unavailable
    {"name": "gone", "vcpus": query.UNAVAIL, "mem": query.NODATA, "up": query.OFFLINE,
     "tags": query.UNAVAIL, "ctime": query.UNAVAIL},
]


def _names(qfilter: Any) -> list[str]:
    keep = query.compile_local_filter("test", FIELDS, qfilter)
    return [row["name"] for row in ROWS if keep(row)]


EVALUATED = [
    (None, ["web1.example.com", "web2", "db1", "gone"]),
    (["==", "name", "web2"], ["web2"]),
    (["=", "name", "web2"], ["web2"]),
    (["!=", "name", "web2"], ["web1.example.com", "db1", "gone"]),
    # unavailable data is "not equal" (as in Ganeti), and never equal or ordered
    (["!=", "vcpus", 4], ["web1.example.com", "db1", "gone"]),
    (["<", "vcpus", 4], ["web1.example.com"]),
    (["<=", "vcpus", 4], ["web1.example.com", "web2"]),
    ([">", "mem", 1024], ["db1"]),
    ([">=", "mem", 1024], ["web2", "db1"]),
    (["=~", "name", "^web"], ["web1.example.com", "web2"]),
    (["=[]", "tags", "web"], ["web1.example.com"]),
    (["=[]", "name", "eb"], ["web1.example.com", "web2"]),  # a string contains a substring
    (["?", "up"], ["web1.example.com", "db1"]),
    (["?", "tags"], ["web1.example.com", "db1"]),
    (["!", ["?", "up"]], ["web2", "gone"]),
    (["|", ["==", "name", "db1"], ["==", "vcpus", 4]], ["web2", "db1"]),
    (["&", ["?", "up"], [">", "vcpus", 2]], ["db1"]),
    (["|"], []),
    (["&"], ["web1.example.com", "web2", "db1", "gone"]),
    # timestamps compare as seconds, also as [sec, usec]
    ([">", "ctime", 200.25], ["web2", "db1"]),
    # the parser's output, end to end
    (qlang.parse_filter('name =~ m/^WEB/i and not "a" in tags'), ["web2"]),
    (qlang.make_filter(["web*"], False), ["web1.example.com", "web2"]),
]


@pytest.mark.parametrize(("qfilter", "expected"), EVALUATED)
def test_evaluate_every_operator(qfilter: Any, expected: list[str]) -> None:
    assert _names(qfilter) == expected


BAD_FILTERS = [
    (["~~", "name", "x"], errors.QueryFilterParseError, "unknown operator '~~'"),
    ("name", errors.QueryFilterParseError, "expected \\[operator"),
    ([], errors.QueryFilterParseError, "expected \\[operator"),
    (["==", "colour", "red"], errors.OpPrereqError, "Unknown field 'colour'"),
    (["?", "colour"], errors.OpPrereqError, "Unknown field 'colour'"),
    (["==", "name"], errors.QueryFilterParseError, "'==' takes a field and a value, got 1"),
    (["!", ["?", "up"], ["?", "up"]], errors.QueryFilterParseError, "exactly one operand"),
    (["?"], errors.QueryFilterParseError, "'\\?' takes exactly one field"),
    (["=~", "name", "("], errors.QueryFilterParseError, "bad regular expression"),
    (["=~", "name", 5], errors.QueryFilterParseError, "needs a regular expression"),
    (["==", "vcpus", "4"], errors.QueryFilterParseError,
     "cannot compare field 'vcpus' \\(number\\) with '4'"),
    (["==", "name", 4], errors.QueryFilterParseError, "expected a string"),
    (["==", "up", 1], errors.QueryFilterParseError, "expected a boolean"),
    (["|", ["==", "name", "a"], ["bogus"]], errors.QueryFilterParseError, "unknown operator"),
    (["!"] * 1 + [["!", ["!", ["!", ["!", ["!", ["!", ["!", ["!", ["!", ["?", "up"]]]]]]]]]]],
     errors.QueryFilterParseError, "nested deeper than 10"),
]


@pytest.mark.parametrize(("qfilter", "error", "words"), BAD_FILTERS)
def test_bad_filters_are_refused_before_any_item(qfilter: Any, error: type[Exception],
                                                 words: str) -> None:
    with pytest.raises(error, match=words):
        query.compile_local_filter("test", FIELDS, qfilter)


def test_nine_levels_are_allowed() -> None:
    qfilter: Any = ["?", "up"]
    for _ in range(9):
        qfilter = ["!", qfilter]
    assert _names(qfilter) == ["web2", "gone"]


def test_job_ids_may_be_strings() -> None:
    fields = [query.FieldDef("id", "ID", query.QFT_NUMBER, "", query.item_getter("id"))]
    keep = query.compile_local_filter(query.RESOURCE_JOB, fields, [">=", "id", "10"])
    assert [i for i in (9, 10, 11) if keep({"id": i})] == [10, 11]
    with pytest.raises(errors.QueryFilterParseError, match="invalid job id 'x'"):
        query.compile_local_filter(query.RESOURCE_JOB, fields, ["==", "id", "x"])
    # elsewhere a number field wants a number
    with pytest.raises(errors.QueryFilterParseError, match="cannot compare"):
        query.compile_local_filter("lock", fields, ["==", "id", "10"])


def test_host_name_fields_match_the_first_labels() -> None:
    """As Ganeti's host-name fields: "web1" is web1.example.com too (any case)."""
    names = ["web1", "web1.example.com", "WEB1.Example.com", "web10", "aweb1", "db1"]
    fields = [query.FieldDef("name", "Name", query.QFT_TEXT, "", query.item_getter("name"))]

    def matching(what: str, qfilter: Any) -> list[str]:
        keep = query.compile_local_filter(what, fields, qfilter)
        return [n for n in names if keep({"name": n})]

    assert matching(query.RESOURCE_NODE, ["==", "name", "web1"]) == \
        ["web1", "web1.example.com", "WEB1.Example.com"]
    assert matching(query.RESOURCE_INSTANCE, ["=", "name", "web1.example"]) == \
        ["web1.example.com", "WEB1.Example.com"]
    assert matching(query.RESOURCE_INSTANCE, ["!=", "name", "web1"]) == \
        ["web10", "aweb1", "db1"]
    # other fields and resources compare exactly
    assert matching("lock", ["==", "name", "web1"]) == ["web1"]
