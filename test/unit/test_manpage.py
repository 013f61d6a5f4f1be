"""Man pages come from the command tables: every command and option is documented."""

from __future__ import annotations

import importlib

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
