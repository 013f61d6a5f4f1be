"""The committed gnt-* man pages and the help of every option.

doc/man/gnt-*.8 are committed (readable from a checkout without make) and
must equal what lib/tools/manpage.py makes from the command tables; every
option of every table, nested ones (gnt-backup schedule ...) included, has
a help text of its own.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from ganeti import cli
from ganeti.tools import manpage

TOP = Path(__file__).resolve().parents[2]
MAN_DIR = TOP / "doc" / "man"


def _option_actions() -> list[tuple[str, str, argparse.Action]]:
    """(program, command, action) of every option of every command table."""
    found = []
    for prog, commands in manpage.all_command_tables():
        parser = cli.build_parser(prog, commands)
        for name, cparser in manpage._subparsers(parser).items():
            for action in cparser._actions:
                if action.option_strings and action.dest != "help":
                    found.append((prog, name, action))
    return found


def test_the_walk_covers_nested_tables_and_the_commands_options() -> None:
    seen = {(prog, name, flag) for prog, name, action in _option_actions()
            for flag in action.option_strings}
    assert ("gnt-backup schedule", "add", "--cron") in seen
    assert ("gnt-backup", "prune", "--keep-daily") in seen
    assert ("gnt-backup", "import", "--disk") in seen
    assert ("gnt-instance", "list", "--output") in seen


def test_every_option_has_help_text() -> None:
    missing = [f"{prog} {name} {'/'.join(action.option_strings)}"
               for prog, name, action in _option_actions()
               if not (action.help or "").strip() or action.help == argparse.SUPPRESS]
    assert not missing, "options without help: " + ", ".join(missing)


def test_no_help_text_only_names_its_own_option() -> None:
    """A help that repeats the flag or dest (e.g. "keep_daily (--keep-daily)") says nothing."""
    circular = []
    for prog, name, action in _option_actions():
        text = (action.help or "").lower()
        words = {flag.lstrip("-").lower() for flag in action.option_strings}
        words |= {action.dest.lower(), action.dest.replace("_", "-").lower()}
        stripped = text
        for word in sorted(words, key=len, reverse=True):
            stripped = stripped.replace(f"--{word}", "").replace(word, "")
        if len(stripped.strip(" ()-:,.")) < 8:
            circular.append(f"{prog} {name} {action.option_strings[-1]}: {action.help!r}")
    assert not circular, circular


def test_keep_rules_say_what_unset_means() -> None:
    helps = {flag: action.help or "" for prog, name, action in _option_actions()
             if (prog, name) == ("gnt-backup", "prune") for flag in action.option_strings}
    for rule in ("--keep-last", "--keep-daily", "--keep-yearly"):
        assert "not used" in helps[rule] and "any rule keeps" in helps[rule], helps[rule]


@pytest.mark.parametrize("prog", sorted(manpage.SCRIPTS))
def test_committed_page_is_what_the_generator_makes(prog: str) -> None:
    module_name, summary = manpage.SCRIPTS[prog]
    committed = MAN_DIR / f"{prog}.8"
    assert committed.is_file(), f"{committed} is not committed"
    assert committed.read_text() == manpage.render(prog, module_name, summary), (
        f"{committed} is stale: run .venv/bin/python -m ganeti.tools.manpage doc/man")


def test_nested_commands_have_sections_with_their_options() -> None:
    page = (MAN_DIR / "gnt-backup.8").read_text()
    from ganeti.client import gnt_backup_schedule

    for name, command in gnt_backup_schedule.COMMANDS.items():
        section = f".SS {manpage._roff('schedule ' + name)}\n"
        assert section in page, section
        body = page.split(section, 1)[1].split("\n.SS ", 1)[0]
        assert body.startswith(manpage._roff(f"gnt-backup schedule {name} ")), body[:80]
        for option in command.options:
            for flag in option.flags:
                assert f"\\fB{manpage._roff(flag)}" in body or \
                    f" {manpage._roff(flag)}" in body, (name, flag)


def test_check_mode_names_a_stale_page_and_regeneration_fixes_it(tmp_path: Path) -> None:
    """The one regeneration command the integrator runs, and its --check."""
    run = [sys.executable, "-m", "ganeti.tools.manpage"]
    made = subprocess.run([*run, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{prog}.8" for prog in manpage.SCRIPTS)
    ok = subprocess.run([*run, "--check", str(tmp_path)], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    page = tmp_path / "gnt-job.8"
    page.write_text(page.read_text().replace("job", "jab", 1))
    stale = subprocess.run([*run, "--check", str(tmp_path)], capture_output=True, text=True,
                           timeout=120)
    assert stale.returncode == 1
    assert "gnt-job.8 is stale" in stale.stderr and "gnt-node.8" not in stale.stderr


def test_a_page_reads_with_man() -> None:
    """Readable from a checkout: man -l renders the committed page (where man exists)."""
    try:
        shown = subprocess.run(["man", "-l", str(MAN_DIR / "gnt-backup.8")],
                               capture_output=True, text=True, timeout=60,
                               env={"MANPAGER": "cat", "PAGER": "cat", "PATH": "/usr/bin:/bin",
                                    "MANWIDTH": "100"})
    except FileNotFoundError:
        pytest.skip("man is not installed")
    if shown.returncode != 0 and "not found" in shown.stderr:
        pytest.skip(f"man cannot render here: {shown.stderr.strip()}")
    assert shown.returncode == 0, shown.stderr
    assert "schedule add" in shown.stdout and "--keep-daily" in shown.stdout
