"""Node procedures: path restrictions, argument checks, and the coordinator end to end
with an in-process fake RPC runner (real TLS streams, no daemons)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.files import sparse_file
from support.rpc import as_runner

from ganeti import crypto, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.backend import transfer as bk
from ganeti.rpc.result import RpcResult
from ganeti.transfer import BLOCK_SIZE
from ganeti.transfer.checksum import checksum_file
from ganeti.transfer.master.coordinator import (
    MIN_POLL_INTERVAL,
    DiskTransfer,
    _Run,
    format_duration,
    format_size,
    progress_line,
    run_transfers,
)
from ganeti.transfer.node import registry

MIB = 1024 * 1024


def _node(tmp: Path, name: str, ca: tuple[str, str]) -> NodeContext:
    paths = pathutils.Paths.for_root(tmp / name)
    paths.data_dir.mkdir(parents=True)
    paths.export_dir.mkdir(parents=True)
    paths.file_storage_dir.mkdir(parents=True)
    cert, key = crypto.generate_node_certificate(ca[0], ca[1], name, ["127.0.0.1"], 1)
    crypto.write_pem_pair(paths.node_cert_file, cert, key)
    paths.cluster_ca_file.write_text(ca[0])
    return NodeContext(paths=paths)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NodeContext]:
    tmp = tmp_path_factory.mktemp("nodes")
    ca = crypto.generate_cluster_ca("backend.test", 1)
    return {name: _node(tmp, name, ca) for name in ("node1", "node2")}


class FakeRpc:
    """Calls the backend procedures directly, one NodeContext per node name."""

    def __init__(self, nodes: dict[str, NodeContext]) -> None:
        self.nodes = nodes
        self.down: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def _one(self, name: str, node: str, args: tuple[Any, ...]) -> RpcResult:
        self.calls.append((name, node))
        if node in self.down:
            return RpcResult(node, fail_msg="Error 111: Connection refused", call=name)
        try:
            return RpcResult(node, getattr(bk, name)(self.nodes[node], *args), call=name)
        except RpcFail as err:
            return RpcResult(node, fail_msg=str(err), call=name)

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        name = attr.removeprefix("call_")

        def call(nodes: Any, *args: Any) -> Any:
            if isinstance(nodes, str):
                return self._one(name, nodes, args)
            return {node: self._one(name, node, args) for node in nodes}

        return call


def test_file_paths_restricted_to_export_and_file_storage(nodes: dict[str, NodeContext],
                                                          tmp_path: Path) -> None:
    ctx = nodes["node1"]
    assert bk.resolve_file(ctx, "/srv/ganeti/export/inst/disk0", create_parents=True) \
        == Path(os.path.realpath(ctx.paths.export_dir)) / "inst" / "disk0"
    assert bk.resolve_file(ctx, "/var/lib/ganeti/file-storage/x").name == "x"
    for bad in ("/etc/passwd", "/srv/ganeti/export/../../../etc/passwd", "relative",
                "/var/lib/ganeti/server.pem", 5):
        with pytest.raises(RpcFail):
            bk.resolve_file(ctx, bad)
    # a symlink inside the export dir pointing outside is refused
    escape = ctx.paths.export_dir / "escape"
    escape.symlink_to(tmp_path)
    with pytest.raises(RpcFail, match="outside"):
        bk.resolve_file(ctx, "/srv/ganeti/export/escape/file")
    (ctx.paths.export_dir / "link").symlink_to(tmp_path / "target")
    with pytest.raises(RpcFail, match="symbolic link"):
        bk.resolve_file(ctx, "/srv/ganeti/export/link")


def test_procedures_refuse_bad_arguments(nodes: dict[str, NodeContext]) -> None:
    ctx = nodes["node1"]
    dest = {"kind": "file", "path": "/srv/ganeti/export/a"}
    with pytest.raises(RpcFail, match="compression"):
        bk.transfer_receive_start(ctx, "t1", dest, 10, "magic-magic", "lzma", {})
    with pytest.raises(RpcFail, match="magic"):
        bk.transfer_receive_start(ctx, "t1", dest, 10, "short", "none", {})
    with pytest.raises(RpcFail, match="kind"):
        bk.transfer_receive_start(ctx, "t1", {"kind": "pipe"}, 10, "magic-magic", "none", {})
    with pytest.raises(RpcFail, match="progress_timeout"):
        bk.transfer_receive_start(ctx, "t1", dest, 10, "magic-magic", "none",
                                  {"progress_timeout": -1})
    with pytest.raises(RpcFail, match="Invalid checksum 'md5': expected one of"):
        bk.transfer_send_start(ctx, "t1", {"kind": "file", "path": "/srv/ganeti/export/a"},
                               "127.0.0.1", 1, "magic-magic", "none", {"checksum": "md5"})
    with pytest.raises(RpcFail, match="Invalid verify_receive 'yes'"):
        bk.transfer_receive_start(ctx, "t1", dest, 10, "magic-magic", "none",
                                  {"verify_receive": "yes"})
    with pytest.raises(RpcFail, match="outside"):
        bk.transfer_send_start(ctx, "t1", {"kind": "file", "path": "/etc/passwd"},
                               "127.0.0.1", 1, "magic-magic", "none", {})
    with pytest.raises(RpcFail, match="Unsupported disk template"):
        bk.transfer_send_start(ctx, "t1", {"kind": "disk", "dev_type": "nope",
                                           "logical_id": ["a", "b"]},
                               "127.0.0.1", 1, "magic-magic", "none", {})
    assert bk.transfer_list(ctx) == {}


def test_coordinator_copies_disks_in_parallel(nodes: dict[str, NodeContext]) -> None:
    rpc = FakeRpc(nodes)
    src_root = nodes["node1"].paths.file_storage_dir
    sizes = [3 * BLOCK_SIZE + 5, 2 * BLOCK_SIZE]
    for index, size in enumerate(sizes):
        sparse_file(src_root / "inst" / f"disk{index}", size,
                [(index * 1000, os.urandom(MIB + index))])
    specs = [DiskTransfer(f"disk/{i}", "node1",
                          {"kind": "file", "path": f"/var/lib/ganeti/file-storage/inst/disk{i}"},
                          "node2", {"kind": "file", "path": f"/srv/ganeti/export/inst/disk{i}"},
                          size=size, compress="zstd" if i else "none",
                          dest_address="127.0.0.1")
             for i, size in enumerate(sizes)]
    lines: list[str] = []
    done: list[tuple[int, bool]] = []
    results = run_transfers(as_runner(rpc), specs, lines.append, poll_interval=0.05,
                            on_done=lambda i, r: done.append((i, r.success)))
    assert [r.success for r in results] == [True, True], [r.error for r in results]
    assert sorted(done) == [(0, True), (1, True)]
    for index, result in enumerate(results):
        copy = nodes["node2"].paths.export_dir / "inst" / f"disk{index}"
        assert copy.read_bytes() == (src_root / "inst" / f"disk{index}").read_bytes()
        assert result.checksum == checksum_file(copy)
        assert f"disk/{index} finished: " in "\n".join(lines)
    finished = [line for line in lines if "finished" in line]
    assert len(finished) == 2 and all("checksum blake3-4m:" in line for line in finished)
    # cleanup ran on both nodes and nothing is left behind
    assert {node for name, node in rpc.calls if name == "transfer_cleanup"} == \
        {"node1", "node2"}
    assert registry.list_transfers() == {}


def test_coordinator_reports_a_failed_side_and_cleans_up(nodes: dict[str, NodeContext]) -> None:
    rpc = FakeRpc(nodes)
    specs = [DiskTransfer("disk/0", "node1",
                          {"kind": "file", "path": "/var/lib/ganeti/file-storage/missing"},
                          "node2", {"kind": "file", "path": "/srv/ganeti/export/x/disk0"},
                          size=MIB, dest_address="127.0.0.1")]
    lines: list[str] = []
    done: list[int] = []
    (result,) = run_transfers(as_runner(rpc), specs, lines.append, poll_interval=0.05,
                              on_done=lambda i, _r: done.append(i))
    assert not result.success and done == [0]
    assert result.error and "disk/0" in result.error and "node1" in result.error
    assert "not a regular file" in result.error
    assert not (nodes["node2"].paths.export_dir / "x" / "disk0").exists()
    assert registry.list_transfers() == {}
    assert ("transfer_abort", "node2") in rpc.calls


def test_coordinator_notices_an_unreachable_node(nodes: dict[str, NodeContext]) -> None:
    rpc = FakeRpc(nodes)
    sparse_file(nodes["node1"].paths.file_storage_dir / "slow", MIB, [(0, b"x")])
    specs = [DiskTransfer("disk/0", "node1",
                          {"kind": "file", "path": "/var/lib/ganeti/file-storage/slow"},
                          "node2", {"kind": "file", "path": "/srv/ganeti/export/s/disk0"},
                          dest_address="127.0.0.1")]
    polls = []

    def sleep(_seconds: float) -> None:
        # the receiver node "dies" before the first poll
        polls.append(1)
        rpc.down.add("node2")

    (result,) = run_transfers(as_runner(rpc), specs, lambda _m: None, poll_interval=0,
                              sleep_fn=sleep)
    assert not result.success and result.error
    assert "node2" in result.error
    rpc.down.clear()
    registry.cleanup(list(registry.list_transfers()))


def test_formatting() -> None:
    assert format_size(268 * MIB + 5) == "268M"
    assert format_size(1024 * MIB) == "1.0G"
    assert format_size(512) == "512B"
    assert format_duration(49 * 60 + 1) == "49m 1s"
    assert format_duration(3725) == "1h 2m 5s"
    line = progress_line("disk/0", 268 * MIB, 268 * MIB * 100 // 12,
                         44.6 * MIB)
    assert line.startswith("disk/0 sent 268M, 44.6 MiB/s, 12%, ETA ")
    assert progress_line("disk/1", 0, 100, 0.0) == "disk/1 sent 0B, 0.0 MiB/s, 0%"


def test_coordinator_disk_to_disk_through_the_storage_driver(
        nodes: dict[str, NodeContext]) -> None:
    rpc = FakeRpc(nodes)
    size = 2 * BLOCK_SIZE + 4096
    src = sparse_file(nodes["node1"].paths.file_storage_dir / "inst9" / "disk0", size,
                  [(BLOCK_SIZE - 100, os.urandom(300))])
    dest = nodes["node2"].paths.file_storage_dir / "inst9" / "disk0"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"\xff" * size)  # an existing disk with old content
    spec = DiskTransfer("disk/0", "node1",
                        {"kind": "disk", "dev_type": "file", "logical_id": ["file", str(src)]},
                        "node2",
                        {"kind": "disk", "dev_type": "file", "logical_id": ["file", str(dest)]},
                        size=size, compress="gzip", dest_address="127.0.0.1")
    (result,) = run_transfers(as_runner(rpc), [spec], lambda _m: None, poll_interval=0.05)
    assert result.success, result.error
    assert dest.read_bytes() == src.read_bytes()
    assert result.checksum == checksum_file(dest)


def test_coordinator_sha256_sender_and_verifying_receiver(
        nodes: dict[str, NodeContext]) -> None:
    options: dict[str, dict[str, Any]] = {}

    class Recording(FakeRpc):
        def _one(self, name: str, node: str, args: tuple[Any, ...]) -> RpcResult:
            if name.endswith("_start"):
                options[name] = args[-1]
            return super()._one(name, node, args)

    rpc = Recording(nodes)
    src = sparse_file(nodes["node1"].paths.file_storage_dir / "old" / "disk0",
                  BLOCK_SIZE + 10, [(3, os.urandom(5000))])
    spec = DiskTransfer("disk/0", "node1",
                        {"kind": "file", "path": "/var/lib/ganeti/file-storage/old/disk0"},
                        "node2", {"kind": "file", "path": "/srv/ganeti/export/old/disk0"},
                        dest_address="127.0.0.1", checksum="sha256-4m")
    (result,) = run_transfers(as_runner(rpc), [spec], lambda _m: None, poll_interval=0.05,
                              extra_options={"verify_receive": True})
    assert result.success, result.error
    assert result.checksum == checksum_file(src, "sha256-4m")
    assert options["transfer_send_start"]["checksum"] == "sha256-4m"
    assert "checksum" not in options["transfer_receive_start"]
    assert options["transfer_receive_start"]["verify_receive"] is True


def test_poll_pause_follows_the_expected_end() -> None:
    spec = DiskTransfer("disk/0", "a", {}, "b", {})
    run = _Run(as_runner(None), [spec, spec], lambda _m: None, {})
    first, second = run.disks
    assert run.next_poll(1.0) == MIN_POLL_INTERVAL  # no rate known yet
    first.send_status = {"bytes": 0, "data_total": 100 * MIB, "rate": 10.0 * MIB}
    second.send_status = {"bytes": 50 * MIB, "data_total": 100 * MIB, "rate": 100.0 * MIB}
    assert run.next_poll(1.0) == pytest.approx(0.25)  # the second ends in 0.5 s
    assert run.next_poll(0.2) == 0.2                   # never longer than asked
    second.send_status = {"bytes": 99 * MIB, "data_total": 100 * MIB, "rate": 100.0 * MIB}
    assert run.next_poll(1.0) == MIN_POLL_INTERVAL     # never shorter than the minimum
    second.finished = True
    assert run.next_poll(1.0) == 1.0
    first.send_status = {"bytes": 100 * MIB, "data_total": 100 * MIB, "rate": 1.0}
    # all sent, the receiver syncs: soon, then less and less often
    pauses = [run.next_poll(1.0) for _ in range(12)]
    assert pauses[:3] == pytest.approx([0.1, 0.125, 0.15625])
    assert pauses[-1] == 1.0 and pauses == sorted(pauses)
    run.rpc_failures["b"] = 1                       # a node missed a poll: full pause
    assert run.next_poll(1.0) == 1.0
