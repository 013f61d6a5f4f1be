"""The oracle itself: Ganeti 3.0.2's own code runs, unpacked from Debian's packages."""

from __future__ import annotations

from support.ganeti_oracle import Ganeti3


def test_oracle_runs_ganeti_3_0_2(ganeti3: Ganeti3) -> None:
    assert ganeti3.versions["ganeti-3.0"].startswith("3.0.2")
    result = ganeti3.eval("from ganeti import constants\n"
                          "result = [constants.RELEASE_VERSION, constants.LUXI_VERSION]")
    assert result == ["3.0.2", 3000000]


def test_oracle_scripts_and_samples_are_there(ganeti3: Ganeti3) -> None:
    for script in ("gnt-backup", "gnt-job", "gnt-instance", "gnt-cluster", "gnt-debug"):
        assert (ganeti3.share / script).is_file()
    samples = sorted(p.name for p in (ganeti3.testsuite / "test" / "data" / "ovfdata")
                     .glob("*.ini"))
    assert "config.ini" in samples
