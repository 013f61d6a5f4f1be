"""doc/rapi.md: generated from the route table, lists every resource, marks extensions."""

from __future__ import annotations

from pathlib import Path

from ganeti.rapi import auth, docs, resources

DOC = Path(__file__).resolve().parents[2] / "doc" / "rapi.md"


def test_committed_doc_is_current() -> None:
    """doc/rapi.md is exactly what the table gives; regenerate with
    ``python -m ganeti.rapi.docs > doc/rapi.md``."""
    assert DOC.read_text() == docs.render()


def test_every_operation_is_documented_with_its_access_and_parameters() -> None:
    table = resources.load_all()
    text = docs.render(table)
    for template, entry in table.items():
        assert f"| `{template}` |" in text
        for method, op in entry.operations.items():
            heading = f"#### {method} `{template}`"
            assert heading in text
            section = text.split(heading, 1)[1].split("\n#### ", 1)[0]
            assert section.startswith(" (**extension**)") is op.extension
            assert f"Access: `{op.access}`" in section
            assert op.summary in section
            for param in op.params:
                assert f"| `{param.name}` |" in section


def test_extension_marks_follow_the_table() -> None:
    text = docs.render(resources.load_all())
    assert "#### GET `/openapi.json` (**extension**)" in text
    assert "#### GET `/2/info`\n" in text
    assert "| `/openapi.json` | GET | GET: read | yes |" in text


def test_the_users_file_example_works() -> None:
    """The example in the prose is a real users file: each password it names logs in."""
    example = docs.PROLOGUE.split("```\n", 2)[1]
    users = auth.parse(example)
    for name, password, write in (("jack", "abc123", False), ("fred", "foo555", False),
                                  ("jessica", "pw", True)):
        assert auth.check_password(users[name], name, password), name
        assert users[name].user().write is write
