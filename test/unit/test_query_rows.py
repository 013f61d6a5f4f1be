"""Query rows built per field give what the row dicts gave (issue 20).

``Query`` now binds each field's getter once and reads lazy per-item rows
(instances, nodes, groups) instead of one dict of every field per item.  The
reference here is the way it was: the old query loop (one ``[status, value]``
per field through the field's getter) over the old rows, a dict per item
with every field (nodes and groups: the old builders, copied below).  The
configuration has several nodes (one offline, one drained, one silent), groups,
networks, instances with 0-2 disks and 1-3 NICs, export statistics.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.query_cluster import FakeRpc, build_store, source

from ganeti import gc_pause, luxi, query
from ganeti.backup.export_stats import ExportStats
from ganeti.config import ConfigStore
from ganeti.query_resources import group as qgroup
from ganeti.query_resources import instance as qinstance
from ganeti.query_resources import node as qnode
from ganeti.query_resources import register_all
from ganeti.query_resources.cluster import cluster_policy
from ganeti.server import luxi_server

SILENT = frozenset({"node5.example.com"})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConfigStore, Path]:
    tmp = tmp_path_factory.mktemp("cluster")
    store = build_store(tmp / "config.data", 45)
    stats = ExportStats(tmp / "export-stats.json")
    uuids = store.snapshot().get_instance_list()
    stats.record_success(uuids[0], "a", finished=1.7e9, duration=3.5, wire_bytes=10,
                         data_bytes=20, disk_bytes=30, target="node2.example.com")
    stats.record_failure(uuids[1], "b", when=1.7e9, error="boom")
    stats.record_success(uuids[2], "c", finished=1.7e9, duration=1.0, wire_bytes=1,
                         data_bytes=2, disk_bytes=3, target="remote")
    stats.record_failure(uuids[2], "c", when=1.8e9, error="again")
    register_all()
    return store, tmp


def _source(cluster: tuple[ConfigStore, Path]) -> tuple[Any, FakeRpc]:
    store, tmp = cluster
    rpc = FakeRpc(store, SILENT)
    return source(store, rpc, SimpleNamespace(data_dir=tmp)), rpc


# --- the reference: the way rows were built before ------------------------------------

def _old_value(fdef: query.FieldDef, src: Any, item: Any) -> list[Any]:
    try:
        value = fdef.getter(src, item)
    except (KeyError, IndexError, AttributeError):
        return [query.RS_UNAVAIL, None]
    if isinstance(value, type(query.UNAVAIL)):
        return [value.code, None]
    return [query.RS_NORMAL, value]


def _old_node_rows(cfg: Any) -> list[dict[str, Any]]:
    snap = cfg.snapshot()
    master = snap.get_master_node()
    groups = snap.get_all_nodegroups_info()
    cluster = snap.get_cluster_info()
    rows = []
    for node in sorted(snap.get_all_nodes_info().values(), key=lambda n: n.name):
        users = [snap.get_instance_info(u) for u in snap.get_node_instances(node.uuid)]
        primaries = [i.name for i in users if i is not None and i.primary_node == node.uuid]
        secondaries = [i.name for i in users
                       if i is not None and node.uuid in i.secondary_nodes]
        group = groups.get(node.group)
        rows.append({
            "name": node.name, "uuid": node.uuid, "pip": node.primary_ip,
            "sip": node.secondary_ip or node.primary_ip,
            "port": node.port or cluster.noded_port,
            "offline": node.offline, "drained": node.drained,
            "master_candidate": node.master_candidate,
            "master_capable": node.master_capable, "vm_capable": node.vm_capable,
            "master": node.uuid == master, "role": qnode._role(node, master),
            "group": group.name if group else node.group, "group.uuid": node.group,
            "pinst_cnt": len(primaries), "pinst_list": primaries,
            "sinst_cnt": len(secondaries), "sinst_list": secondaries,
            "powered": True, "custom_ndparams": dict(node.ndparams),
            "ndparams": cluster.fill_ndparams(node, group),
            "tags": sorted(node.tags), "backup_bwlimit": node.backup_bwlimit or 0,
            "serial_no": node.serial_no, "ctime": node.ctime, "mtime": node.mtime,
        })
    return rows


def _old_add_live_info(rows: list[dict[str, Any]], rpc: Any) -> None:
    online = [r["name"] for r in rows if not r["offline"]]
    answers = rpc.call_node_info(online) if rpc is not None and online else {}
    for row in rows:
        res = answers.get(row["name"])
        if row["offline"]:
            marker: Any = query.OFFLINE
        elif res is None or res.fail_msg or not isinstance(res.payload, dict):
            marker = query.UNAVAIL
        else:
            info = dict(res.payload)
            for name, (_, _, _, key) in qnode.LIVE_FIELDS.items():
                row[name] = info[key] if key else info["memory_total"] - info["memory_free"]
            continue
        row.update(dict.fromkeys(qnode.LIVE_FIELDS, marker))


def _old_group_rows(cfg: Any) -> list[dict[str, Any]]:
    snap = cfg.snapshot()
    nodes = snap.get_all_nodes_info().values()
    cluster = snap.get_cluster_info()
    rows = []
    for group in sorted(snap.get_all_nodegroups_info().values(), key=lambda g: g.name):
        members = {n.uuid: n.name for n in nodes if n.group == group.uuid}
        users = {u for m in members for u in snap.get_node_instances(m)}
        primaries = sorted(i.name for i in map(snap.get_instance_info, users)
                           if i is not None and i.primary_node in members)
        rows.append({
            "name": group.name, "uuid": group.uuid,
            "node_cnt": len(members), "node_list": sorted(members.values()),
            "pinst_cnt": len(primaries), "pinst_list": primaries,
            "alloc_policy": "preferred",
            "ndparams": {**cluster.ndparams, **group.ndparams},
            "custom_ndparams": dict(group.ndparams), "diskparams": {},
            "custom_diskparams": {}, "ipolicy": cluster_policy(cluster),
            "custom_ipolicy": {}, "tags": sorted(group.tags),
            "serial_no": group.serial_no, "ctime": group.ctime, "mtime": group.mtime,
        })
    return rows


def _old_fields(what: str) -> dict[str, query.FieldDef]:
    """The field table as it was: every getter reads the row dict."""
    if what == query.RESOURCE_INSTANCE:
        return {name: query.FieldDef(
            name, title, kind, doc, qinstance._IndexGetter(*qinstance.INDEXED_FIELDS[name])
            if name in qinstance.INDEXED_FIELDS else query.item_getter(name))
            for name, title, kind, doc in qinstance.FIELDS}
    table = {f[0]: f for f in (qnode.FIELDS if what == query.RESOURCE_NODE
                               else qgroup.FIELDS)}
    if what == query.RESOURCE_NODE:
        table.update({n: (n, t, k, d) for n, (t, k, d, _) in qnode.LIVE_FIELDS.items()})
    return {name: query.FieldDef(name, t, k, d, query.item_getter(name))
            for name, (_, t, k, d) in table.items()}


def _old_query(what: str, fields: list[str], qfilter: Any, src: Any) -> dict[str, Any]:
    table = _old_fields(what)
    res = query.Resource(what, table, lambda _s: ())
    flt = query.compile_filter(qfilter, res) if qfilter is not None else None
    needed = frozenset(n for n in fields if n in table) | query.filter_fields(qfilter)
    cfg, rpc = src.context.cfg, src.context.rpc
    if what == query.RESOURCE_INSTANCE:
        stats = ExportStats.for_paths(src.context.paths) \
            if needed & qinstance.EXPORT_FIELD_NAMES else None
        items = qinstance.instance_rows(cfg, rpc, live=bool(needed & qinstance.LIVE_FIELDS),
                                        stats=stats)
    elif what == query.RESOURCE_NODE:
        items = _old_node_rows(cfg)
        if needed & qnode.LIVE_FIELDS.keys():
            _old_add_live_info(items, rpc)
    else:
        items = _old_group_rows(cfg)
    defs = [table.get(n) for n in fields]
    data = [[_old_value(d, src, item) if d is not None else [query.RS_UNKNOWN, None]
             for d in defs]
            for item in items if flt is None or flt(src, item)]
    return {"fields": [d.to_dict() if d is not None else query._unknown_field(n)
                       for n, d in zip(fields, defs, strict=True)], "data": data}


# --- the same answers ---------------------------------------------------------------

INSTANCE_ALL = [*qinstance.FIELD_NAMES, "no-such-field"]
CASES: list[tuple[str, list[str], Any]] = [
    ("instance", INSTANCE_ALL, None),
    ("instance", ["name", "hypervisor", "os", "pnode", "status", "oper_ram"], None),
    ("instance", ["name", "status", "oper_state", "oper_vcpus"],
     ["|", ["=", "name", "web005"], ["=", "name", "inst001"], ["=", "name", "INST002"]]),
    ("instance", ["name", "be/maxmem"], ["&", [">", "be/maxmem", 260], ["=~", "name", "^inst0"]]),
    ("instance", ["name", "oper_state"], ["?", "oper_state"]),
    ("instance", ["name", "snodes"], ["=", "pnode", "node2"]),
    ("instance", ["name", "nic.links", "nic.bridges"], ["=[]", "nic.links", "ovs0"]),
    ("instance", ["name", "export.last_success", "export.failures", "export.last_error",
                  "ctime"], None),
    ("instance", ["name", "disk.size/1", "nic.name/1", "nic.mac/2", "disk.uuid/0"],
     ["!", ["=", "disk.count", 0]]),
    ("instance", ["name", "mtime"], [">", "mtime", 1_700_000_520]),
    ("instance", ["name"], ["=", "status", "ERROR_nodedown"]),
    ("node", [*qnode.FIELD_NAMES, *qnode.LIVE_FIELDS, "bogus"], None),
    ("node", ["name", "pinst_cnt", "sinst_list"], None),
    ("node", ["name", "mfree", "mnode"], ["=", "name", "node2"]),
    ("node", ["name", "role"], ["?", "offline"]),
    ("node", ["name", "dfree"], ["|", ["=", "name", "node5"], ["=", "name", "node3"]]),
    ("group", [*qgroup.FIELD_NAMES, "bogus"], None),
    ("group", ["name", "pinst_cnt"], [">", "pinst_cnt", 0]),
]


@pytest.mark.parametrize(("what", "fields", "qfilter"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_per_field_rows_answer_as_the_row_dicts_did(
        cluster: tuple[ConfigStore, Path], what: str, fields: list[str], qfilter: Any) -> None:
    src, _ = _source(cluster)
    expected = _old_query(what, fields, qfilter, src)
    got = query.query(what, fields, qfilter, src)
    assert got == expected
    assert luxi.encode_message(got) == luxi.encode_message(expected)


def test_the_cases_see_live_states_markers_and_exports(cluster: tuple[ConfigStore, Path]
                                                       ) -> None:
    """The comparison above is not between two empty answers."""
    src, _ = _source(cluster)
    rows = query.query("instance", ["status", "oper_ram", "export.failures"], None,
                       src)["data"]
    statuses = {row[0][1] for row in rows}
    assert {"running", "ADMIN_down", "ERROR_nodeoffline", "ERROR_nodedown"} <= statuses
    assert {row[1][0] for row in rows} >= {query.RS_NORMAL, query.RS_NODATA,
                                           query.RS_UNAVAIL}
    assert {row[2][1] for row in rows} == {0, 1}
    nodes = query.query("node", ["mfree", "pinst_cnt", "sinst_cnt"], None, src)["data"]
    assert {row[0][0] for row in nodes} == {query.RS_NORMAL, query.RS_OFFLINE,
                                            query.RS_UNAVAIL}
    assert all(row[1][1] > 0 for row in nodes[:3]) and any(row[2][1] for row in nodes)


def test_node_query_asks_only_the_nodes_its_filter_can_match(
        cluster: tuple[ConfigStore, Path]) -> None:
    src, rpc = _source(cluster)
    query.query("node", ["name", "mfree"], ["=", "name", "node2"], src)
    assert rpc.calls == [("node_info", ["node2.example.com"])]
    rpc.calls.clear()
    query.query("node", ["name", "pip"], None, src)
    assert rpc.calls == [], "no live field: no node asked"


def test_cheap_node_and_group_fields_never_look_at_instances(
        cluster: tuple[ConfigStore, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = _source(cluster)
    snap = cluster[0].snapshot()

    def refuse(*_args: Any) -> Any:
        raise AssertionError("instances looked at for a field that needs none")
    monkeypatch.setattr(type(snap), "get_instance_list", refuse)
    monkeypatch.setattr(type(snap), "get_node_instances", refuse)
    assert len(query.query("node", ["name", "role", "group", "ndparams"], None,
                           src)["data"]) == 5
    assert len(query.query("group", ["name", "node_list", "ndparams"], None,
                           src)["data"]) == 3


def test_lu_rows_keep_their_shape(cluster: tuple[ConfigStore, Path]) -> None:
    """node_rows (OpNodeQuery) with all fields is the old row; with some, those."""
    store, _ = cluster
    assert qnode.node_rows(store) == _old_node_rows(store)
    assert qgroup.group_rows(store) == _old_group_rows(store)
    assert [set(r) for r in qnode.node_rows(store, fields=["name", "pinst_cnt"])] == \
        [{"name", "pinst_cnt"}] * 5


# --- the collector stays paused while big answers are alive ---------------------------

def test_gc_pause_nests_across_threads_and_restores() -> None:
    assert gc.isenabled()
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with gc_pause.paused():
            inside.set()
            leave.wait(10)

    thread = threading.Thread(target=other)
    with gc_pause.paused():
        assert not gc.isenabled()
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled(), "the other thread still builds its answer"
    leave.set()
    thread.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_pause.paused():
            pass
        assert not gc.isenabled(), "a collector disabled before stays disabled"
    finally:
        gc.enable()


def test_luxi_server_pauses_the_collector_until_a_row_answer_is_sent(tmp_path: Path
                                                                      ) -> None:
    seen: dict[str, bool] = {}

    def handler(name: str) -> Any:
        def handle() -> list[str]:
            seen[name] = gc.isenabled()
            return [name] * 1000
        return handle
    methods = {"Rows": luxi_server.Method(handler("Rows"), (), rows=True),
               "Other": luxi_server.Method(handler("Other"), ())}
    server = luxi_server.LuxiServer(tmp_path / "sock", methods)
    server.start()
    try:
        with luxi.Client(str(tmp_path / "sock"), timeout=10) as cl:
            assert cl.call_method("Rows", []) == ["Rows"] * 1000
            assert cl.call_method("Other", []) == ["Other"] * 1000
    finally:
        server.stop()
    assert seen == {"Rows": False, "Other": True}
    assert gc.isenabled()
