"""Node-side procedures, called directly (no transport).

Type errors in the arguments are refused at the node daemon's boundary (the
procedure's signature, ganeti.rpc.contract), so those cases go through
``_call``, which validates like the daemon does.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from ganeti import constants, pathutils
from ganeti.backend import NodeContext, RpcFail, files, hooks, info
from ganeti.rpc import defs
from ganeti.server import noded


@pytest.fixture
def ctx(tmp_path: Path) -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path / "node"), hooks_timeout=30)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(ctx: NodeContext, name: str, *args: object) -> object:
    """Run a procedure as the node daemon does: arguments checked first."""
    return noded.TABLE[name].run(ctx, list(args))


def test_version_and_ping(ctx: NodeContext) -> None:
    assert info.version(ctx) == constants.PROTOCOL_VERSION
    assert info.ping(ctx) is True


def test_node_info(ctx: NodeContext) -> None:
    data = info.node_info(ctx)
    assert data["cpu_count"] == os.cpu_count()
    assert data["memory_total"] > 0 and 0 <= data["memory_free"] <= data["memory_total"]
    assert 0 <= data["disk_free"] <= data["disk_total"]
    assert data["root"] == str(ctx.paths.root)
    assert isinstance(data["hostname"], str) and data["hostname"]


@pytest.mark.parametrize("bad", [-1, float("nan"), 10 ** 9])
def test_test_delay_validates(ctx: NodeContext, bad: float) -> None:
    with pytest.raises(RpcFail, match="Invalid delay duration"):
        info.test_delay(ctx, bad)
    with pytest.raises(RpcFail, match="Invalid delay duration"):
        _call(ctx, "test_delay", bad)


@pytest.mark.parametrize("bad", ["1", True, None])
def test_test_delay_refuses_non_numbers(ctx: NodeContext, bad: object) -> None:
    with pytest.raises(RpcFail, match=r"argument 'duration'.*valid number"):
        _call(ctx, "test_delay", bad)


def test_upload_allowed_file(ctx: NodeContext) -> None:
    wire = "/" + ctx.paths.cluster_conf_file.relative_to(ctx.paths.root).as_posix()
    files.upload_file(ctx, wire, _b64(b'{"cluster": 1}'), 0o640, 1_000_000.0)
    target = ctx.paths.cluster_conf_file
    assert target.read_bytes() == b'{"cluster": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_mtime == 1_000_000.0
    files.upload_file(ctx, wire, _b64(b"v2"), 0o600, None)
    assert target.read_bytes() == b"v2"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


@pytest.mark.parametrize("name", [
    "/etc/passwd",
    "/var/lib/ganeti/server.pem",
    "/var/lib/ganeti/../../../etc/passwd",
    "var/lib/ganeti/config.data",
    "/var/lib/ganeti/config.data/../ca.pem/../../ganeti/server.pem",
])
def test_upload_refuses_paths_outside_allow_list(ctx: NodeContext, name: str) -> None:
    with pytest.raises(RpcFail):
        files.upload_file(ctx, name, _b64(b"x"), 0o644, None)
    assert not ctx.paths.root.exists() or not any(
        p.is_file() for p in ctx.paths.root.rglob("*"))


def test_upload_refuses_bad_data(ctx: NodeContext) -> None:
    wire = "/" + ctx.paths.cluster_ca_file.relative_to(ctx.paths.root).as_posix()
    with pytest.raises(RpcFail, match="base64"):
        files.upload_file(ctx, wire, "not base64!", 0o644, None)
    with pytest.raises(RpcFail, match="mode"):
        files.upload_file(ctx, wire, _b64(b"x"), 0o177777, None)
    assert not ctx.paths.cluster_ca_file.exists()


def test_wire_name_round_trip(tmp_path: Path, ctx: NodeContext) -> None:
    master = pathutils.Paths.for_root(tmp_path / "master")
    master.cluster_ca_file.parent.mkdir(parents=True)
    master.cluster_ca_file.write_text("CA")
    master.cluster_ca_file.chmod(0o644)
    args = defs.CALLS["upload_file"].encode_args(master, {"file_name": master.cluster_ca_file})
    files.upload_file(ctx, *args)
    assert ctx.paths.cluster_ca_file.read_text() == "CA"
    assert stat.S_IMODE(ctx.paths.cluster_ca_file.stat().st_mode) == 0o644
    with pytest.raises(RpcFail, match="outside the cluster root"):
        pathutils.to_wire_name(master, tmp_path / "elsewhere")


def test_write_ssconf_files(ctx: NodeContext) -> None:
    files.write_ssconf_files(ctx, {"cluster_name": "c1.example.com",
                                   "node_list": ["n1", "n2"], "master_netmask": 24})
    data_dir = ctx.paths.data_dir
    assert (data_dir / "ssconf_cluster_name").read_text() == "c1.example.com\n"
    assert (data_dir / "ssconf_node_list").read_text() == "n1\nn2\n"
    assert (data_dir / "ssconf_master_netmask").read_text() == "24\n"
    assert stat.S_IMODE((data_dir / "ssconf_node_list").stat().st_mode) == 0o444
    files.write_ssconf_files(ctx, {"node_list": ["n3"]})
    assert (data_dir / "ssconf_node_list").read_text() == "n3\n"


@pytest.mark.parametrize("values", [{"../evil": "x"}, {"Upper": "x"}, {"k": {"a": 1}}, ["x"]])
def test_write_ssconf_refuses_bad_input(ctx: NodeContext, values: object) -> None:
    with pytest.raises(RpcFail):
        _call(ctx, "write_ssconf_files", values)
    assert not ctx.paths.data_dir.exists()


def test_hooks_runner_runs_scripts(ctx: NodeContext) -> None:
    hook_dir = ctx.paths.hooks_dir / "instance-export-pre.d"
    hook_dir.mkdir(parents=True)
    script = hook_dir / "10-echo"
    script.write_text("#!/bin/sh\necho \"phase=$GANETI_HOOKS_PHASE x=$GANETI_X\"\n")
    script.chmod(0o755)
    results = hooks.hooks_runner(ctx, "instance-export", "pre",
                                 {"GANETI_HOOKS_PHASE": "pre", "GANETI_X": "7"})
    assert len(results) == 1
    name, status, output = results[0]
    assert name.endswith("10-echo") and status == constants.HKR_SUCCESS
    assert "phase=pre x=7" in output
    assert hooks.hooks_runner(ctx, "instance-export", "post", {}) == []


def test_hooks_runner_validates(ctx: NodeContext) -> None:
    with pytest.raises(RpcFail, match="phase"):
        hooks.hooks_runner(ctx, "instance-export", "middle", {})
    with pytest.raises(RpcFail, match="argument 'env'"):
        _call(ctx, "hooks_runner", "instance-export", "pre", ["x"])
