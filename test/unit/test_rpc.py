"""RPC client, result type and call table against in-process node servers."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ganeti import constants, crypto, errors, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.rpc import defs
from ganeti.rpc.client import RpcRunner, default_ssl_context_factory, static_resolver
from ganeti.rpc.result import OFFLINE_MSG, RpcResult
from ganeti.server import noded

WAIT = 60.0  # generous: other test suites share the two cores


@dataclass
class Cluster:
    ca: tuple[str, str]
    master: pathutils.Paths
    node_paths: pathutils.Paths
    servers: list[noded.NodeRpcServer] = field(default_factory=list)


class CountingServer(noded.NodeRpcServer):
    """Counts TCP connections so tests can see reuse and non-contact."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.connections = 0
        self.connection_done = threading.Event()
        super().__init__(*args, **kwargs)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        super().process_request_thread(request, client_address)
        self.connection_done.set()

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().finish_request(request, client_address)


def _install_cert(paths: pathutils.Paths, ca: tuple[str, str], name: str) -> None:
    cert, key = crypto.generate_node_certificate(ca[0], ca[1], name, ["127.0.0.1"], 5)
    crypto.write_pem_pair(paths.node_cert_file, cert, key)
    paths.cluster_ca_file.write_text(ca[0])


@pytest.fixture(scope="module")
def cluster_ca() -> tuple[str, str]:
    return crypto.generate_cluster_ca("unit.example.com", 5)


@pytest.fixture
def cluster(tmp_path: Path, cluster_ca: tuple[str, str]) -> Iterator[Cluster]:
    master = pathutils.Paths.for_root(tmp_path / "master")
    node = pathutils.Paths.for_root(tmp_path / "node")
    _install_cert(master, cluster_ca, "master")
    _install_cert(node, cluster_ca, "node")
    result = Cluster(cluster_ca, master, node)
    yield result
    for server in result.servers:
        server.shutdown()
        server.server_close()


def _start(cluster: Cluster, procedures: dict[str, Callable[..., Any]] | None = None,
           port: int = 0, **kwargs: Any) -> CountingServer:
    ctx = crypto.server_ssl_context(cluster.node_paths.node_cert_file,
                                    cluster.node_paths.cluster_ca_file)
    server = CountingServer(("127.0.0.1", port), ctx, NodeContext(paths=cluster.node_paths),
                            procedures if procedures is not None else noded.PROCEDURES,
                            **kwargs)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    cluster.servers.append(server)
    return server


def _runner(cluster: Cluster, nodes: dict[str, tuple[str, int, bool]]) -> RpcRunner:
    return RpcRunner(static_resolver(nodes), default_ssl_context_factory(cluster.master),
                     paths=cluster.master)


# --- RpcResult ------------------------------------------------------------------------

def test_result_success() -> None:
    res = RpcResult("n1", data={"a": 1}, call="version")
    assert res.payload == {"a": 1} and res.fail_msg is None and not res.offline
    res.raise_on_failure("never")
    assert res.warn(pytest.fail) is False


def test_result_failure_raises_with_node_and_message() -> None:
    res = RpcResult("n1", fail_msg="disk on fire", call="x")
    assert res.payload is None
    with pytest.raises(errors.OpExecError, match=r"^Cannot export: node n1: disk on fire$"):
        res.raise_on_failure("Cannot export")
    with pytest.raises(errors.OpPrereqError) as info:
        res.raise_on_failure("Check", prereq=True, ecode=errors.ECODE_STATE)
    assert info.value.ecode == errors.ECODE_STATE
    warnings: list[str] = []
    assert res.warn(warnings.append, "Hooks") is True
    assert warnings == ["Hooks: node n1: disk on fire"]


def test_result_offline() -> None:
    res = RpcResult("n2", offline=True)
    assert res.offline and res.fail_msg == OFFLINE_MSG
    with pytest.raises(errors.OpExecError, match=r"n2.*offline"):
        res.raise_on_failure("x")


# --- call table -----------------------------------------------------------------------

def test_every_call_has_a_node_procedure() -> None:
    for call in defs.CALLS.values():
        assert call.procedure in noded.PROCEDURES, call.name
        assert call.timeout_for({a.name: 1 for a in call.args}) > 0


def test_test_delay_timeout_follows_duration() -> None:
    call = defs.CALLS["test_delay"]
    assert call.timeout_for({"duration": 30}) > 30
    assert call.timeout_for({"duration": 100}) > 100


def test_runner_rejects_bad_arguments(cluster: Cluster) -> None:
    runner = _runner(cluster, {})
    with runner:
        # the typed methods have the procedure's signature (mypy checks the callers) ...
        with pytest.raises(TypeError, match="duration"):
            runner.call_test_delay(["n1"])  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            runner.call_test_delay(["n1"], 1, 2)  # type: ignore[call-arg]
        # ... and calls by name are checked against the table
        with pytest.raises(errors.ProgrammerError, match="missing duration"):
            runner.call("test_delay", ["n1"])
        with pytest.raises(errors.ProgrammerError, match="takes 1 arguments"):
            runner.call("test_delay", ["n1"], 1, 2)
        with pytest.raises(errors.ProgrammerError, match="list of node names"):
            runner.call_version("n1")
        with pytest.raises(AttributeError):
            _ = runner.call_does_not_exist  # type: ignore[attr-defined]
        with pytest.raises(errors.OpExecError, match="Cannot prepare RPC call upload_file"):
            runner.call_upload_file(["n1"], cluster.master.root / "missing")


# --- runner against in-process servers ------------------------------------------------

def test_call_returns_payload_and_reuses_connection(cluster: Cluster) -> None:
    server = _start(cluster)
    with _runner(cluster, {"n1": ("127.0.0.1", server.port, False)}) as runner:
        for _ in range(5):
            res = runner.call_version(["n1"])["n1"]
            assert res.fail_msg is None
            assert res.payload == constants.PROTOCOL_VERSION
    assert server.connections == 1


def test_offline_and_unknown_nodes_are_not_contacted(cluster: Cluster) -> None:
    server = _start(cluster)
    nodes = {"off": ("127.0.0.1", server.port, True)}
    with _runner(cluster, nodes) as runner:
        results = runner.call_version(["off", "ghost"])
    assert list(results) == ["off", "ghost"]
    assert results["off"].offline and results["off"].fail_msg == OFFLINE_MSG
    assert "ghost" in (results["ghost"].fail_msg or "")
    assert not results["ghost"].offline
    assert server.connections == 0


def test_backend_errors_are_replies(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    def expected(ctx: NodeContext) -> None:
        raise RpcFail("no such disk")

    def generic(ctx: NodeContext) -> None:
        raise errors.StorageError("volume group missing")

    def crash(ctx: NodeContext, value: int) -> float:
        return 1 / value

    server = _start(cluster, {"expected": expected, "generic": generic, "crash": crash,
                              "ping": lambda ctx: True})
    with _runner(cluster, {"n1": ("127.0.0.1", server.port, False)}) as runner:
        assert runner.run("expected", ["n1"], [], 10)["n1"].fail_msg == "no such disk"
        assert "volume group missing" in (runner.run("generic", ["n1"], [], 10)["n1"].fail_msg
                                          or "")
        with caplog.at_level(logging.ERROR, logger="ganeti.noded"):
            msg = runner.run("crash", ["n1"], [0], 10)["n1"].fail_msg or ""
        assert "ZeroDivisionError" in msg and "crash" in msg
        assert any(r.exc_info for r in caplog.records if "crash" in r.getMessage())
        bad_args = runner.run("crash", ["n1"], [], 10)["n1"].fail_msg or ""
        assert "Invalid arguments" in bad_args
        unknown = runner.run("nonexistent", ["n1"], [], 10)["n1"].fail_msg or ""
        assert "Error 404" in unknown and "nonexistent" in unknown
        assert runner.run("ping", ["n1"], [], 10)["n1"].payload is True


def _raw(server: noded.NodeRpcServer, cluster: Cluster, method: str, path: str,
         body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    ctx = default_ssl_context_factory(cluster.master)()
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=WAIT, context=ctx)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    return response.status, json.loads(data) if data else None


def test_protocol_violations_refused(cluster: Cluster) -> None:
    server = _start(cluster, max_body_size=1024)
    body = b"[]"
    assert _raw(server, cluster, "POST", "/version", body, {})[0] == 411
    status, reply = _raw(server, cluster, "POST", "/version", None,
                         {"Content-Length": str(10 * 1024 * 1024)})
    assert status == 413 and reply[0] is False and "too large" in reply[1]
    status, reply = _raw(server, cluster, "POST", "/version", b"{nope",
                         {"Content-Length": "5"})
    assert status == 400 and "JSON" in reply[1]
    status, reply = _raw(server, cluster, "POST", "/version", b"{}", {"Content-Length": "2"})
    assert status == 400 and "list" in reply[1]
    assert _raw(server, cluster, "GET", "/version", None, {})[0] == 405
    status, reply = _raw(server, cluster, "POST", "/version", body, {"Content-Length": "2"})
    assert (status, reply) == (200, [True, constants.PROTOCOL_VERSION])


def test_oversized_call_gives_clear_error(cluster: Cluster) -> None:
    server = _start(cluster, max_body_size=1024)
    with _runner(cluster, {"n1": ("127.0.0.1", server.port, False)}) as runner:
        res = runner.call_write_ssconf_files(["n1"], {"big": "x" * 4096})["n1"]
        assert "Error 413" in (res.fail_msg or "")
        assert runner.call_ping(["n1"])["n1"].payload is True


def test_timeout_then_node_still_answers(cluster: Cluster) -> None:
    release = threading.Event()

    def hang(ctx: NodeContext) -> str:
        release.wait(WAIT)
        return "late"

    server = _start(cluster, {"hang": hang, "ping": lambda ctx: True})
    try:
        with _runner(cluster, {"n1": ("127.0.0.1", server.port, False)}) as runner:
            res = runner.run("hang", ["n1"], [], 0.3)["n1"]
            assert res.fail_msg is not None
            assert res.fail_msg.startswith("Timeout after 0.3s") and "n1" in res.fail_msg
            assert runner.run("ping", ["n1"], [], WAIT)["n1"].payload is True
    finally:
        release.set()


def test_parallel_calls_overlap(cluster: Cluster) -> None:
    # Each node's procedure only returns once all three are running at once;
    # sequential calls would break the barrier and fail.
    barrier = threading.Barrier(3, timeout=WAIT)

    def meet(ctx: NodeContext) -> int:
        return barrier.wait()

    servers = [_start(cluster, {"meet": meet}) for _ in range(3)]
    nodes = {f"n{i}": ("127.0.0.1", s.port, False) for i, s in enumerate(servers)}
    with _runner(cluster, nodes) as runner:
        results = runner.run("meet", list(nodes), [], WAIT)
    assert sorted(r.payload for r in results.values()) == [0, 1, 2]


def test_down_node_does_not_affect_others(cluster: Cluster) -> None:
    server = _start(cluster)
    dead = _start(cluster)
    dead_port = dead.port
    dead.shutdown()
    dead.server_close()
    cluster.servers.remove(dead)
    nodes = {"up": ("127.0.0.1", server.port, False), "down": ("127.0.0.1", dead_port, False)}
    with _runner(cluster, nodes) as runner:
        results = runner.call_version(["up", "down"])
    assert results["up"].payload == constants.PROTOCOL_VERSION
    msg = results["down"].fail_msg or ""
    assert "Error 111: Connection refused" in msg and "node down" in msg


def test_reconnects_after_node_restart(cluster: Cluster) -> None:
    server = _start(cluster)
    port = server.port
    with _runner(cluster, {"n1": ("127.0.0.1", port, False)}) as runner:
        assert runner.call_ping(["n1"])["n1"].payload is True
        server.shutdown()
        server.server_close()
        cluster.servers.remove(server)
        restarted = _start(cluster, port=port)
        assert runner.call_ping(["n1"])["n1"].payload is True
    assert restarted.connections == 1


def test_foreign_server_certificate_refused(cluster: Cluster) -> None:
    server = _start(cluster)
    impostor = pathutils.Paths.for_root(cluster.master.root.parent / "impostor")
    _install_cert(impostor, crypto.generate_cluster_ca("evil", 5), "impostor")
    runner = RpcRunner(static_resolver({"n1": ("127.0.0.1", server.port, False)}),
                       default_ssl_context_factory(impostor), paths=impostor)
    with runner:
        msg = runner.call_version(["n1"])["n1"].fail_msg or ""
    assert "TLS certificate of the node not accepted" in msg and "n1" in msg


def test_refused_master_certificate_gives_clear_error(cluster: Cluster) -> None:
    server = _start(cluster)
    stranger = pathutils.Paths.for_root(cluster.master.root.parent / "stranger")
    cert, key = crypto.generate_node_certificate(*crypto.generate_cluster_ca("x", 5),
                                                 "stranger", [], 5)
    crypto.write_pem_pair(stranger.node_cert_file, cert, key)
    stranger.cluster_ca_file.write_text(cluster.ca[0])  # trusts the node, is not trusted
    runner = RpcRunner(static_resolver({"n1": ("127.0.0.1", server.port, False)}),
                       default_ssl_context_factory(stranger), paths=stranger)
    with runner:
        res = runner.call_version(["n1"])["n1"]
    assert res.payload is None
    assert res.fail_msg is not None and "n1" in res.fail_msg
    assert "TLS" in res.fail_msg or "Connection" in res.fail_msg


def test_connection_cap(cluster: Cluster) -> None:
    release = threading.Event()
    entered = threading.Event()

    def hold(ctx: NodeContext) -> bool:
        entered.set()
        return release.wait(WAIT)

    server = _start(cluster, {"hold": hold, "ping": lambda ctx: True}, max_connections=1)
    nodes = {"n1": ("127.0.0.1", server.port, False)}
    try:
        with _runner(cluster, nodes) as first, _runner(cluster, nodes) as second:
            holder = threading.Thread(target=first.run, args=("hold", ["n1"], [], WAIT))
            holder.start()
            assert entered.wait(WAIT)
            refused = second.call_ping(["n1"])["n1"]
            assert refused.fail_msg is not None and "n1" in refused.fail_msg
            release.set()
            holder.join(WAIT)
    finally:
        release.set()
    # the runners closed their connections: once the server has seen that, it
    # has a free slot again
    assert server.connection_done.wait(WAIT)
    with _runner(cluster, nodes) as runner:
        assert runner.call_ping(["n1"])["n1"].payload is True


def test_handshake_timeout_is_reported(cluster: Cluster) -> None:
    # A TCP listener that never speaks TLS: the kernel accepts, nobody answers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with _runner(cluster, {"n1": ("127.0.0.1", port, False)}) as runner:
            res = runner.call_version(["n1"], timeout=0.3)["n1"]
    assert res.fail_msg == f"Timeout after 0.3s connecting to node n1 at 127.0.0.1:{port}"


def test_nodes_may_be_any_iterable(cluster: Cluster) -> None:
    server = _start(cluster)
    nodes = {f"n{i}": ("127.0.0.1", server.port, i == 2) for i in range(3)}
    with _runner(cluster, nodes) as runner:
        results = runner.call_version(n for n in ["n0", "n1", "n2", "n0"])
    assert list(results) == ["n0", "n1", "n2"]
    assert [r.offline for r in results.values()] == [False, False, True]
