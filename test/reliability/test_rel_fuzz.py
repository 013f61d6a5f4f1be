"""Bad input against real daemons: fuzzed LUXI messages, RPC bodies and opcode dicts,
hostile names, hook script names and export descriptions.

The invariant everywhere: a typed error (LUXI: ``[class name, args]`` of a
GenericError subclass; RPC: ``[false, message]``), never a daemon crash or
hang, and the daemon keeps serving afterwards.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.cluster import E2ECluster, cluster_fixture
from support.reliability import (
    client,
    import_planted,
    luxi_exchange,
    rpc_post,
    scaled,
)

from ganeti import constants, errors, limits, opcodes
from ganeti.backup import exportconf
from ganeti.cmdlib import instance_utils as iu
from ganeti.hypervisor.base import check_instance_name

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FUZZED: dict[str, int] = {"luxi": 0, "rpc": 0, "opcode": 0, "exportconf": 0, "limits": 0}
_SETTINGS = settings(max_examples=scaled(120, 3000), deadline=None, derandomize=False,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=20)


cluster = cluster_fixture("fuzz", 1)


def _error_class_ok(name: Any) -> bool:
    cls = getattr(errors, name, None) if isinstance(name, str) else None
    return isinstance(cls, type) and issubclass(cls, errors.GenericError)


# --- LUXI ---------------------------------------------------------------------------


_SAFE_METHODS = ["SubmitJob", "SubmitManyJobs", "CancelJob", "ArchiveJob", "QueryJobs",
                 "Query", "QueryFields", "QueryExports", "QueryClusterInfo",
                 "ChangeJobPriority", "QueryConfigValues", "NoSuchMethod"]


def _check_luxi_reply(reply: Any) -> None:
    assert reply is not None, "the master closed the connection without an answer"
    assert isinstance(reply, dict) and isinstance(reply.get("success"), bool), reply
    if not reply["success"]:
        result = reply["result"]
        assert isinstance(result, list) and len(result) == 2, result
        assert _error_class_ok(result[0]), result


@_SETTINGS
@given(raw=st.binary(max_size=300).map(lambda b: b.replace(b"\x03", b"")))
def test_luxi_garbage_bytes(cluster: E2ECluster, raw: bytes) -> None:
    FUZZED["luxi"] += 1
    _check_luxi_reply(luxi_exchange(cluster, raw, timeout=30))


@_SETTINGS
@given(method=st.sampled_from(_SAFE_METHODS), args=json_values,
       version=st.none() | st.integers(-5, 5000))
def test_luxi_fuzzed_requests(cluster: E2ECluster, method: str, args: Any,
                              version: Any) -> None:
    if method in ("SubmitJob", "SubmitManyJobs"):
        # only invalid job definitions (valid ones could be anything, even a destroy)
        assume(not _any_valid_op(args))
    FUZZED["luxi"] += 1
    message = {"method": method, "args": args}
    if version is not None:
        message["version"] = version
    _check_luxi_reply(luxi_exchange(cluster, json.dumps(message).encode(), timeout=30))


def _any_valid_op(value: Any) -> bool:
    if isinstance(value, dict):
        try:
            opcodes.from_dict(dict(value))
            return True
        except (errors.GenericError, TypeError, ValueError):
            pass
    if isinstance(value, list | dict):
        items = value if isinstance(value, list) else list(value.values())
        return any(_any_valid_op(v) for v in items)
    return False


def test_luxi_oversized_and_truncated(cluster: E2ECluster) -> None:
    big = b"[" + b"1," * (constants.LUXI_MAX_MESSAGE // 2 + 10) + b"1]"
    reply = luxi_exchange(cluster, big, timeout=30)
    assert reply is None or reply["success"] is False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(cluster.master.paths.master_socket))
        sock.sendall(b'{"method": "QueryJobs", "ar')  # and hang up mid-message
    with client(cluster) as cl:
        assert cl.query_cluster_info()["cluster_name"]


# numbers JSON has no room for, and nesting only a stack overflow would stop
_HOSTILE_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e308"]


def _hostile(document: bytes, token: bytes, depth: int) -> bytes:
    """Put ``token`` (or, with depth > 0, a deeply nested list) into the args list."""
    inner = b"[" * depth + b"]" * depth if depth else token
    head, sep, tail = document.partition(b'"args": [')
    return head + sep + inner + (b", " if not tail.startswith(b"]") else b"") + tail \
        if sep else document


@_SETTINGS
@given(method=st.sampled_from([*_SAFE_METHODS, "AutoArchiveJobs", "WaitForJobChange"]),
       args=st.lists(json_values, max_size=4), token=st.sampled_from(_HOSTILE_TOKENS),
       depth=st.sampled_from([0, 0, 65, 1000, 100_000]))
def test_luxi_hostile_numbers_and_nesting(cluster: E2ECluster, method: str,
                                          args: list[Any], token: bytes, depth: int) -> None:
    if method in ("SubmitJob", "SubmitManyJobs"):
        assume(not _any_valid_op(args))
    FUZZED["luxi"] += 1
    payload = _hostile(json.dumps({"method": method, "args": args}).encode(), token, depth)
    reply = luxi_exchange(cluster, payload, timeout=30)
    _check_luxi_reply(reply)
    if token != b"1e308" or depth:
        assert reply["success"] is False, (payload[:200], reply)


# --- opcode dicts -------------------------------------------------------------------

_OP_IDS = sorted(opcodes.OPCODE_REGISTRY)


@settings(max_examples=scaled(400, 10000), deadline=None)
@given(op_id=st.sampled_from(_OP_IDS) | st.text(max_size=20),
       fields=st.dictionaries(st.sampled_from(["instance_name", "target_node", "duration",
                                               "priority", "depends", "node_name", "mode",
                                               "disks", "nics", "compress", "reason",
                                               "dry_run", "x"]) | st.text(max_size=8),
                              json_values, max_size=6))
def test_opcode_dicts_give_typed_errors(op_id: str, fields: dict[str, Any]) -> None:
    FUZZED["opcode"] += 1
    try:
        op = opcodes.from_dict({"OP_ID": op_id, **fields})
    except errors.GenericError as err:
        if isinstance(err, errors.OpPrereqError) and len(err.args) > 1:
            assert err.args[1] in errors.ECODE_ALL
        return
    assert op_id == op.OP_ID
    assert opcodes.from_dict(op.to_dict()).to_dict() == op.to_dict()


_sizes = st.integers(-2, 2**70) | st.sampled_from([limits.DISK_SIZE.maximum,
                                                   limits.DISK_SIZE.maximum + 1, 2**63])


@settings(max_examples=scaled(300, 10000), deadline=None)
@given(name=st.text(min_size=0, max_size=260), disks=st.lists(
           st.fixed_dictionaries({"size": _sizes}), max_size=40),
       nics=st.lists(st.just({}), max_size=20),
       tags=st.lists(st.text(max_size=140), max_size=20),
       os_type=st.none() | st.text(max_size=80) | st.sampled_from(
           ["../../bin/sh", "debootstrap+default", "a/b", "x" * 65]),
       memory=st.integers(-1, 2**64) | st.sampled_from([limits.MEMORY.maximum]))
def test_what_create_accepts_export_and_import_accept(
        name: str, disks: list[dict[str, Any]], nics: list[dict[str, Any]], tags: list[str],
        os_type: str | None, memory: int) -> None:
    """The create checks (opcode, disk/NIC/backend specs, os_type) and the export check
    (limits.instance_problems) agree: nothing create accepts is refused at export."""
    FUZZED["limits"] += 1
    try:
        op = opcodes.OpInstanceCreate.create(instance_name=name, disks=disks, nics=nics,
                                             tags=tags, os_type=os_type,
                                             beparams={"memory": memory})
        assert isinstance(op, opcodes.OpInstanceCreate)
        specs = iu.check_disk_specs(op.disks)
        iu.check_nic_specs(op.nics)
        beparams = iu.check_beparams(op.beparams)
        if op.os_type is not None:
            limits.check_os_name(op.os_type)
        check_instance_name(op.instance_name)
    except errors.GenericError as err:
        if isinstance(err, errors.OpPrereqError):
            assert err.ecode == errors.ECODE_INVAL
        return
    inst = type("I", (), {"name": name, "disks": [type("D", (), {"size": d.size})()
                                                 for d in specs],
                          "nics": nics, "tags": sorted(set(tags)), "os": os_type or ""})()
    assert limits.instance_problems(inst, beparams) == []


# --- RPC bodies ---------------------------------------------------------------------

_SAFE_PROCEDURES = ["version", "ping", "export_info", "export_abort", "export_remove",
                    "export_leftovers",
                    "export_list", "blockdev_exists", "blockdev_list_snapshots",
                    "transfer_status", "transfer_abort", "transfer_cleanup", "instance_info",
                    "no_such_procedure", "../etc/passwd", ""]


@_SETTINGS
@given(proc=st.sampled_from(_SAFE_PROCEDURES), args=json_values)
def test_rpc_fuzzed_bodies(cluster: E2ECluster, proc: str, args: Any) -> None:
    FUZZED["rpc"] += 1
    status, body = rpc_post(cluster, "/" + proc, json.dumps(args).encode())
    assert status in (200, 400, 404), (status, body)
    assert isinstance(body, list) and len(body) == 2 and isinstance(body[0], bool), body
    if not body[0]:
        assert isinstance(body[1], str) and body[1]


@_SETTINGS
@given(proc=st.sampled_from(_SAFE_PROCEDURES), args=st.lists(json_values, max_size=3),
       token=st.sampled_from(_HOSTILE_TOKENS[:5]), depth=st.sampled_from([0, 65, 100_000]))
def test_rpc_hostile_numbers_and_nesting(cluster: E2ECluster, proc: str, args: list[Any],
                                         token: bytes, depth: int) -> None:
    FUZZED["rpc"] += 1
    body = _hostile(json.dumps({"args": args}).encode(), token, depth)
    body = body[body.index(b"["):-1]  # the list itself, as noded expects it
    status, reply = rpc_post(cluster, "/" + proc, body)
    assert status == 400 and reply[0] is False and "Invalid JSON" in reply[1], reply


@_SETTINGS
@given(raw=st.binary(max_size=200))
def test_rpc_garbage_bodies(cluster: E2ECluster, raw: bytes) -> None:
    FUZZED["rpc"] += 1
    status, body = rpc_post(cluster, "/export_info", raw)
    assert status in (200, 400), (status, body)
    assert body[0] is False


# --- hostile names ------------------------------------------------------------------

BAD_NAMES = ["../x", "/", "a/../../etc", "x\x00y", "n" * 300, ".hidden", ".staging", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_export_procedures_refuse_hostile_names(cluster: E2ECluster, name: str) -> None:
    for proc in ("export_prepare", "export_info", "export_remove", "export_abort"):
        status, body = rpc_post(cluster, f"/{proc}", json.dumps([name]).encode())
        assert status == 200 and body[0] is False, (proc, name, body)
        assert "Invalid instance name" in body[1], body[1]
    export_dir = cluster.master.paths.export_dir
    assert not export_dir.exists() or not any(export_dir.iterdir())


def test_cli_refuses_hostile_instance_names(cluster: E2ECluster) -> None:
    for name in ["../x", "a/b", "x" * 300]:
        res = cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk",
                          "0:size=1M", name, ok=False)
        assert res.returncode != 0
        assert "name" in res.stderr.lower(), res.stderr
    res = cluster.gnt("gnt-backup", "export", "-n", "node1", "../x", ok=False)
    assert res.returncode != 0 and "../x" in res.stderr, res.stderr
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name").stdout
    assert out.strip() == ""


def test_hook_names_outside_the_pattern_never_run(cluster: E2ECluster) -> None:
    hook_dir = cluster.master.paths.hooks_dir / "instance-add-pre.d"
    hook_dir.mkdir(parents=True, exist_ok=True)
    marks = cluster.master.paths.root / "hookmarks"
    marks.mkdir(exist_ok=True)
    for name in ["good-hook_1", "bad.sh", "with space", "semi;colon", "~tilde"]:
        script = hook_dir / name
        script.write_text(f"#!/bin/sh\ntouch '{marks}/{name}'\n")
        script.chmod(0o755)
    try:
        cluster.gnt("gnt-instance", "add", "-t", "file", "-n", "node1", "--disk",
                    "0:size=1M", "--no-start", "hooked1")
    finally:
        for script in hook_dir.iterdir():
            script.unlink()
    assert sorted(p.name for p in marks.iterdir()) == ["good-hook_1"]
    cluster.gnt("gnt-instance", "remove", "-f", "hooked1")


_HEAD = "[export]\nversion=0\ntimestamp=1\nsource=node1\nos=x\n[instance]\n"
HOSTILE_CONFIGS = {
    "missing name": (_HEAD + "disk_count=1\ndisk0_dump=disk0\ndisk0_size=1\nnic_count=0\n",
                     "name"),
    "traversal dump": (_HEAD + "name=evil\ndisk_count=1\ndisk0_dump=../../../../etc/passwd\n"
                       "disk0_size=1\nnic_count=0\n", "disk0_dump"),
    "huge disk count": (_HEAD + "name=evil\ndisk_count=100000000\nnic_count=0\n",
                        "disk_count"),
    "not ini": ("\x00\x01garbage", "config"),
}


@pytest.mark.parametrize("case", list(HOSTILE_CONFIGS))
def test_import_refuses_hostile_config_ini(cluster: E2ECluster, case: str) -> None:
    text, field = HOSTILE_CONFIGS[case]
    res = import_planted(cluster, "evil", {constants.EXPORT_CONF_FILE: text.encode(),
                                           "disk0": b"\0" * 4096})
    assert res.returncode != 0
    assert field in res.stderr, res.stderr
    out = cluster.gnt("gnt-instance", "list", "--no-headers", "-o", "name").stdout
    assert "evil-copy" not in out


@settings(max_examples=scaled(300, 10000), deadline=None)
@given(text=st.text(max_size=400) | st.lists(
    st.sampled_from(["[export]", "[instance]", "version=0", "name=x", "disk_count=1",
                     "disk0_dump=../x", "disk0_size=-1", "nic_count=1", "nic0_mac=zz",
                     "disk_count=99999999999", "os=", "[hypervisor]", "kernel_path=/x",
                     "tags=a b", "memory=-5", "disk0_size=1"]), max_size=14).map("\n".join))
def test_exportconf_parse_gives_typed_errors(text: str) -> None:
    FUZZED["exportconf"] += 1
    try:
        info = exportconf.parse(text)
    except errors.GenericError:
        return
    for disk in info.disks:
        # no dump: a blank disk; a dump stays below the export directory
        if disk.dump is not None:
            parts = disk.dump.split("/")
            assert not disk.dump.startswith("/") and all(p not in ("", ".", "..")
                                                         for p in parts)


def test_daemons_survived_and_report(cluster: E2ECluster) -> None:
    """Runs last in this module: both daemons still serve after all of the above."""
    with client(cluster) as cl:
        assert cl.query_cluster_info()["cluster_name"]
    status, body = rpc_post(cluster, "/version", b"[]")
    assert status == 200 and body == [True, constants.PROTOCOL_VERSION]
    assert cluster.is_running(constants.MASTERD, cluster.master)
    assert cluster.is_running(constants.NODED, cluster.master)
    print(f"\ninputs fuzzed: {FUZZED}")
