"""The journal record format and its file operations (ganeti.config_journal).

The store's use of it (ops of each write method, group commit, compaction)
is in test_config_journal_store.py.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganeti import config_journal as cj
from ganeti import errors


def _base() -> dict[str, Any]:
    return {"uuid": "c0ffee", "serial_no": 5, "ctime": 1.0, "mtime": 2.0, "version": 1,
            "cluster": {"name": "c"}, "nodes": {}, "instances": {}}


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data))


KEYS = ["k1", "k2", "k3", "k4"]
SECTIONS = ["nodes", "instances", "backup_schedules"]

_values = st.dictionaries(st.sampled_from(["a", "b", "ü"]),
                          st.one_of(st.integers(), st.text(max_size=5), st.floats(
                              allow_nan=False, allow_infinity=False)), max_size=3)
_op = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(SECTIONS), st.sampled_from(KEYS), _values),
    st.tuples(st.just("del"), st.sampled_from(SECTIONS), st.sampled_from(KEYS)),
    st.tuples(st.just("set"), st.just("cluster"), st.none(), _values))


def _valid_ops(data: dict[str, Any], raw_ops: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Drop deletes of keys that are not there (the store never records those)."""
    probe = copy.deepcopy(data)
    ops: list[list[Any]] = []
    for op in raw_ops:
        if op[0] == "del" and op[2] not in probe.get(op[1], {}):
            continue
        if op[1] == "cluster":
            probe["cluster"] = op[3]
        elif op[0] == "set":
            probe.setdefault(op[1], {})[op[2]] = op[3]
        else:
            del probe[op[1]][op[2]]
        ops.append(list(op))
    return ops


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(_op, max_size=4), max_size=12),
       compact_at=st.integers(min_value=0, max_value=12))
def test_replay_equals_the_state_applied_in_memory(tmp_path: Path,
                                                   batches: list[list[tuple[Any, ...]]],
                                                   compact_at: int) -> None:
    path = tmp_path / "config.data"
    cj.remove(path)
    live = _base()
    _write(path, live)
    for num, batch in enumerate(batches):
        ops = _valid_ops(live, batch)
        record = cj.Record.make(live["serial_no"] + 1, ops, 1000.0 + num)
        cj.append(path, [record])
        cj.apply_record(live, record)
        if num == compact_at:
            cj.compact(path, live, live["serial_no"])
        assert cj.load(path) == (live, live["serial_no"])
    # a round trip through JSON (floats, unicode) changes nothing either
    assert json.loads(json.dumps(cj.load(path)[0])) == live


def test_record_line_is_the_documented_json(tmp_path: Path) -> None:
    ops: list[list[Any]] = [["set", "instances", "u1", {"name": "i1"}],
                            ["del", "nodes", "n1"], ["set", "cluster", None, {"x": 1}]]
    line = cj.encode_record(7, ops, 12.5)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    obj = json.loads(line)
    assert obj["serial"] == 7 and obj["ops"] == ops and obj["ts"] == 12.5
    canon = json.dumps({"serial": 7, "ops": ops}, sort_keys=True, separators=(",", ":"))
    assert obj["crc"] == f"{zlib.crc32(canon.encode()):08x}"
    (record,) = cj.decode_records(line, tmp_path / "j")
    assert (record.serial, record.ops, record.ts, record.line) == (7, ops, 12.5, line)


@pytest.mark.parametrize("bad_op", [["put", "nodes", "k", {}], ["set", "nodes", "k"],
                                    ["del", "cluster", None], ["set", "nodes", 3, {}],
                                    ["set", "nodes", "k", [1]]])
def test_malformed_ops_are_refused(bad_op: list[Any]) -> None:
    with pytest.raises(ValueError):
        cj.encode_record(1, [bad_op], 0.0)


def _journal(path: Path, serials: list[int]) -> list[bytes]:
    lines = [cj.encode_record(s, [["set", "nodes", f"n{s}", {"s": s}]], float(s))
             for s in serials]
    cj.journal_path(path).write_bytes(b"".join(lines))
    return lines


def test_torn_or_corrupt_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    _write(path, _base())
    lines = _journal(path, [6, 7, 8])
    jpath = cj.journal_path(path)
    for tail in (lines[2][:-1], lines[2][:10], lines[2].replace(b'"s":8', b'"s":9'),
                 b"\n"):
        jpath.write_bytes(lines[0] + lines[1] + tail)
        data, serial = cj.load(path)
        assert serial == 7 and sorted(data["nodes"]) == ["n6", "n7"]


def test_bad_middle_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    _write(path, _base())
    lines = _journal(path, [6, 7, 8])
    jpath = cj.journal_path(path)
    jpath.write_bytes(lines[0] + lines[1].replace(b'"s":7', b'"s":70') + lines[2])
    with pytest.raises(errors.ConfigurationError,
                       match=rf"{jpath}, line 2: crc mismatch \(serial 7\)"):
        cj.load(path)
    jpath.write_bytes(lines[0] + b"garbage\n" + lines[2])
    with pytest.raises(errors.ConfigurationError, match=rf"{jpath}, line 2: not valid JSON"):
        cj.load(path)


def test_serial_gap_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    _write(path, _base())
    _journal(path, [6, 8])
    jpath = cj.journal_path(path)
    with pytest.raises(errors.ConfigurationError, match=rf"{jpath}, line 2: serial 8 follows 6"):
        cj.load(path)
    _journal(path, [7, 8])  # the file is at 5: record 6 is missing
    with pytest.raises(errors.ConfigurationError,
                       match=rf"{jpath}, line 1: serial 7, but the configuration is at 5"):
        cj.load(path)


def test_records_the_file_already_has_are_skipped(tmp_path: Path) -> None:
    """A compaction that crashed after replacing the file, before the journal."""
    path = tmp_path / "config.data"
    data = _base()
    _write(path, data)
    _journal(path, [6, 7, 8])
    full, serial = cj.load(path)
    assert serial == 8
    at7 = copy.deepcopy(data)
    for rec in cj.read_journal(path)[:2]:
        cj.apply_record(at7, rec)
    _write(path, at7)  # the compaction's new file; the journal is still the old one
    assert cj.load(path) == (full, 8)


def test_compact_keeps_only_newer_records_and_every_crash_point_loads(tmp_path: Path
                                                                      ) -> None:
    path = tmp_path / "config.data"
    data = _base()
    _write(path, data)
    _journal(path, [6, 7, 8])
    full, _ = cj.load(path)
    at7 = copy.deepcopy(data)
    for rec in cj.read_journal(path)[:2]:
        cj.apply_record(at7, rec)
    cj.compact(path, at7, 7)
    assert [r.serial for r in cj.read_journal(path)] == [8]
    assert json.loads(path.read_bytes())["serial_no"] == 7
    assert cj.load(path) == (full, 8)
    cj.compact(path, full, 8)
    assert cj.journal_path(path).read_bytes() == b""
    assert json.loads(path.read_bytes()) == full
    with pytest.raises(errors.ProgrammerError):
        cj.compact(path, full, 9)


def test_append_refuses_a_base_serial_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    _write(path, _base())
    rec = cj.Record.make(7, [], 1.0)
    with pytest.raises(errors.ConfigurationError, match="base serial mismatch"):
        cj.append(path, [rec])
    cj.append(path, [cj.Record.make(6, [], 1.0)])
    with pytest.raises(errors.ConfigurationError, match="base serial mismatch"):
        cj.append(path, [cj.Record.make(6, [], 1.0)])
    with pytest.raises(errors.ConfigurationError, match="out of order"):
        cj.append(path, [cj.Record.make(7, [], 1.0), cj.Record.make(9, [], 1.0)])
    cj.append(path, [cj.Record.make(7, [], 1.0), cj.Record.make(8, [], 1.0)])
    assert cj.current_serial(path) == 8
    assert cj.file_serial(path) == 5


def test_append_cuts_a_torn_tail_first(tmp_path: Path) -> None:
    """Else the torn line would become a bad middle line, and the next load fail."""
    path = tmp_path / "config.data"
    _write(path, _base())
    lines = _journal(path, [6, 7])
    jpath = cj.journal_path(path)
    jpath.write_bytes(lines[0] + lines[1][:15])
    cj.append(path, [cj.Record.make(7, [["del", "nodes", "n6"]], 3.0)])
    data, serial = cj.load(path)
    assert serial == 7 and data["nodes"] == {} and data["mtime"] == 3.0


def test_file_serial_of_a_file_in_another_key_order(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    path.write_text(json.dumps({"cluster": {"serial_no": 99}, "serial_no": 3}, indent=2))
    assert cj.file_serial(path) == 3
    path.write_text('{"uuid":"x","serial_no":12,"cluster":{}}')
    assert cj.file_serial(path) == 12


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    with pytest.raises(errors.ConfigurationError, match="does not exist"):
        cj.load(path)
    path.write_text("[1]")
    with pytest.raises(errors.ConfigurationError, match="must hold a JSON object"):
        cj.load(path)
    path.write_text("{")
    with pytest.raises(errors.ConfigurationError, match=f"{path} is not valid JSON"):
        cj.load(path)
    _write(path, _base())
    cj.journal_path(path).write_bytes(
        cj.encode_record(6, [["del", "nodes", "nope"]], 1.0))
    with pytest.raises(errors.ConfigurationError, match="nodes has no nope to delete"):
        cj.load(path)


def test_append_after_a_newer_file_drops_the_stale_journal(tmp_path: Path) -> None:
    """A whole file newer than the journal (shipped to a candidate, or a compaction that
    crashed before rewriting the journal): the next append follows the file."""
    path = tmp_path / "config.data"
    data = _base()
    _write(path, data)
    _journal(path, [6, 7])
    data["serial_no"] = 9
    _write(path, data)
    assert cj.load(path) == (data, 9)  # the stale records are skipped
    with pytest.raises(errors.ConfigurationError, match="base serial mismatch"):
        cj.append(path, [cj.Record.make(8, [], 1.0)])
    cj.append(path, [cj.Record.make(10, [["set", "nodes", "n10", {}]], 1.0)])
    assert [r.serial for r in cj.read_journal(path)] == [10]
    assert cj.load(path)[1] == 10
