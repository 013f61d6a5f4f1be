"""ConfigStore at scale: indexes, snapshots and group commit (ganeti.config).

test_config.py covers the file format, atomicity and the basic API; this file
covers what makes the store cheap at 10,000 instances without changing what
callers see.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ganeti import config, config_journal, errors
from ganeti.config import ConfigSnapshot, ConfigStore, make_initial_config
from ganeti.objects import NIC, BackupSchedule, ConfigData, Instance, Node, NodeGroup

WAIT = 120.0  # generous: other test runs share the two cores

# few names, with dots and case variants, so that renames collide and short names clash
NAMES = ["a", "A", "a.b", "a.B.c", "b", "b.a", "inst1.example.com", "INST1", "inst1"]
MACS = ["aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03", ""]


def _new_store(path: Path) -> ConfigStore:
    data = make_initial_config("cluster.example.com", "node1.example.com", "192.0.2.1",
                               "192.0.2.10", port=11811)
    return ConfigStore.initialize(path, data)


@pytest.fixture
def store(tmp_path: Path) -> ConfigStore:
    return _new_store(tmp_path / "config.data")


def _reference_expand(name: str, objs: list[Node] | list[Instance]) -> str | None:
    """The linear search the index replaced (exact name, uuid, unique short name)."""
    for obj in objs:
        if obj.name == name:
            return obj.uuid
    for obj in objs:
        if obj.uuid == name:
            return obj.uuid
    lowered = name.lower()
    matches = [o.uuid for o in objs
               if o.name.lower() == lowered or o.name.lower().startswith(lowered + ".")]
    return matches[0] if len(matches) == 1 else None


def _state(snap: ConfigSnapshot) -> dict[str, str]:
    """Everything a snapshot shows, serialised (to detect any later change of it)."""
    state = {u: i.to_json() for u, i in snap.get_all_instances_info().items()}
    state.update({u: n.to_json() for u, n in snap.get_all_nodes_info().items()})
    state["cluster"] = snap.get_cluster_info().to_json()
    state["serial"] = str(snap.get_serial())
    return state


def _index_of(snap: ConfigSnapshot) -> config._Index:
    data = ConfigData.model_construct(cluster=snap.get_cluster_info(),
                                      nodes=dict(snap.get_all_nodes_info()),
                                      instances=dict(snap.get_all_instances_info()))
    return config._Index.build(data)


def _check_consistent(store: ConfigStore, snaps: list[tuple[ConfigSnapshot, dict[str, str]]]
                      ) -> None:
    assert store._index == config._Index.build(store._data)
    # compaction writes from cached per-object fragments: the same bytes as pydantic's
    assert store._fragments.serialize(store._data) == config._serialize(store._data)
    # file + journal replay to the state in memory; so do the file + records_since
    live = json.loads(config._serialize(store._data))
    assert config_journal.load(store.path) == (live, store.get_serial())
    on_disk = json.loads(store.path.read_bytes())
    records = store.records_since(on_disk["serial_no"])
    assert records is not None
    for record in records:
        config_journal.apply_record(on_disk, record)
    assert on_disk == live
    now = store.snapshot()
    instances = list(now.get_all_instances_info().values())
    nodes = list(now.get_all_nodes_info().values())
    for name in NAMES:
        assert now.expand_instance_name(name) == _reference_expand(name, instances), name
        assert store.expand_instance_name(name) == _reference_expand(name, instances), name
        by_name = now.get_instance_info_by_name(name)
        assert (by_name.uuid if by_name else None) == next(
            (i.uuid for i in instances if i.name == name), None)
    for node in nodes:
        assert now.expand_node_name(node.name) == _reference_expand(node.name, nodes)
        assert now.get_node_instances(node.uuid) == [
            i.uuid for i in sorted(instances, key=lambda i: i.name)
            if node.uuid in i.all_nodes]
    assert set(now.used_macs()) == {n.mac for i in instances for n in i.nics if n.mac}
    assert set(store.used_macs()) == set(now.used_macs())
    for snap, state in snaps:  # older snapshots never change
        assert _state(snap) == state
        assert snap._index == _index_of(snap)


_OPS = st.lists(st.tuples(
    st.sampled_from(["add", "rename", "macs", "move", "state", "remove", "add_node",
                     "rename_node", "remove_node", "snapshot", "compact", "schedule",
                     "unschedule", "cluster", "group"]),
    st.integers(0, 20), st.integers(0, 20), st.lists(st.sampled_from(MACS), max_size=3)),
    max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS)
def test_indexes_follow_every_change(ops: list[tuple[str, int, int, list[str]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.data"
        store = _new_store(path)
        snaps: list[tuple[ConfigSnapshot, dict[str, str]]] = []
        for op, a, b, macs in ops:
            insts = store.get_instance_list()
            nodes = store.get_node_list()
            inst = store.get_instance_info(insts[a % len(insts)]) if insts else None
            node = store.get_node_info(nodes[a % len(nodes)])
            other = nodes[b % len(nodes)]
            assert node is not None
            serial = store.get_serial()
            try:
                if op == "add":
                    store.add_instance(Instance(
                        name=NAMES[a % len(NAMES)], primary_node=other,
                        nics=[NIC(mac=m) for m in macs]))
                elif op == "add_node":
                    store.add_node(Node(name=NAMES[a % len(NAMES)], primary_ip="192.0.2.5"))
                elif op == "rename_node":
                    node.name = NAMES[b % len(NAMES)]
                    store.update(node)
                elif op == "remove_node":
                    store.remove_node(node.uuid)
                elif op == "snapshot":
                    snap = store.snapshot()
                    snaps.append((snap, _state(snap)))
                elif op == "compact":
                    assert store.compact() == store.get_serial()
                    assert store.path.read_bytes() == config._serialize(store._data)
                elif op == "schedule":
                    store.put_backup_schedule(BackupSchedule(
                        name=f"s{a % 3}", all_instances=True, target_node=other,
                        cron=f"{b} * * * *"), create=a % 2 == 0)
                elif op == "unschedule":
                    store.remove_backup_schedule(f"s{a % 3}")
                elif op == "cluster":
                    cluster = store.get_cluster_info()
                    cluster.tags = [f"t{b}"]
                    store.update(cluster)
                elif op == "group":
                    store.add_nodegroup(NodeGroup(name=f"g{a}"))
                elif inst is None:
                    continue
                elif op == "rename":
                    inst.name = NAMES[b % len(NAMES)]
                    store.update(inst)
                elif op == "macs":
                    inst.nics = [NIC(mac=m) for m in macs]
                    store.update(inst)
                elif op == "move":
                    inst.primary_node = other
                    inst.secondary_nodes = [n for n in nodes[:b % 3] if n != other]
                    store.update(inst)
                elif op == "state":
                    store.set_instance_admin_state(inst.uuid, "up" if b % 2 else "down")
                else:
                    store.remove_instance(inst.uuid)
            except (errors.OpPrereqError, errors.ConfigurationError):
                assert store.get_serial() == serial  # refused: nothing changed
            _check_consistent(store, snaps)
        reloaded = ConfigStore(path)
        assert reloaded._index == store._index
        assert _state(reloaded.snapshot()) == _state(store.snapshot())


# --- snapshots ------------------------------------------------------------------------


def _populate(store: ConfigStore, count: int) -> list[str]:
    master = store.get_master_node()
    for i in range(count):
        store.add_instance(Instance(name=f"inst{i}.example.com", primary_node=master,
                                    nics=[NIC(mac=f"aa:00:00:00:00:{i:02x}")], tags=["t"]))
    return store.get_instance_list()


def test_snapshot_is_shared_until_a_change(store: ConfigStore) -> None:
    uuids = _populate(store, 3)
    snap = store.snapshot()
    assert store.snapshot() is snap  # nothing changed: the same object, no copy
    inst = snap.get_instance_info(uuids[0])
    assert inst is not None
    assert snap.get_instance_info(uuids[0]) is inst  # no copies handed out
    store.set_instance_admin_state(uuids[0], "up")
    after = store.snapshot()
    assert after is not snap and after.get_serial() == snap.get_serial() + 1
    assert snap.get_instance_info(uuids[0]) is inst and inst.admin_state == "down"
    changed = after.get_instance_info(uuids[0])
    assert changed is not None and changed.admin_state == "up"
    # objects the change did not touch are still shared between the two snapshots
    assert after.get_instance_info(uuids[1]) is snap.get_instance_info(uuids[1])
    store.remove_instance(uuids[2])
    assert snap.get_instance_info(uuids[2]) is not None
    assert store.snapshot().get_instance_info(uuids[2]) is None
    assert "aa:00:00:00:00:02" in snap.used_macs()
    assert "aa:00:00:00:00:02" not in store.snapshot().used_macs()


def test_snapshot_objects_cannot_be_changed(store: ConfigStore) -> None:
    uuids = _populate(store, 1)
    snap = store.snapshot()
    inst = snap.get_instance_info(uuids[0])
    assert inst is not None
    with pytest.raises(errors.ProgrammerError, match="edit a copy"):
        inst.name = "renamed"
    with pytest.raises(errors.ProgrammerError):
        inst.nics[0].mac = "aa:00:00:00:00:99"  # nested objects are frozen too
    with pytest.raises(errors.ProgrammerError):
        snap.get_cluster_info().cluster_name = "other"
    with pytest.raises(TypeError):
        snap.get_all_instances_info()[uuids[0]] = inst  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.used_macs().add("x")  # type: ignore[attr-defined]
    # the store's own reads are still copies the caller may edit and give back
    copy = store.get_instance_info(uuids[0])
    assert copy is not None and not copy.frozen and not copy.nics[0].frozen
    copy.name = "renamed"
    store.update(copy)
    assert store.snapshot().expand_instance_name("renamed") == uuids[0]
    assert inst.name == "inst0.example.com"


def test_store_never_edits_shared_objects(store: ConfigStore) -> None:
    """Every write method replaces objects; a shared (frozen) one edited in place raises."""
    uuids = _populate(store, 2)
    node = Node(name="node2", primary_ip="192.0.2.2")
    store.add_node(node)
    snap = store.snapshot()
    state = _state(snap)
    store.set_instance_admin_state(uuids[0], "up")
    inst = store.get_instance_info(uuids[1])
    assert inst is not None
    inst.secondary_nodes = [node.uuid]
    store.update(inst)
    cluster = store.get_cluster_info()
    cluster.tags = ["x"]
    store.update(cluster)
    assert _state(snap) == state
    assert snap.get_node_instances(node.uuid) == []
    assert store.snapshot().get_node_instances(node.uuid) == [uuids[1]]


# --- group commit ---------------------------------------------------------------------


class _GatedWrites:
    """Wraps config._append_journal: counts appends and holds the first one until
    released."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.count = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_from = 10**9  # writes numbered from this one raise OSError

    def __call__(self, journal: Any, records: list[Any]) -> Any:
        self.count += 1
        number = self.count
        if number == 1:
            self.entered.set()
            assert self.release.wait(WAIT)
        if number >= self.fail_from:
            raise OSError(28, "No space left on device")
        return self.real(journal, records)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[_GatedWrites]:
    gated = _GatedWrites(config._append_journal)
    monkeypatch.setattr(config, "_append_journal", gated)
    yield gated
    gated.release.set()


def _start_adds(store: ConfigStore, names: list[str], results: dict[str, Any]
                ) -> list[threading.Thread]:
    master = store.get_master_node()

    def add(name: str) -> None:
        try:
            store.add_instance(Instance(name=name, primary_node=master))
            results[name] = "ok"
        except errors.ConfigurationError as err:
            results[name] = err

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    return threads


def _wait_for_serial(store: ConfigStore, serial: int) -> None:
    done = threading.Event()
    for _ in range(int(WAIT * 100)):
        if store.get_serial() >= serial:
            return
        done.wait(0.01)
    raise AssertionError(f"serial {serial} never reached")


def test_changes_waiting_behind_a_write_share_the_next_one(
        store: ConfigStore, gate: _GatedWrites, tmp_path: Path) -> None:
    start = store.get_serial()
    notified: list[int] = []
    data_seen: list[dict[str, Any]] = []
    bare: list[tuple[dict[str, Any], int]] = []

    def recording(data: dict[str, Any], serial: int) -> None:
        notified.append(serial)
        data_seen.append(data)

    store.add_write_listener(recording)
    store.add_write_listener(lambda data, serial: bare.append((data, serial)),
                             with_data=False)
    results: dict[str, Any] = {}
    first = _start_adds(store, ["first"], results)
    assert gate.entered.wait(WAIT)
    others = _start_adds(store, [f"inst{i}" for i in range(10)], results)
    _wait_for_serial(store, start + 11)  # all ten are in memory, none durable yet
    assert results == {}
    gate.release.set()
    for thread in first + others:
        thread.join(WAIT)
    assert results == {name: "ok" for name in ["first"] + [f"inst{i}" for i in range(10)]}
    assert gate.count == 2  # one write for the first change, one for the ten behind it
    reloaded = ConfigStore(tmp_path / "config.data")
    assert reloaded.get_serial() == start + 11 and len(reloaded.get_instance_list()) == 11
    assert notified == [start + 1, start + 11]
    assert data_seen[-1]["serial_no"] == start + 11 and bare == [({}, start + 1),
                                                                 ({}, start + 11)]


def test_failed_group_write_fails_every_change_in_it(
        store: ConfigStore, gate: _GatedWrites, tmp_path: Path) -> None:
    start = store.get_serial()
    gate.fail_from = 2
    results: dict[str, Any] = {}
    first = _start_adds(store, ["first"], results)
    assert gate.entered.wait(WAIT)
    others = _start_adds(store, ["x1", "x2", "x3"], results)
    _wait_for_serial(store, start + 4)
    gate.release.set()
    for thread in first + others:
        thread.join(WAIT)
    assert results["first"] == "ok"
    for name in ("x1", "x2", "x3"):
        assert isinstance(results[name], errors.ConfigurationError)
        assert "No space left" in str(results[name])
    # memory is back to the file: the first change only, indexes rebuilt
    assert store.get_serial() == start + 1
    assert store.snapshot().expand_instance_name("x1") is None
    assert store._index == config._Index.build(store._data)
    assert ConfigStore(tmp_path / "config.data").get_serial() == start + 1
    gate.fail_from = 10**9
    store.add_instance(Instance(name="x1", primary_node=store.get_master_node()))
    assert ConfigStore(tmp_path / "config.data").get_serial() == start + 2


def test_concurrent_writers_lose_no_update(store: ConfigStore, tmp_path: Path) -> None:
    """Adds, admin-state changes and read-modify-update loops from many threads."""
    uuids = _populate(store, 4)
    threads_n, rounds = 12, 6
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []
    acked: list[str] = []
    counted: list[int] = []

    def worker(idx: int) -> None:
        try:
            barrier.wait(timeout=WAIT)
            for j in range(rounds):
                store.add_instance(Instance(name=f"w{idx}-{j}",
                                            primary_node=store.get_master_node(),
                                            nics=[NIC(mac=f"aa:00:00:01:{idx:02x}:{j:02x}")]))
                acked.append(f"w{idx}-{j}")
                while True:  # tag counter on a shared instance: stale copies are retried
                    inst = store.get_instance_info(uuids[idx % 4])
                    assert inst is not None
                    inst.tags = [*inst.tags, f"{idx}-{j}"]
                    try:
                        store.update(inst)
                        counted.append(idx)
                        break
                    except errors.ConfigurationError as err:
                        assert "modified concurrently" in str(err)
                store.set_instance_admin_state(uuids[(idx + 1) % 4], "up")
        except BaseException as err:  # collected and asserted below
            failures.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not failures
    reloaded = ConfigStore(tmp_path / "config.data").snapshot()
    for name in acked:
        assert reloaded.get_instance_info_by_name(name) is not None, name
    assert len(acked) == threads_n * rounds
    tags = [t for u in uuids for t in reloaded.get_instance_info(u).tags  # type: ignore[union-attr]
            if t != "t"]
    assert sorted(tags) == sorted(f"{i}-{j}" for i in range(threads_n) for j in range(rounds))
    assert len(reloaded.used_macs()) == 4 + threads_n * rounds
    assert store._index == config._Index.build(store._data)


def test_queries_leave_shared_objects_unchanged(store: ConfigStore) -> None:
    """Query rows over a snapshot never alias the stored objects' lists and dicts."""
    from ganeti.query_resources import group as qgroup
    from ganeti.query_resources import instance as qinstance
    from ganeti.query_resources import network as qnetwork
    from ganeti.query_resources import node as qnode

    node = Node(name="node2", primary_ip="192.0.2.2", tags=["n"], ndparams={"k": 1})
    store.add_node(node)
    store.add_instance(Instance(
        name="inst1", primary_node=store.get_master_node(), secondary_nodes=[node.uuid],
        nics=[NIC(mac="aa:00:00:00:00:01", nicparams={"mode": "bridged"})],
        beparams={"maxmem": 256}, hvparams={"x": 1}, tags=["t"]))
    snap = store.snapshot()
    state = _state(snap)
    rows = [*qinstance.instance_rows(store), *qnode.node_rows(store),
            *qgroup.group_rows(store), *qnetwork.network_rows(store)]
    assert rows and store.snapshot() is snap  # the queries took the same snapshot
    for row in rows:  # a consumer editing its rows must not edit the configuration
        for value in row.values():
            if isinstance(value, (list, dict)):
                value.clear()
    assert _state(store.snapshot()) == state
    assert store._fragments.serialize(store._data) == config._serialize(store._data)


def test_failing_mutator_keeps_changes_waiting_for_their_write(
        store: ConfigStore, gate: _GatedWrites, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in one change (not a refusal) never drops another thread's pending change."""
    start = store.get_serial()
    results: dict[str, Any] = {}
    first = _start_adds(store, ["first"], results)
    assert gate.entered.wait(WAIT)  # first is being written
    second = _start_adds(store, ["second"], results)
    _wait_for_serial(store, start + 2)  # second is in memory, waiting for its write

    def broken(inst: Instance, data: ConfigData) -> None:
        raise RuntimeError("bug in a mutator")

    monkeypatch.setattr(config, "_check_instance_nodes", broken)
    with pytest.raises(RuntimeError, match="bug in a mutator"):
        store.add_instance(Instance(name="third", primary_node=store.get_master_node()))
    monkeypatch.undo()
    assert store.get_serial() == start + 2
    assert store.snapshot().get_instance_info_by_name("second") is not None
    gate.release.set()
    for thread in first + second:
        thread.join(WAIT)
    assert results == {"first": "ok", "second": "ok"}
    on_disk = ConfigStore(tmp_path / "config.data").snapshot()
    assert on_disk.get_serial() == start + 2
    assert {i.name for i in on_disk.get_all_instances_info().values()} == {"first", "second"}
    assert store._index == config._Index.build(store._data)


def test_fragments_follow_table_order_when_a_uuid_comes_back(store: ConfigStore) -> None:
    """Removed and added again between two writes, an object moves to the end of its table
    (and of the file)."""
    uuids = _populate(store, 3)
    fragments = config._Fragments()
    before = store._data
    assert fragments.serialize(before) == config._serialize(before)
    back = before.instances[uuids[0]].model_copy(deep=True).freeze()
    moved = dict(before.instances)
    del moved[uuids[0]]
    moved[uuids[0]] = back
    after = before.model_copy(update={"instances": moved})
    assert list(after.instances)[-1] == uuids[0]
    assert fragments.serialize(after) == config._serialize(after)
