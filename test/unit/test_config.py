"""Tests for ganeti.config: the atomic, thread-safe configuration store."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ganeti import config, config_journal, constants, errors
from ganeti.config import ConfigStore, make_initial_config
from ganeti.objects import ConfigData, Disk, Instance, Node, NodeGroup

WAIT = 120.0  # generous: other test runs share the two cores


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    return tmp_path / "config.data"


@pytest.fixture
def store(cfg_path: Path) -> ConfigStore:
    data = make_initial_config("cluster.example.com", "node1.example.com", "192.0.2.1",
                               "192.0.2.10", port=11811)
    return ConfigStore.initialize(cfg_path, data)


def _add_node(store: ConfigStore, name: str, **fields: Any) -> Node:
    node = Node(name=name, primary_ip=fields.pop("primary_ip", "192.0.2.50"), **fields)
    store.add_node(node)
    return node


def _add_instance(store: ConfigStore, name: str, primary: str, **fields: Any) -> Instance:
    inst = Instance(name=name, primary_node=primary, **fields)
    store.add_instance(inst)
    return inst


def _file_state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# --- creation and loading -----------------------------------------------------------


def test_initialize_and_load(store: ConfigStore, cfg_path: Path) -> None:
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600
    loaded = ConfigStore(cfg_path)
    assert loaded.to_dict() == store.to_dict()
    cluster = loaded.get_cluster_info()
    assert cluster.cluster_name == "cluster.example.com"
    assert cluster.master_ip == "192.0.2.1"
    master = loaded.get_node_info(loaded.get_master_node())
    assert master is not None
    assert master.name == loaded.get_master_node_name() == "node1.example.com"
    assert master.master_candidate and master.port == 11811
    groups = loaded.get_all_nodegroups_info()
    assert [g.name for g in groups.values()] == [config.DEFAULT_NODEGROUP_NAME]
    assert master.group in groups
    assert loaded.get_cluster_name() == "cluster.example.com"
    assert json.loads(cfg_path.read_bytes())["version"] == constants.CONFIG_VERSION


def test_initialize_refuses_existing_file(store: ConfigStore, cfg_path: Path) -> None:
    before = _file_state(cfg_path)
    other = make_initial_config("other", "nodeX", None, "192.0.2.99")
    with pytest.raises(errors.ConfigurationError, match="already exists"):
        ConfigStore.initialize(cfg_path, other)
    assert _file_state(cfg_path) == before
    assert [p.name for p in cfg_path.parent.iterdir()] == [cfg_path.name]


def test_initialize_refuses_inconsistent_data(cfg_path: Path) -> None:
    data = make_initial_config("c", "n1", None, "192.0.2.10")
    data.cluster.master_node = "nobody"
    with pytest.raises(errors.ConfigurationError, match="master node nobody"):
        ConfigStore.initialize(cfg_path, data)
    assert not cfg_path.exists()


def test_make_initial_config_validates_input() -> None:
    with pytest.raises(errors.OpPrereqError, match="hypervisor"):
        make_initial_config("c", "n1", None, "1.1.1.1", enabled_hypervisors=["xen-hvm"])
    with pytest.raises(errors.OpPrereqError, match="disk template"):
        make_initial_config("c", "n1", None, "1.1.1.1", enabled_disk_templates=["drbd9"])
    data = make_initial_config("c", "n1", None, "1.1.1.1", shared_export_dir=True,
                               enabled_hypervisors=[constants.HT_FAKE])
    assert data.cluster.shared_export_dir
    assert data.cluster.enabled_hypervisors == [constants.HT_FAKE]
    assert data.verify() == []


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigurationError, match="does not exist"):
        ConfigStore(tmp_path / "nope")


def _corrupt_cases() -> list[tuple[str, Any, type[Exception], str]]:
    return [
        ("badjson", b'{"version": 1, "cluster": ', errors.ConfigurationError, "not valid JSON"),
        ("binary", b"\xff\xfe\x00", errors.ConfigurationError, "not valid JSON"),
        ("list", b"[1, 2]", errors.ConfigurationError, "must hold a JSON object"),
        ("noversion", lambda d: d.pop("version"), errors.ConfigurationError, "no 'version'"),
        ("strversion", lambda d: d.update(version="1"), errors.ConfigurationError,
         "must be an integer"),
        ("newversion", lambda d: d.update(version=constants.CONFIG_VERSION + 1),
         errors.ConfigVersionMismatch, f"has version {constants.CONFIG_VERSION + 1}"),
        ("wrongtype", lambda d: d.update(nodes="node1"), errors.ConfigurationError,
         "invalid value at 'nodes'"),
        ("unknownkey", lambda d: d["cluster"].update(colour="red"), errors.ConfigurationError,
         "unknown key 'cluster.colour'"),
        ("dangling", lambda d: d["cluster"].update(master_node="gone"),
         errors.ConfigurationError, "inconsistent"),
    ]


@pytest.mark.parametrize(("case", "damage", "exc_type", "message"), _corrupt_cases(),
                         ids=[c[0] for c in _corrupt_cases()])
def test_corrupt_or_wrong_version_file(store: ConfigStore, cfg_path: Path, case: str,
                                       damage: Any, exc_type: type[Exception],
                                       message: str) -> None:
    if isinstance(damage, bytes):
        cfg_path.write_bytes(damage)
    else:
        data = store.to_dict()
        damage(data)
        cfg_path.write_text(json.dumps(data))
    os.utime(cfg_path, ns=(1_000_000_000, 1_000_000_000))
    before = _file_state(cfg_path)
    with pytest.raises(exc_type) as exc:
        ConfigStore(cfg_path)
    assert message in str(exc.value)
    assert str(cfg_path) in str(exc.value)
    if exc_type is errors.ConfigurationError:
        assert not isinstance(exc.value, errors.ConfigVersionMismatch)
    # reload_if_changed of a running reader also refuses, keeping its good data
    serial = store.get_serial()
    with pytest.raises(exc_type):
        store.reload_if_changed()
    assert store.get_serial() == serial
    assert _file_state(cfg_path) == before


# --- writes ---------------------------------------------------------------------------


def test_writes_bump_serials(store: ConfigStore, cfg_path: Path) -> None:
    start = store.get_serial()
    node = _add_node(store, "node2.example.com")
    assert store.get_serial() == start + 1
    assert node.serial_no == 1
    assert node.group == next(iter(store.get_all_nodegroups_info()))
    stored = store.get_node_info(node.uuid)
    assert stored is not None and stored.serial_no == 1
    old_mtime = stored.mtime
    node.drained = True
    store.update(node)
    assert node.serial_no == 2
    stored = store.get_node_info(node.uuid)
    assert stored is not None
    assert stored.drained and stored.serial_no == 2 and stored.mtime >= old_mtime
    assert stored.ctime == node.ctime
    assert store.get_serial() == start + 2
    # the same copy can be updated again: update() refreshed its serial
    node.offline = True
    store.update(node)
    on_disk = ConfigStore(cfg_path)
    assert on_disk.get_serial() == start + 3
    disk_node = on_disk.get_node_info(node.uuid)
    assert disk_node is not None and disk_node.offline and disk_node.serial_no == 3
    assert config_journal.load(cfg_path)[1] == start + 3
    assert stat.S_IMODE(cfg_path.stat().st_mode) == 0o600


def test_update_cluster_and_nodegroup(store: ConfigStore) -> None:
    cluster = store.get_cluster_info()
    serial = cluster.serial_no
    cluster.compression_tools = [constants.IEC_NONE]
    store.update(cluster)
    assert store.get_cluster_info().compression_tools == [constants.IEC_NONE]
    assert store.get_cluster_info().serial_no == serial + 1
    group = NodeGroup(name="rack2")
    store.add_nodegroup(group)
    group.tags = ["r2"]
    store.update(group)
    stored = store.get_nodegroup_info(group.uuid)
    assert stored is not None and stored.tags == ["r2"] and stored.serial_no == 2
    with pytest.raises(errors.OpPrereqError) as exc:
        store.add_nodegroup(NodeGroup(name="rack2"))
    assert exc.value.ecode == errors.ECODE_EXISTS


def test_update_rejects_stale_and_unknown(store: ConfigStore) -> None:
    node = _add_node(store, "node2")
    copy_a = store.get_node_info(node.uuid)
    copy_b = store.get_node_info(node.uuid)
    assert copy_a is not None and copy_b is not None
    copy_a.drained = True
    store.update(copy_a)
    copy_b.offline = True
    serial = store.get_serial()
    with pytest.raises(errors.ConfigurationError, match="stale"):
        store.update(copy_b)
    assert store.get_serial() == serial
    current = store.get_node_info(node.uuid)
    assert current is not None and current.drained and not current.offline
    with pytest.raises(errors.ConfigurationError, match="not in the configuration"):
        store.update(Node(name="ghost", primary_ip="1.1.1.1"))
    with pytest.raises(errors.ConfigurationError, match="not in the configuration"):
        store.update(Instance(name="ghost", primary_node=node.uuid))
    with pytest.raises(errors.ProgrammerError):
        store.update(Disk(size=1, dev_type=constants.DT_FILE))  # type: ignore[arg-type]


def test_update_rejects_invalid_nested_value(store: ConfigStore) -> None:
    node = _add_node(store, "node2")
    inst = _add_instance(store, "inst1", node.uuid)
    inst.hvparams["bad"] = object()
    with pytest.raises(errors.ConfigurationError):
        store.update(inst)
    stored = store.get_instance_info(inst.uuid)
    assert stored is not None and stored.hvparams == {}


def test_reads_return_copies(store: ConfigStore) -> None:
    node = _add_node(store, "node2")
    inst = _add_instance(store, "inst1", node.uuid, tags=["a"])
    got = store.get_instance_info(inst.uuid)
    assert got is not None
    got.tags.append("mutated")
    got.name = "renamed"
    store.get_all_instances_info()[inst.uuid].tags.clear()
    store.get_cluster_info().tags.append("x")
    store.get_all_nodes_info()[node.uuid].name = "zzz"
    inst.tags.append("caller-side")  # the object given to add_instance is not shared either
    again = store.get_instance_info(inst.uuid)
    assert again is not None and again.name == "inst1" and again.tags == ["a"]
    assert store.get_cluster_info().tags == []
    assert store.get_node_names([node.uuid]) == ["node2"]
    data = store.to_dict()
    data["cluster"]["cluster_name"] = "changed"
    assert store.get_cluster_name() == "cluster.example.com"


def _journal_state(path: Path) -> bytes:
    journal = config_journal.journal_path(path)
    return journal.read_bytes() if journal.exists() else b""


def test_failed_journal_append_loses_nothing(store: ConfigStore, cfg_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit is refused, memory rolled back, file and journal as before."""
    node = _add_node(store, "node2")
    before = _file_state(cfg_path), _journal_state(cfg_path)
    serial = store.get_serial()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)  # the journal append's sync
    with pytest.raises(errors.ConfigurationError, match="No space left"):
        _add_instance(store, "inst1", node.uuid)
    assert (_file_state(cfg_path), _journal_state(cfg_path)) == before
    assert sorted(p.name for p in cfg_path.parent.iterdir()) == sorted(
        [cfg_path.name, config_journal.journal_path(cfg_path).name])
    # in-memory state was rolled back too
    assert store.get_serial() == serial
    assert store.get_instance_list() == []
    reloaded = ConfigStore(cfg_path)
    assert reloaded.get_serial() == serial and reloaded.get_instance_list() == []
    monkeypatch.undo()
    _add_instance(store, "inst1", node.uuid)
    assert ConfigStore(cfg_path).get_serial() == serial + 1


def test_failed_compaction_keeps_old_file_and_journal(store: ConfigStore, cfg_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    node = _add_node(store, "node2")
    _add_instance(store, "inst1", node.uuid)
    before = _file_state(cfg_path), _journal_state(cfg_path)
    serial = store.get_serial()
    for name, error in (("replace", OSError(28, "No space left on device")),
                        ("fsync", OSError(5, "Input/output error"))):
        def broken(*args: Any, _err: OSError = error) -> None:
            raise _err

        monkeypatch.setattr(os, name, broken)  # config.data is written through both
        with pytest.raises(errors.ConfigurationError, match=f"compact.*{error.strerror}"):
            store.compact()
        monkeypatch.undo()
        assert (_file_state(cfg_path), _journal_state(cfg_path)) == before
        assert sorted(p.name for p in cfg_path.parent.iterdir()) == sorted(
            [cfg_path.name, config_journal.journal_path(cfg_path).name])
    assert store.get_serial() == serial
    _add_instance(store, "inst2", node.uuid)  # the store goes on
    assert store.compact() == serial + 1
    assert _journal_state(cfg_path) == b""
    assert json.loads(cfg_path.read_bytes())["serial_no"] == serial + 1
    assert ConfigStore(cfg_path).to_dict() == store.to_dict()


# --- names ----------------------------------------------------------------------------


def test_names_are_unique(store: ConfigStore) -> None:
    node2 = _add_node(store, "node2")
    serial = store.get_serial()
    with pytest.raises(errors.OpPrereqError) as exc:
        _add_node(store, "node2", primary_ip="192.0.2.60")
    assert exc.value.ecode == errors.ECODE_EXISTS
    _add_instance(store, "inst1", node2.uuid)
    other = _add_instance(store, "inst2", node2.uuid)
    with pytest.raises(errors.OpPrereqError) as exc:
        _add_instance(store, "inst1", node2.uuid)
    assert exc.value.ecode == errors.ECODE_EXISTS
    other.name = "inst1"
    with pytest.raises(errors.OpPrereqError) as exc:
        store.update(other)
    assert exc.value.ecode == errors.ECODE_EXISTS
    renamed = store.get_node_info(node2.uuid)
    assert renamed is not None
    renamed.name = "node1.example.com"
    with pytest.raises(errors.OpPrereqError):
        store.update(renamed)
    assert store.get_serial() == serial + 2
    # an instance may share a name with a node: the namespaces are separate
    _add_instance(store, "node2", node2.uuid)


def test_add_instance_checks_nodes(store: ConfigStore) -> None:
    with pytest.raises(errors.OpPrereqError) as exc:
        _add_instance(store, "inst1", "no-such-node")
    assert exc.value.ecode == errors.ECODE_NOENT
    master = store.get_master_node()
    with pytest.raises(errors.OpPrereqError) as exc:
        _add_instance(store, "inst1", master, secondary_nodes=["ghost"])
    assert exc.value.ecode == errors.ECODE_NOENT
    with pytest.raises(errors.OpPrereqError):
        _add_node(store, "node3", group="no-such-group")
    assert store.get_instance_list() == []


def test_expand_names(store: ConfigStore) -> None:
    master = store.get_master_node()
    a = _add_node(store, "node2.a.example.com")
    b = _add_node(store, "node2.b.example.com")
    assert store.expand_node_name("node1.example.com") == master
    assert store.expand_node_name("node1") == master
    assert store.expand_node_name("NODE1") == master
    assert store.expand_node_name("node1.example") == master
    assert store.expand_node_name(master) == master
    assert store.expand_node_name("node2") is None  # ambiguous
    assert store.expand_node_name("node2.a") == a.uuid
    assert store.expand_node_name("node2.b.example.com") == b.uuid
    assert store.expand_node_name("node") is None  # not a whole name component
    assert store.expand_node_name("node1.ex") is None
    assert store.expand_node_name("nothing") is None
    inst = _add_instance(store, "web.example.com", master)
    _add_instance(store, "db.example.com", master)
    _add_instance(store, "db.example.org", master)
    assert store.expand_instance_name("web") == inst.uuid
    assert store.expand_instance_name("web.example.com") == inst.uuid
    assert store.expand_instance_name("db") is None
    assert store.expand_instance_name("we") is None


def test_queries(store: ConfigStore) -> None:
    master = store.get_master_node()
    b = _add_node(store, "b-node", offline=True)
    a = _add_node(store, "a-node", master_candidate=True)
    assert store.get_node_list() == [a.uuid, b.uuid, master]
    assert store.get_online_nodes() == [a.uuid, master]
    assert store.get_master_candidates() == [a.uuid, master]
    assert store.get_node_names([b.uuid, a.uuid]) == ["b-node", "a-node"]
    with pytest.raises(errors.ConfigurationError):
        store.get_node_names(["ghost"])
    got = store.get_node_info_by_name("b-node")
    assert got is not None and got.uuid == b.uuid
    assert store.get_node_info_by_name("ghost") is None
    assert store.get_node_info("ghost") is None
    assert store.get_instance_info("ghost") is None
    assert store.get_nodegroup_info("ghost") is None
    i2 = _add_instance(store, "i2", a.uuid)
    i1 = _add_instance(store, "i1", master, secondary_nodes=[a.uuid])
    assert store.get_instance_list() == [i1.uuid, i2.uuid]
    assert store.get_node_instances(a.uuid) == [i1.uuid, i2.uuid]
    got_inst = store.get_instance_info_by_name("i1")
    assert got_inst is not None and got_inst.all_nodes == [master, a.uuid]
    assert set(store.get_all_instances_info()) == {i1.uuid, i2.uuid}
    assert store.get_config_data().verify() == []


def test_set_instance_admin_state(store: ConfigStore) -> None:
    inst = _add_instance(store, "i1", store.get_master_node())
    store.set_instance_admin_state(inst.uuid, constants.ADMINST_UP)
    got = store.get_instance_info(inst.uuid)
    assert got is not None
    assert got.admin_state == constants.ADMINST_UP and got.serial_no == 2
    store.set_instance_admin_state(inst.uuid, constants.ADMINST_DOWN, constants.USER_SOURCE)
    got = store.get_instance_info(inst.uuid)
    assert got is not None and got.admin_state_source == constants.USER_SOURCE
    with pytest.raises(errors.ProgrammerError):
        store.set_instance_admin_state(inst.uuid, "sideways")
    with pytest.raises(errors.ConfigurationError):
        store.set_instance_admin_state("ghost", constants.ADMINST_UP)
    # the stale copy handed out before is refused now
    with pytest.raises(errors.ConfigurationError, match="stale"):
        store.update(inst)


# --- removal ----------------------------------------------------------------------------


def test_remove_node_with_instances_refused(store: ConfigStore, cfg_path: Path) -> None:
    master = store.get_master_node()
    node2 = _add_node(store, "node2")
    node3 = _add_node(store, "node3")
    primary = _add_instance(store, "inst1", node2.uuid)
    secondary = _add_instance(store, "inst2", master, secondary_nodes=[node3.uuid])
    for node in (node2, node3):
        with pytest.raises(errors.OpPrereqError) as exc:
            store.remove_node(node.uuid)
        assert exc.value.ecode == errors.ECODE_STATE
    with pytest.raises(errors.OpPrereqError) as exc:
        store.remove_node(master)
    assert exc.value.ecode == errors.ECODE_STATE
    with pytest.raises(errors.ConfigurationError):
        store.remove_node("ghost")
    store.remove_instance(primary.uuid)
    store.remove_instance(secondary.uuid)
    with pytest.raises(errors.ConfigurationError):
        store.remove_instance(primary.uuid)
    store.remove_node(node2.uuid)
    store.remove_node(node3.uuid)
    assert ConfigStore(cfg_path).get_node_list() == [master]


# --- concurrency --------------------------------------------------------------------------


def test_threads_adding_instances(store: ConfigStore, cfg_path: Path) -> None:
    master = store.get_master_node()
    start = store.get_serial()
    threads_n, per_thread = 8, 15
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []
    notified: list[int] = []
    store.add_write_listener(lambda data, serial: notified.append(serial))

    def worker(idx: int) -> None:
        try:
            barrier.wait(timeout=WAIT)
            for j in range(per_thread):
                _add_instance(store, f"inst-{idx}-{j}", master)
                store.get_all_instances_info()
        except BaseException as err:  # collected and asserted below
            failures.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not failures
    total = threads_n * per_thread
    assert store.get_serial() == start + total
    names = {i.name for i in store.get_all_instances_info().values()}
    assert names == {f"inst-{i}-{j}" for i in range(threads_n) for j in range(per_thread)}
    reloaded = ConfigStore(cfg_path)
    assert reloaded.get_serial() == start + total
    assert len(reloaded.get_instance_list()) == total
    # listeners see strictly increasing serials, ending with the last write
    assert notified == sorted(set(notified))
    assert notified[-1] == start + total


_READER = r"""
import os, sys
from ganeti import config, errors
path, stop = sys.argv[1], sys.argv[2]
seen, reads, bad = set(), 0, 0
while not os.path.exists(stop):
    try:
        serial = config.ConfigStore(path).get_serial()
    except errors.ConfigurationError as err:
        bad += 1
        print("BAD", err, flush=True)
        continue
    reads += 1
    if serial not in seen:
        seen.add(serial)
        print("SEEN", len(seen), flush=True)
print("DONE", reads, bad, flush=True)
"""


def test_reader_process_never_sees_partial_file(store: ConfigStore, cfg_path: Path,
                                                tmp_path: Path) -> None:
    # a file of several pages makes torn reads likely if writes were not atomic
    cluster = store.get_cluster_info()
    cluster.tags = [f"tag-{i:05d}-{'x' * 20}" for i in range(3000)]
    store.update(cluster)
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", _READER, str(cfg_path), str(stop)],
                            stdout=subprocess.PIPE, text=True)
    started, enough = threading.Event(), threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("SEEN"):
                started.set()
                if int(line.split()[1]) >= 10:
                    enough.set()
        started.set()

    pumper = threading.Thread(target=pump)
    pumper.start()
    try:
        assert started.wait(WAIT), "reader did not start"
        inst = _add_instance(store, "churn", store.get_master_node())
        writes = 0
        while (writes < 100 or not enough.is_set()) and writes < 5000:
            state = constants.ADMINST_UP if writes % 2 else constants.ADMINST_DOWN
            store.set_instance_admin_state(inst.uuid, state)
            writes += 1
    finally:
        stop.touch()
        proc.wait(WAIT)
        pumper.join(WAIT)
    assert proc.returncode == 0
    assert not [line for line in lines if line.startswith("BAD")], lines[:5]
    done = [line for line in lines if line.startswith("DONE")]
    assert done and int(done[0].split()[1]) > 0 and int(done[0].split()[2]) == 0
    assert enough.is_set(), "reader saw too few versions to prove anything"


def test_reload_if_changed(store: ConfigStore, cfg_path: Path) -> None:
    reader = ConfigStore(cfg_path)
    assert reader.reload_if_changed() is False
    node = _add_node(store, "node2")
    assert reader.get_node_info(node.uuid) is None
    assert reader.reload_if_changed() is True
    got = reader.get_node_info(node.uuid)
    assert got is not None and got.name == "node2"
    assert reader.get_serial() == store.get_serial()
    assert reader.reload_if_changed() is False
    # rewritten with identical content (new inode, same serial): no change reported
    cfg_path.write_bytes(cfg_path.read_bytes())
    assert reader.reload_if_changed() is False


# --- listeners ----------------------------------------------------------------------------


def test_write_listeners(store: ConfigStore, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[int, int, list[str]]] = []

    def failing(data: dict[str, Any], serial: int) -> None:
        raise RuntimeError("listener exploded")

    def recording(data: dict[str, Any], serial: int) -> None:
        calls.append((serial, data["serial_no"],
                      sorted(n["name"] for n in data["nodes"].values())))
        data["nodes"].clear()  # must not affect the store or other listeners

    store.add_write_listener(failing)
    store.add_write_listener(recording)
    with caplog.at_level(logging.ERROR, logger="ganeti.config"):
        _add_node(store, "node2")
    serial = store.get_serial()
    assert calls == [(serial, serial, ["node1.example.com", "node2"])]
    assert "listener exploded" in caplog.text
    assert store.get_node_info_by_name("node2") is not None
    assert ConfigStore(store.path).get_serial() == serial
    # a refused write notifies nobody
    with pytest.raises(errors.OpPrereqError):
        _add_node(store, "node2")
    assert len(calls) == 1
    _add_node(store, "node3")
    assert [c[0] for c in calls] == [serial, serial + 1]


def test_listener_may_read_the_store(store: ConfigStore) -> None:
    seen: list[int] = []
    store.add_write_listener(lambda data, serial: seen.append(store.get_serial()))
    _add_node(store, "node2")
    assert seen == [store.get_serial()]


def test_roundtrip_of_store_dict(store: ConfigStore) -> None:
    _add_instance(store, "i1", store.get_master_node(),
                  disks=[Disk(size=5, dev_type=constants.DT_FILE, logical_id=["file", "/d"])])
    data = ConfigData.from_dict(store.to_dict())
    assert data == store.get_config_data()
