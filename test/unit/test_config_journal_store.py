"""ConfigStore on the journal: records per commit, compaction, crash points.

test_config_journal.py covers the record format; test_config_store.py the
indexes and group commit (whose hypothesis test also checks that file +
journal replay to the state in memory after every change).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ganeti import config, config_journal, errors
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import NIC, Instance

WAIT = 120.0


def _new_store(path: Path) -> ConfigStore:
    data = make_initial_config("cluster.example.com", "node1.example.com", "192.0.2.1",
                               "192.0.2.10", port=11811)
    return ConfigStore.initialize(path, data)


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return _new_store(tmp_path / "config.data")


def _add(store: ConfigStore, name: str) -> Instance:
    inst = Instance(name=name, primary_node=store.get_master_node(),
                    nics=[NIC(mac=f"aa:00:00:00:{len(name):02x}:01")])
    store.add_instance(inst)
    return inst


def _journal(store: ConfigStore) -> list[config_journal.Record]:
    return config_journal.read_journal(store.path)


def _file(store: ConfigStore) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(store.path.read_bytes())
    return result


def test_a_commit_appends_its_objects_not_the_file(store: ConfigStore) -> None:
    before = store.path.read_bytes()
    inst = _add(store, "inst1")
    store.set_instance_admin_state(inst.uuid, "up")
    got = store.get_instance_info(inst.uuid)
    assert got is not None
    got.tags = ["t"]
    store.update(got)
    store.remove_instance(inst.uuid)
    assert store.path.read_bytes() == before  # the file was not rewritten
    records = _journal(store)
    start = _file(store)["serial_no"]
    assert [r.serial for r in records] == [start + 1, start + 2, start + 3, start + 4]
    assert [[op[:3] for op in r.ops] for r in records] == [
        [["set", "instances", inst.uuid]]] * 3 + [[["del", "instances", inst.uuid]]]
    # the value is the object's JSON exactly as config.data holds it
    assert records[2].ops[0][3]["tags"] == ["t"]
    assert records[2].ops[0][3] == json.loads(got.to_json())
    assert config_journal.load(store.path) == (store.to_dict(), store.get_serial())


def test_cluster_update_and_schedules_are_recorded(store: ConfigStore) -> None:
    cluster = store.get_cluster_info()
    cluster.tags = ["x"]
    store.update(cluster)
    (record,) = _journal(store)
    assert record.ops == [["set", "cluster", None, json.loads(
        store.snapshot().get_cluster_info().to_json())]]
    assert record.ts == store.to_dict()["mtime"]


def test_records_since_and_record_listeners(store: ConfigStore) -> None:
    got: list[tuple[list[int], int]] = []
    store.add_write_listener(lambda recs, serial: got.append(([r.serial for r in recs],
                                                              serial)), with_records=True)
    start = store.get_serial()
    _add(store, "a")
    _add(store, "b")
    assert got == [([start + 1], start + 1), ([start + 2], start + 2)]
    since = store.records_since(start)
    assert since is not None and [r.serial for r in since] == [start + 1, start + 2]
    assert since == _journal(store)
    assert store.records_since(start + 2) == []
    assert store.records_since(start - 1) is None  # older than the file: not kept
    store.compact()
    _add(store, "c")
    store.compact()
    # one compaction's worth of older records is kept for lagging candidates
    kept = store.records_since(start + 2)
    assert kept is not None and [r.serial for r in kept] == [start + 3]
    assert store.records_since(start + 1) is None
    # file + records_since(its serial) is always the whole state
    assert store.records_since(_file(store)["serial_no"]) == []


def test_background_compaction_keeps_the_journal_short(
        store: ConfigStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "COMPACT_MIN_BYTES", 4096)
    store._compact_at = 4096
    compactions: list[int] = []
    real = config._write_file

    def spy(path: Path, raw: bytes, *, exclusive: bool) -> Any:
        compactions.append(json.loads(raw)["serial_no"])
        return real(path, raw, exclusive=exclusive)

    monkeypatch.setattr(config, "_write_file", spy)
    appended = 0
    for idx in range(60):
        _add(store, f"inst{idx}")
        last = store.records_since(store.get_serial() - 1)
        assert last is not None
        appended += len(last[0].line)
    deadline = time.monotonic() + WAIT
    while store._compactor is not None:  # the thread ends once nothing is due
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert len(compactions) >= 2 and compactions == sorted(compactions)
    assert _file(store)["serial_no"] == compactions[-1]
    assert config_journal.journal_path(store.path).stat().st_size < appended / 2
    assert config_journal.load(store.path) == (store.to_dict(), store.get_serial())


def test_close_leaves_a_complete_file_and_no_journal(store: ConfigStore) -> None:
    _add(store, "a")
    store.close()
    assert config_journal.journal_path(store.path).read_bytes() == b""
    assert _file(store) == store.to_dict()
    assert ConfigStore(store.path).get_serial() == store.get_serial()


def test_reader_notices_journal_growth(store: ConfigStore) -> None:
    reader = ConfigStore(store.path)
    assert reader.reload_if_changed() is False
    _add(store, "a")  # the file stays; only the journal grows
    assert reader.reload_if_changed() is True
    assert reader.snapshot().get_instance_info_by_name("a") is not None
    assert reader.reload_if_changed() is False
    store.compact()  # the file is replaced, same content
    assert reader.reload_if_changed() is False
    _add(store, "b")
    assert reader.reload_if_changed() is True and reader.get_serial() == store.get_serial()


def test_a_torn_journal_tail_is_cut_before_the_next_append(store: ConfigStore) -> None:
    _add(store, "a")
    jpath = config_journal.journal_path(store.path)
    with open(jpath, "ab") as fh:
        fh.write(b'{"serial": 3, "ops": [["set", "inst')  # a crash mid-append
    reopened = ConfigStore(store.path)
    assert reopened.get_serial() == store.get_serial()
    _add(reopened, "b")
    again = ConfigStore(store.path)
    assert {i.name for i in again.snapshot().get_all_instances_info().values()} == {"a", "b"}


def test_initialize_drops_a_journal_left_by_an_earlier_cluster(tmp_path: Path) -> None:
    path = tmp_path / "config.data"
    old = _new_store(path)
    _add(old, "a")
    path.unlink()  # the file was removed, its journal left
    fresh = _new_store(path)
    assert fresh.get_instance_list() == []
    assert not config_journal.journal_path(path).exists() or _journal(fresh) == []


@pytest.mark.parametrize("point", ["before_file", "after_file", "journal_temp"])
def test_a_crash_at_each_compaction_step_loses_nothing(
        store: ConfigStore, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    for idx in range(5):
        _add(store, f"inst{idx}")
    expected = store.to_dict()

    class Crash(BaseException):
        pass

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    if point == "before_file":
        monkeypatch.setattr(os, "replace", crash)
    elif point == "after_file":
        monkeypatch.setattr(config_journal, "_write_journal", crash)
    else:  # the new journal is written, not yet renamed over the old one
        real = os.replace
        monkeypatch.setattr(os, "replace", lambda src, dst: (
            crash() if str(dst).endswith(".journal") else real(src, dst)))
    with pytest.raises(Crash):
        store.compact()
    monkeypatch.undo()
    assert config_journal.load(store.path)[0] == expected
    reopened = ConfigStore(store.path)
    assert reopened.to_dict() == expected
    _add(reopened, "after")  # and the journal takes appends again
    assert ConfigStore(store.path).get_serial() == store.get_serial() + 1


_CHILD = r"""
import sys, threading
from ganeti import config
from ganeti.config import ConfigStore
from ganeti.objects import NIC, Instance

config.COMPACT_MIN_BYTES = 2048        # compact every few commits
store = ConfigStore(sys.argv[1])
store._compact_at = 2048
master = store.get_master_node()
prefix = sys.argv[2]
out_lock = threading.Lock()

def adder(tid):
    for idx in range(100000):
        name = f"{prefix}-{tid}-{idx}"
        store.add_instance(Instance(name=name, primary_node=master, nics=[NIC()]))
        with out_lock:
            sys.stdout.write(name + "\n")
            sys.stdout.flush()

def compactor():
    while True:
        store.compact()

threads = [threading.Thread(target=adder, args=(t,), daemon=True) for t in range(3)]
threads.append(threading.Thread(target=compactor, daemon=True))
sys.stdout.write("started\n")  # before any name
sys.stdout.flush()
for t in threads:
    t.start()
threads[0].join()
"""


def test_kill_9_during_compaction_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A child commits from three threads and compacts in a loop; killed at random
    moments, every name it printed (after add_instance returned) is there."""
    path = tmp_path / "config.data"
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill points from seed {seed}")
    store = _new_store(path)
    for idx in range(50):  # some bulk, so a compaction takes a while
        _add(store, f"bulk{idx}")
    store.close()
    acked: set[str] = set()
    file_serials = set()
    for rnd in range(6):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), f"r{rnd}"],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline() == "started\n"
        deadline = time.monotonic() + rng.uniform(0.3, 1.5)
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(child.stdout,))
        reader.start()
        while time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(WAIT)
        reader.join(WAIT)
        acked.update(line.strip() for line in lines if line.endswith("\n"))
        loaded = ConfigStore(path)  # loads: no bad middle line, no gap
        names = {i.name for i in loaded.snapshot().get_all_instances_info().values()}
        missing = acked - names
        assert not missing, f"lost {len(missing)} acknowledged creates, e.g. {min(missing)}"
        file_serials.add(config_journal.file_serial(path))
    assert len(acked) > 0
    assert len(file_serials) > 1, "no compaction happened between the kills"
    with pytest.raises(errors.OpPrereqError):  # and the store still refuses duplicates
        _add(ConfigStore(path), next(iter(acked)))

