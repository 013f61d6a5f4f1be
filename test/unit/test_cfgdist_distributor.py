"""The background configuration distributor, against a fake upload RPC.

The fake reads the "config file" (here: a serial written into a text file) when
the upload runs, as the real encoder does, so the tests see which version each
node really got.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti.config_distribution import DUTY_FACTOR, ConfigDistributor
from ganeti.rpc.client import PreparedCall
from ganeti.rpc.result import RpcResult


class FakeRpc:
    """Uploads land in ``received[node]`` (serials, in order); nodes can fail or hang."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[str]] = {}
        self.ca_received: dict[str, int] = {}
        self.down: set[str] = set()
        self.gates: dict[str, threading.Event] = {}  # upload blocks until set
        self.started: dict[str, threading.Event] = {}
        self.calls: dict[str, int] = {}
        self.prepares: dict[str, int] = {}  # file name -> times encoded

    def prepare(self, name: str, *args: Any, timeout: float | None = None,
                **kwargs: Any) -> PreparedCall:
        assert name == "upload_file"
        (file_name,) = args
        path = Path(file_name)
        with self.lock:
            self.prepares[path.name] = self.prepares.get(path.name, 0) + 1
        # what is on disk when the upload is encoded, as RpcRunner's encoder reads it
        return PreparedCall(name, name, [path.name, path.read_text()], b"", 60.0)

    def run_prepared(self, prepared: PreparedCall, nodes: Iterable[str]
                     ) -> dict[str, RpcResult[Any]]:
        (node,) = list(nodes)
        file_name, data = prepared.args
        with self.lock:
            self.calls[node] = self.calls.get(node, 0) + 1
            started = self.started.setdefault(node, threading.Event())
            gate = self.gates.get(node)
        started.set()
        if gate is not None:
            gate.wait(30)
        with self.lock:
            if node in self.down:
                return {node: RpcResult(node, fail_msg=f"Connection refused by {node}")}
            if file_name == "ca.pem":
                self.ca_received[node] = self.ca_received.get(node, 0) + 1
            else:
                self.received.setdefault(node, []).append(data)
        return {node: RpcResult(node, data=None)}

    def last(self, node: str) -> int | None:
        with self.lock:
            got = self.received.get(node)
            return int(got[-1]) if got else None


class Files:
    def __init__(self, tmp: Path) -> None:
        self.conf = tmp / "config.data"
        self.ca = tmp / "ca.pem"
        self.ca.write_text("CA")
        self.serial = 0
        self.write()

    def write(self) -> int:
        self.serial += 1
        tmp = self.conf.with_suffix(".tmp")
        tmp.write_text(str(self.serial))
        tmp.replace(self.conf)
        return self.serial


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def rpc() -> FakeRpc:
    return FakeRpc()


@pytest.fixture
def make(rpc: FakeRpc, files: Files) -> Iterator:
    made: list[ConfigDistributor] = []

    def build(**kwargs: Any) -> ConfigDistributor:
        kwargs.setdefault("min_interval", 0.0)
        kwargs.setdefault("retry_min", 0.05)
        kwargs.setdefault("retry_max", 0.2)
        dist = ConfigDistributor(rpc, files.conf, files.ca, files.serial, **kwargs)
        made.append(dist)
        return dist
    yield build
    for rpc_gate in rpc.gates.values():
        rpc_gate.set()
    for dist in made:
        dist.stop(flush_timeout=0, join_timeout=5)


def wait_until(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def status_of(dist: ConfigDistributor, node: str):
    return next(s for s in dist.status() if s.node == node)


def test_candidates_get_the_file_at_start(make, rpc: FakeRpc, files: Files) -> None:
    dist = make()
    dist.set_candidates(["n1", "n2"])
    wait_until(lambda: rpc.last("n1") == 1 and rpc.last("n2") == 1)
    wait_until(lambda: all(s.lag == 0 for s in dist.status()))
    assert [s.node for s in dist.status()] == ["n1", "n2"]


def test_one_encoding_of_a_version_serves_every_candidate(make, rpc: FakeRpc,
                                                         files: Files) -> None:
    dist = make()
    dist.set_candidates(["n1", "n2", "n3"])
    wait_until(lambda: all(rpc.last(n) == 1 for n in ("n1", "n2", "n3")))
    assert rpc.prepares == {"config.data": 1}
    dist.config_written(files.write(), ["n1", "n2", "n3"])
    wait_until(lambda: all(rpc.last(n) == 2 for n in ("n1", "n2", "n3")))
    assert rpc.prepares == {"config.data": 2}


def test_a_slow_upload_spaces_the_next_ones(make, rpc: FakeRpc, files: Files) -> None:
    """Uploads of a big file (one took 0.3 s) are at least DUTY_FACTOR times that apart."""
    clock = [1000.0]
    dist = make(clock=lambda: clock[0])
    gate = rpc.gates["n1"] = threading.Event()
    rpc.started["n1"] = threading.Event()
    dist.set_candidates(["n1"])
    assert rpc.started["n1"].wait(10)
    clock[0] += 0.3  # the upload "takes" 0.3 s
    gate.set()
    wait_until(lambda: status_of(dist, "n1").lag == 0)
    del rpc.gates["n1"]
    dist.config_written(files.write(), ["n1"])
    time.sleep(0.3)
    assert rpc.last("n1") == 1  # DUTY_FACTOR x 0.3 s must pass first (on the fake clock)
    clock[0] += DUTY_FACTOR * 0.3 + 0.1
    dist.config_written(files.write(), ["n1"])  # wakes the worker; the clock says go
    wait_until(lambda: rpc.last("n1") == 3)


def test_writes_during_an_upload_coalesce_into_the_newest(make, rpc: FakeRpc,
                                                          files: Files) -> None:
    dist = make()
    dist.set_candidates(["n1"])
    wait_until(lambda: rpc.last("n1") == 1)
    gate = rpc.gates["n1"] = threading.Event()
    rpc.started["n1"] = threading.Event()
    dist.config_written(files.write(), ["n1"])  # serial 2: its upload hangs at the gate
    assert rpc.started["n1"].wait(10)
    for _ in range(20):  # 3..22 while the node is busy
        dist.config_written(files.write(), ["n1"])
    gate.set()
    wait_until(lambda: rpc.last("n1") == 22)
    time.sleep(0.2)
    # one upload for 2, then one (not twenty) for the newest version
    assert [int(s) for s in rpc.received["n1"]] == [1, 2, 22]
    assert status_of(dist, "n1").shipped_serial == 22


def test_min_interval_merges_a_burst(make, rpc: FakeRpc, files: Files) -> None:
    dist = make(min_interval=1.0)
    dist.set_candidates(["n1"])
    wait_until(lambda: rpc.last("n1") == 1)
    for _ in range(50):
        dist.config_written(files.write(), ["n1"])
    wait_until(lambda: rpc.last("n1") == 51)
    assert len(rpc.received["n1"]) <= 3
    assert rpc.received["n1"][-1] == "51"


def test_a_down_candidate_does_not_block_others_or_the_writer(make, rpc: FakeRpc,
                                                              files: Files) -> None:
    dist = make()
    rpc.gates["slow"] = threading.Event()  # like a 15 s connect timeout, but forever
    dist.set_candidates(["slow", "n1"])
    wait_until(lambda: rpc.last("n1") == 1)
    started = time.monotonic()
    for _ in range(10):
        dist.config_written(files.write(), ["slow", "n1"])
    # the writer's side never waited for the hanging upload ...
    assert time.monotonic() - started < 5
    # ... and the other candidate follows while "slow" hangs
    wait_until(lambda: rpc.last("n1") == 11)
    slow = status_of(dist, "slow")
    assert slow.uploading and slow.shipped_serial is None and slow.lag == 11


def test_failures_are_recorded_retried_and_caught_up(make, rpc: FakeRpc,
                                                     files: Files) -> None:
    dist = make()
    rpc.down.add("n2")
    dist.set_candidates(["n1", "n2"])
    wait_until(lambda: rpc.last("n1") == 1)
    for _ in range(4):
        dist.config_written(files.write(), ["n1", "n2"])
    wait_until(lambda: rpc.last("n1") == 5)
    wait_until(lambda: status_of(dist, "n2").consecutive_failures >= 2)  # retried
    down = status_of(dist, "n2")
    assert down.lag == 5 and down.shipped_serial is None
    assert "Connection refused by n2" in (down.last_error or "")
    assert down.last_success is None
    assert status_of(dist, "n1").last_error is None
    # it comes back: caught up without any new write
    with rpc.lock:
        rpc.down.discard("n2")
    wait_until(lambda: rpc.last("n2") == 5)
    wait_until(lambda: status_of(dist, "n2").lag == 0)
    back = status_of(dist, "n2")
    assert back.last_error is None and back.last_success is not None
    assert back.consecutive_failures == 0


def test_flush_waits_for_the_newest_file_and_the_ca(make, rpc: FakeRpc,
                                                    files: Files) -> None:
    dist = make(min_interval=3600.0)  # without the flush nothing would be sent again
    dist.set_candidates(["n1"])
    wait_until(lambda: rpc.last("n1") == 1)
    dist.config_written(files.write(), ["n1"])
    assert dist.flush(["n1"], timeout=20, with_ca=True) == {}
    assert rpc.last("n1") == 2
    assert rpc.ca_received["n1"] == 1
    # a node that is no candidate gets it once (node add) and is then forgotten
    assert dist.flush(["new"], timeout=20, with_ca=True) == {}
    assert rpc.last("new") == 2 and rpc.ca_received["new"] == 1
    wait_until(lambda: [s.node for s in dist.status()] == ["n1"])


def test_flush_reports_a_failing_node_without_waiting_for_the_timeout(
        make, rpc: FakeRpc, files: Files) -> None:
    dist = make()
    rpc.down.add("n2")
    dist.set_candidates(["n1", "n2"])
    started = time.monotonic()
    missed = dist.flush(["n1", "n2"], timeout=3600)
    assert time.monotonic() - started < 60
    assert list(missed) == ["n2"] and "Connection refused by n2" in missed["n2"]
    assert rpc.last("n1") == 1


def test_flush_times_out_on_a_hanging_node(make, rpc: FakeRpc, files: Files) -> None:
    dist = make()
    rpc.gates["n1"] = threading.Event()
    dist.set_candidates(["n1"])
    missed = dist.flush(["n1"], timeout=0.3)
    assert "not uploaded within 0.3s" in missed["n1"]
    rpc.gates["n1"].set()
    assert dist.flush(["n1"], timeout=20) == {}


def test_removed_candidates_are_no_longer_reported(make, rpc: FakeRpc,
                                                   files: Files) -> None:
    dist = make()
    dist.set_candidates(["n1", "n2"])
    wait_until(lambda: rpc.last("n1") == 1 and rpc.last("n2") == 1)
    dist.config_written(files.write(), ["n1"])
    wait_until(lambda: [s.node for s in dist.status()] == ["n1"])
    wait_until(lambda: rpc.last("n1") == 2)
    assert rpc.last("n2") == 1


def test_stop_flushes_then_ends_the_threads(make, rpc: FakeRpc, files: Files) -> None:
    dist = make(min_interval=3600.0)
    dist.set_candidates(["n1"])
    wait_until(lambda: rpc.last("n1") == 1)
    dist.config_written(files.write(), ["n1"])
    assert dist.stop(flush_timeout=20) == {}
    assert rpc.last("n1") == 2
    # this distributor's worker (other tests' masters in this process may still run theirs)
    assert not [t for t in threading.enumerate() if t.name == "config-dist-n1"]
    assert "stopped" in dist.flush(["n1"], timeout=1)["n1"]


def test_rpc_runner_prepares_an_upload_once_for_many_nodes(tmp_path: Path) -> None:
    import base64
    import json

    from ganeti import pathutils
    from ganeti.rpc.calltypes import Base64Text
    from ganeti.rpc.client import RpcRunner

    sent: list[tuple[str, list[str], bytes]] = []

    class Capturing(RpcRunner):
        def _send(self, procedure: str, nodes: Iterable[str], body: bytes, timeout: float,
                  call_name: str) -> dict[str, RpcResult[Any]]:
            sent.append((procedure, list(nodes), body))
            return {n: RpcResult(n, data=None) for n in nodes}

    paths = pathutils.Paths.for_root(tmp_path)
    paths.cluster_conf_file.parent.mkdir(parents=True)
    paths.cluster_conf_file.write_bytes(b'{"serial_no": 7}')
    runner = Capturing(lambda name: None, ssl.create_default_context, paths=paths,
                       max_workers=1)
    try:
        prepared = runner.prepare("upload_file", str(paths.cluster_conf_file))
        paths.cluster_conf_file.write_bytes(b'{"serial_no": 8}')  # read once, at prepare
        runner.run_prepared(prepared, ["n1"])
        runner.run_prepared(prepared, ["n2"])
    finally:
        runner.close()
    assert [(p, n) for p, n, _ in sent] == [("upload_file", ["n1"]), ("upload_file", ["n2"])]
    assert sent[0][2] is sent[1][2]
    name, data, _mode, _mtime = json.loads(sent[0][2])
    assert name == "/var/lib/ganeti/config.data"
    assert base64.b64decode(data) == b'{"serial_no": 7}'
    # the base64 text is embedded without json.dumps; the body is the same JSON
    assert type(prepared.args[1]) is Base64Text
    assert json.loads(sent[0][2]) == json.loads(json.dumps([str(a) if isinstance(a, str)
                                                            else a for a in prepared.args]))
