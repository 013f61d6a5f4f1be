"""MasterContext's wiring of the distributor, and the verify check, in one process.

The commit path with a real ConfigStore and a fake upload RPC that hangs; the
verify check through the processor with the loopback RPC (real node procedures).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from support.loopback import Env

from ganeti import config_journal, locking, opcodes, pathutils
from ganeti.config import ConfigStore, make_initial_config
from ganeti.context import MasterContext
from ganeti.objects import Node
from ganeti.rpc.client import PreparedCall
from ganeti.rpc.result import RpcResult


class HangingRpc:
    """Uploads to ``hang`` block until ``release`` is set; others succeed at once."""

    def __init__(self, hang: set[str]) -> None:
        self.hang = hang
        self.release = threading.Event()
        self.done: list[str] = []

    def prepare(self, name: str, *args: Any, timeout: float | None = None,
                **kwargs: Any) -> PreparedCall:
        return PreparedCall(name, name, list(args), b"", 60.0)

    def run_prepared(self, prepared: PreparedCall, nodes: Iterable[str]
                     ) -> dict[str, RpcResult[Any]]:
        (node,) = list(nodes)
        if node in self.hang:
            self.release.wait(60)
            return {node: RpcResult(node, fail_msg="Timeout connecting")}
        self.done.append(node)
        return {node: RpcResult(node, data=None)}


def test_a_hanging_candidate_never_blocks_a_commit(tmp_path: Path) -> None:
    paths = pathutils.Paths.for_root(tmp_path)
    paths.cluster_conf_file.parent.mkdir(parents=True)
    cfg = ConfigStore.initialize(paths.cluster_conf_file, make_initial_config(
        "cluster.local", "node1", None, "127.0.0.1"))
    for idx in (2, 3):
        cfg.add_node(Node(name=f"node{idx}", primary_ip=f"127.0.0.{idx}",
                          master_candidate=True))
    rpc = HangingRpc({"node3"})
    ctx = MasterContext(paths, cfg, rpc)  # type: ignore[arg-type]
    cfg.add_write_listener(ctx.on_config_written)
    try:
        writes_done = threading.Event()

        def writer() -> None:
            for tag in ("a", "b", "c"):
                cluster = cfg.get_cluster_info()
                cluster.tags.append(tag)
                cfg.update(cluster)
            writes_done.set()
        threading.Thread(target=writer, daemon=True).start()
        # with the synchronous upload the first write waited for node3 (here: forever)
        assert writes_done.wait(30)
        missed = ctx.distribute_files(["node2", "node3"], with_ca=False, timeout=0.5)
        assert list(missed) == ["node3"]
        status = {s.node: s for s in ctx.distribution.status()}
        assert status["node2"].lag == 0
        assert status["node3"].uploading and status["node3"].lag == cfg.get_serial()
    finally:
        rpc.release.set()
        ctx.distribution.stop(flush_timeout=0)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_verify_reports_candidates_whose_upload_fails(env: Env) -> None:
    env.rpc.fail["upload_file"] = "No space left on device"
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[False]]
    lag = [m for m in env.cbs.log if isinstance(m, str) and "configuration lags" in m]
    assert [m.split(":")[1].strip() for m in lag] == ["node node2", "node node3"]
    assert all("No space left on device" in m and "last success: never" in m for m in lag)
    assert all(f"master {env.cfg.get_serial()}" in m for m in lag)

    del env.rpc.fail["upload_file"]
    env.cbs.log.clear()
    assert env.run_submitted(opcodes.OpClusterVerify.create()) == [[True]]
    assert not [m for m in env.cbs.log if isinstance(m, str) and "configuration lags" in m]
    assert "All 2 master candidates of the group have the configuration" in " ".join(
        str(m) for m in env.cbs.log)
    # the candidates really hold the master's configuration (file + journal)
    for node in ("node2", "node3"):
        assert (config_journal.load(env.roots[node].paths.cluster_conf_file)
                == config_journal.load(env.cfg.path))
    env.ctx.distribution.stop(flush_timeout=0)


def test_instance_locks_follow_creates_and_removes(env: Env) -> None:
    assert not env.ctx.glm.exists(locking.LEVEL_INSTANCE, "inst1")
    env.create("inst1")
    assert env.ctx.glm.exists(locking.LEVEL_INSTANCE, "inst1")
    env.run(opcodes.OpInstanceRemove.create(instance_name="inst1"))
    assert not env.ctx.glm.exists(locking.LEVEL_INSTANCE, "inst1")
    env.ctx.distribution.stop(flush_timeout=0)


def test_the_context_ships_the_store_s_records_to_the_candidates(env: Env) -> None:
    """MasterContext hands the store's records_since to the distributor: after the
    first whole file, every change reaches the candidates as journal records."""
    env.cfg.add_write_listener(env.ctx.on_config_written, with_data=False)
    candidates = ["node2", "node3"]
    try:
        assert env.ctx.distribution.flush(candidates, timeout=30) == {}
        env.create("inst1")
        env.run(opcodes.OpInstanceSetParams.create(instance_name="inst1",
                                                   beparams={"maxmem": 256}))
        assert env.ctx.distribution.flush(candidates, timeout=30) == {}
        for node in candidates:
            sent = [proc for proc, name in env.rpc.calls if name == node
                    and proc in ("upload_file", "append_config_records")]
            assert sent[0] == "upload_file" and sent.count("upload_file") == 1, sent
            assert "append_config_records" in sent, sent
            assert (config_journal.load(env.roots[node].paths.cluster_conf_file)
                    == config_journal.load(env.cfg.path))
    finally:
        env.ctx.distribution.stop(flush_timeout=0)
