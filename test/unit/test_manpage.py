"""Man pages come from the command tables: every command and option is documented."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from ganeti.tools import manpage


@pytest.mark.parametrize("prog", sorted(manpage.SCRIPTS))
def test_every_command_and_option_appears(prog: str) -> None:
    module_name, summary = manpage.SCRIPTS[prog]
    page = manpage.render(prog, module_name, summary)
    assert page.startswith(f".TH {prog.upper()} 8")
    for name, command in importlib.import_module(module_name).COMMANDS.items():
        assert f".SS {manpage._roff(name)}\n" in page
        for option in command.options:
            for flag in option.flags:
                assert manpage._roff(flag) in page



@pytest.mark.parametrize("module_name", ["ganeti.server.masterd", "ganeti.server.noded",
                                         "ganeti.server.rapi"])
def test_daemon_pages_document_every_option(module_name: str) -> None:
    """The daemons' pages are written by hand: each option of their parser is in them."""
    parser = importlib.import_module(module_name).build_parser()
    page = (Path(__file__).parents[2] / "doc" / "man" / f"{parser.prog}.8").read_text()
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert manpage._roff(flag) in page, f"{flag} missing from {parser.prog}.8"
