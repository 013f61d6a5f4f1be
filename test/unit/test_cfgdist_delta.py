"""Delta shipping: the distributor against the real node procedures, in one process.

The master side is a small journalled store (a config file plus records, as
``ganeti.config_journal`` defines them) and the real ``RpcRunner`` whose
transport runs the node daemon's procedures (``upload_file``,
``append_config_records``) on each node's own root.  What a candidate holds is
always checked with ``config_journal.load`` against the master's file + journal.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import config_journal, errors, pathutils
from ganeti.backend import NodeContext, RpcFail, config_records, files
from ganeti.config import make_initial_config
from ganeti.config_distribution import ConfigDistributor
from ganeti.objects import Node
from ganeti.rpc import encoders
from ganeti.rpc.client import RpcRunner
from ganeti.rpc.result import RpcResult
from ganeti.server import noded


def _record(serial: int, ops: list[Any], ts: float) -> config_journal.Record:
    """A record as the journal module builds it (through its own encoding)."""
    (rec,) = config_journal.decode_records(config_journal.encode_record(serial, ops, ts),
                                           "test")
    return rec


class Master:
    """A journalled master store: config.data (compacted) + records after it."""

    def __init__(self, paths: pathutils.Paths) -> None:
        self.paths = paths
        self.path = paths.cluster_conf_file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = make_initial_config("cluster.local", "node1", None, "127.0.0.1")
        self.path.write_text(data.to_json())
        self.data, self.serial = config_journal.load(self.path)
        self.window_start = self.serial  # records after this one are kept
        self.records: list[config_journal.Record] = []
        self.lock = threading.Lock()

    def commit(self, ops: list[Any]) -> int:
        with self.lock:
            rec = _record(self.serial + 1, ops, time.time())
            config_journal.append(self.path, [rec])
            config_journal.apply_record(self.data, rec)
            self.serial = rec.serial
            self.records.append(rec)
            return rec.serial

    def add_node(self, name: str) -> int:
        node = Node(name=name, primary_ip="127.0.0.99")
        return self.commit([["set", "nodes", node.uuid, json.loads(node.to_json())]])

    def tag(self, tag: str) -> int:
        cluster = dict(self.data["cluster"])
        cluster["tags"] = [*cluster.get("tags", []), tag]
        return self.commit([["set", "cluster", None, cluster]])

    def remove_node(self, name: str) -> int:
        uuid = next(u for u, n in self.data["nodes"].items() if n["name"] == name)
        return self.commit([["del", "nodes", uuid]])

    def compact(self, forget: bool = True) -> None:
        """Fold the journal into config.data; ``forget``: drop the records too."""
        with self.lock:
            config_journal.compact(self.path, self.data, self.serial)
            if forget:
                self.window_start = self.serial
                self.records = []

    def records_since(self, serial: int) -> list[config_journal.Record] | None:
        with self.lock:
            if serial < self.window_start:
                return None
            return [r for r in self.records if r.serial > serial]


class InProcessRpc(RpcRunner):
    """The real runner (encoders, prepared bodies); the transport runs the node
    daemon's procedures on each node's root.  Nodes in ``down`` refuse connections."""

    def __init__(self, master_paths: pathutils.Paths, roots: dict[str, NodeContext]) -> None:
        super().__init__(lambda name: None, ssl.create_default_context, paths=master_paths,
                         max_workers=1)
        self.roots = roots
        self.down: set[str] = set()
        self.sent: list[tuple[str, str, int]] = []  # (procedure, node, body bytes)
        self.lock = threading.Lock()

    def _send(self, procedure: str, nodes: Iterable[str], body: bytes, timeout: float,
              call_name: str) -> dict[str, RpcResult[Any]]:
        out: dict[str, RpcResult[Any]] = {}
        for node in nodes:
            with self.lock:
                if node in self.down:
                    out[node] = RpcResult(node, fail_msg=f"Connection refused by {node}")
                    continue
                self.sent.append((procedure, node, len(body)))
            try:
                data = noded.TABLE[procedure].run(self.roots[node], json.loads(body))
                out[node] = RpcResult(node, data=json.loads(json.dumps(data)))
            except (RpcFail, errors.GenericError) as err:
                out[node] = RpcResult(node, fail_msg=str(err))
        return out


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.master_paths = pathutils.Paths.for_root(tmp / "node1")
        self.master = Master(self.master_paths)
        self.roots = {n: NodeContext(paths=pathutils.Paths.for_root(tmp / n))
                      for n in ("node2", "node3")}
        self.rpc = InProcessRpc(self.master_paths, self.roots)
        self.made: list[ConfigDistributor] = []

    def distributor(self, **kwargs: Any) -> ConfigDistributor:
        kwargs.setdefault("min_interval", 0.0)
        kwargs.setdefault("retry_min", 0.05)
        kwargs.setdefault("retry_max", 0.2)
        kwargs.setdefault("records_since", self.master.records_since)
        dist = ConfigDistributor(self.rpc, self.master.path, self.master_paths.cluster_ca_file,
                                 self.master.serial, **kwargs)
        self.made.append(dist)
        return dist

    def node_conf(self, node: str) -> Path:
        return self.roots[node].paths.cluster_conf_file

    def node_copy(self, node: str) -> tuple[dict[str, Any], int]:
        return config_journal.load(self.node_conf(node))

    def calls(self, node: str, procedure: str) -> int:
        with self.rpc.lock:
            return sum(1 for p, n, _ in self.rpc.sent if n == node and p == procedure)

    def assert_same(self, node: str) -> None:
        assert self.node_copy(node) == config_journal.load(self.master.path)


@pytest.fixture
def cl(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path)
    yield cluster
    for dist in cluster.made:
        dist.stop(flush_timeout=0, join_timeout=5)
    cluster.rpc.close()


def _status(dist: ConfigDistributor, node: str):
    return next(s for s in dist.status() if s.node == node)


def _write_and_flush(cl: Cluster, dist: ConfigDistributor, serial: int,
                     nodes: tuple[str, ...] = ("node2", "node3")) -> None:
    dist.config_written(serial, list(nodes))
    assert dist.flush(list(nodes), timeout=30) == {}


def test_whole_file_first_then_one_delta_per_shipment(cl: Cluster) -> None:
    dist = cl.distributor()
    dist.set_candidates(["node2", "node3"])
    assert dist.flush(["node2", "node3"], timeout=30) == {}
    for node in ("node2", "node3"):
        assert cl.calls(node, "upload_file") == 1  # nothing known of the node yet
        cl.assert_same(node)
    big = cl.rpc.sent[-1][2]
    for idx in range(5):
        _write_and_flush(cl, dist, cl.master.add_node(f"new{idx}"))
    _write_and_flush(cl, dist, cl.master.tag("t1"))
    _write_and_flush(cl, dist, cl.master.remove_node("new2"))
    for node in ("node2", "node3"):
        assert cl.calls(node, "upload_file") == 1
        assert cl.calls(node, "append_config_records") == 7
        cl.assert_same(node)
        # the records went to the node's journal; its config.data is still the first file
        assert json.loads(cl.node_conf(node).read_text())["serial_no"] == 1
        state = _status(dist, node)
        assert state.shipped_serial == cl.master.serial and state.lag == 0
        assert (state.full_uploads, state.delta_uploads) == (1, 7)
    deltas = [b for p, _n, b in cl.rpc.sent if p == "append_config_records"]
    assert max(deltas) < big  # a node's record, not the file


def test_writes_while_a_node_is_busy_go_as_one_delta(cl: Cluster) -> None:
    dist = cl.distributor()
    dist.set_candidates(["node2"])
    assert dist.flush(["node2"], timeout=30) == {}
    with cl.rpc.lock:  # the worker's first send waits for this lock: 20 commits meanwhile
        for idx in range(20):
            dist.config_written(cl.master.add_node(f"n{idx}"), ["node2"])
    assert dist.flush(["node2"], timeout=30) == {}
    # the one that waited, then one with all the others
    assert cl.calls("node2", "append_config_records") <= 2
    cl.assert_same("node2")


def test_a_node_at_another_serial_refuses_and_gets_the_whole_file(cl: Cluster) -> None:
    dist = cl.distributor()
    dist.set_candidates(["node2"])
    _write_and_flush(cl, dist, cl.master.add_node("a"), ("node2",))
    # the node's copy changes behind this master's back (another master, a restore)
    _data, serial = cl.node_copy("node2")
    config_journal.append(cl.node_conf("node2"), [_record(serial + 1, [], time.time())])
    _write_and_flush(cl, dist, cl.master.add_node("b"), ("node2",))
    assert cl.calls("node2", "upload_file") == 2
    cl.assert_same("node2")
    # the stale record is gone: the file (serial 1 on this master) and the master's records
    node_journal = config_journal.journal_path(cl.node_conf("node2"))
    assert node_journal.read_bytes() == config_journal.journal_path(cl.master.path).read_bytes()
    assert _status(dist, "node2").lag == 0


def test_records_gone_or_too_big_mean_the_whole_file(cl: Cluster) -> None:
    dist = cl.distributor(max_delta_bytes=4096)
    dist.set_candidates(["node2"])
    _write_and_flush(cl, dist, cl.master.add_node("a"), ("node2",))
    assert cl.calls("node2", "append_config_records") == 1
    # a compaction dropped the records the node would need
    cl.master.add_node("b")
    cl.master.compact(forget=True)
    _write_and_flush(cl, dist, cl.master.serial, ("node2",))
    assert cl.calls("node2", "upload_file") == 2
    cl.assert_same("node2")
    # more records than max_delta_bytes: the file (compacted, older than the newest
    # write), then the records after the file's serial in the same attempt
    cl.master.compact(forget=False)
    serial = 0
    for idx in range(12):
        serial = cl.master.add_node(f"bulk{idx}")
    dist.config_written(serial, ["node2"])
    assert dist.flush(["node2"], timeout=30) == {}
    assert cl.calls("node2", "upload_file") == 3
    cl.assert_same("node2")
    assert _status(dist, "node2").shipped_serial == serial


def test_a_down_candidate_catches_up_with_a_delta(cl: Cluster) -> None:
    dist = cl.distributor()
    dist.set_candidates(["node2", "node3"])
    assert dist.flush(["node2", "node3"], timeout=30) == {}
    with cl.rpc.lock:
        cl.rpc.down.add("node3")
    before = cl.node_copy("node3")[1]
    serial = 0
    for idx in range(10):
        serial = cl.master.add_node(f"x{idx}")
        dist.config_written(serial, ["node2", "node3"])
    assert dist.flush(["node2"], timeout=30) == {}
    deadline = time.monotonic() + 30
    while _status(dist, "node3").consecutive_failures < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert cl.node_copy("node3")[1] == before
    assert _status(dist, "node3").lag == 10
    with cl.rpc.lock:
        cl.rpc.down.discard("node3")
    deadline = time.monotonic() + 30
    while _status(dist, "node3").lag:
        assert time.monotonic() < deadline, "node3 did not catch up"
        time.sleep(0.02)
    assert cl.calls("node3", "upload_file") == 1  # only the first one
    assert cl.calls("node3", "append_config_records") == 1
    cl.assert_same("node3")


def test_a_fresh_distributor_ships_the_whole_file(cl: Cluster) -> None:
    """After a master restart nothing is known of the candidates."""
    first = cl.distributor()
    first.set_candidates(["node2"])
    _write_and_flush(cl, first, cl.master.add_node("a"), ("node2",))
    first.stop(flush_timeout=5)
    second = cl.distributor()
    _write_and_flush(cl, second, cl.master.add_node("b"), ("node2",))
    assert cl.calls("node2", "upload_file") == 2
    cl.assert_same("node2")


# --- the node side ------------------------------------------------------------------

@pytest.fixture
def node(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path / "node"))


def _upload_config(node: NodeContext, master: Master) -> int | None:
    return files.upload_file(node, *encoders.upload_file(master.paths, master.path))


def _lines(*records: config_journal.Record) -> str:
    return b"".join(config_journal.encode_record(r.serial, r.ops, r.ts)
                    for r in records).decode()


def test_node_refuses_records_that_do_not_follow_its_serial(tmp_path: Path,
                                                            node: NodeContext) -> None:
    master = Master(pathutils.Paths.for_root(tmp_path / "master"))
    with pytest.raises(errors.ConfigSerialMismatch,
                       match="base serial mismatch: node has no readable configuration,"
                             " records start at 2"):
        files.append_config_records(node, 1, _lines(_record(2, [], 1.0)))
    assert _upload_config(node, master) == 1
    master.add_node("a")
    master.add_node("b")
    recs = master.records_since(1) or []
    with pytest.raises(errors.ConfigSerialMismatch,
                       match="base serial mismatch: node has 1, records start at 3"):
        files.append_config_records(node, 2, _lines(recs[1]))
    with pytest.raises(errors.ConfigSerialMismatch, match="node has 1, records start at 3"):
        files.append_config_records(node, 1, _lines(recs[1]))  # base right, records not
    # nothing was appended by the refusals
    assert config_journal.load(node.paths.cluster_conf_file)[1] == 1
    assert files.append_config_records(node, 1, _lines(*recs)) == 3
    assert config_journal.load(node.paths.cluster_conf_file) == config_journal.load(
        master.path)


def test_node_refuses_damaged_records(tmp_path: Path, node: NodeContext) -> None:
    master = Master(pathutils.Paths.for_root(tmp_path / "master"))
    _upload_config(node, master)
    master.add_node("a")
    master.add_node("b")
    text = _lines(*(master.records_since(1) or []))
    first, second = text.splitlines()
    damaged = first + "\n" + second.replace("127.0.0.99", "127.0.0.98") + "\n"
    with pytest.raises(RpcFail, match="Invalid configuration records"):
        files.append_config_records(node, 1, damaged)
    assert config_journal.load(node.paths.cluster_conf_file)[1] == 1


def test_node_compacts_its_journal_and_a_whole_file_empties_it(
        tmp_path: Path, node: NodeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    master = Master(pathutils.Paths.for_root(tmp_path / "master"))
    _upload_config(node, master)
    monkeypatch.setattr(config_records, "should_compact",
                        lambda journal_bytes, data_bytes: journal_bytes > 3000)
    conf = node.paths.cluster_conf_file
    journal = config_journal.journal_path(conf)
    base = 1
    compacted = False
    for idx in range(8):
        master.add_node(f"c{idx}")
        recs = master.records_since(base) or []
        base = files.append_config_records(node, base, _lines(*recs))
        file_serial = json.loads(conf.read_text())["serial_no"]
        compacted = compacted or file_serial > 1
        assert config_journal.load(conf) == config_journal.load(master.path)
    assert compacted, "the node never folded its journal into config.data"
    assert journal.stat().st_size <= 3000 + 2000
    # a whole file replaces file and journal: the stale records are gone
    master.compact()
    assert _upload_config(node, master) == master.serial
    assert not journal.exists()
    assert config_journal.load(conf) == config_journal.load(master.path)


def test_a_file_older_than_the_write_without_its_records_is_an_error(cl: Cluster) -> None:
    """Not a loop of whole files: the node holds the file's serial, the lag is reported
    and retried with the backoff."""
    dist = cl.distributor(retry_min=0.5, retry_max=0.5)
    serial = cl.master.add_node("a")
    cl.master.window_start = 10**6  # the store kept none of its records
    dist.config_written(serial, ["node2"])
    missed = dist.flush(["node2"], timeout=30)
    assert "the file is at serial 1, and the records after it up to 2 are not kept" in \
        missed["node2"]
    time.sleep(0.3)
    assert cl.calls("node2", "upload_file") == 1
    assert _status(dist, "node2").shipped_serial == 1
    cl.master.compact()  # the file has everything now
    assert dist.flush(["node2"], timeout=30) == {}
    cl.assert_same("node2")


def test_a_slow_whole_file_does_not_hold_back_the_deltas_after_it(
        cl: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole files are spaced DUTY_FACTOR times their duration; deltas only by
    min_interval (before, a candidate lagged ten times its first upload)."""
    clock = [1000.0]
    send = cl.rpc._send

    def slow_files(procedure: str, nodes: Iterable[str], body: bytes, timeout: float,
                   call_name: str) -> dict[str, RpcResult[Any]]:
        if procedure == "upload_file":
            clock[0] += 1.0  # a whole file "takes" 1 s (on the fake clock)
        return send(procedure, nodes, body, timeout, call_name)

    monkeypatch.setattr(cl.rpc, "_send", slow_files)
    dist = cl.distributor(clock=lambda: clock[0])
    dist.set_candidates(["node2"])
    assert dist.flush(["node2"], timeout=30) == {}
    dist.config_written(cl.master.add_node("a"), ["node2"])
    deadline = time.monotonic() + 20  # the fake clock stands still: DUTY_FACTOR x 1 s never
    while _status(dist, "node2").lag:
        assert time.monotonic() < deadline, "the delta waited for the whole file's spacing"
        time.sleep(0.02)
    assert cl.calls("node2", "append_config_records") == 1
    cl.assert_same("node2")
