"""Remote export LUs on two in-process clusters (real LUs, procedures and TLS streams).

Each cluster is a loopback ``Env`` (test/support/loopback.py: own config and
node roots, loopback RPC); the destination's LU runs in a thread because it
waits for the source's data, exactly as the two masters would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.loopback import (
    SECRET,
    Env,
    Import,
    digest,
    fill_source,
    remote_export_op,
    remote_pair,
)

from ganeti import errors, opcodes
from ganeti.backend import x509
from ganeti.backup import remote


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Env, Env]:
    return remote_pair(tmp_path)


def test_remote_move_copies_every_disk_and_removes_the_source(pair: tuple[Env, Env]) -> None:
    src, dst = pair
    digests = fill_source(src)
    prepared = src.run(opcodes.OpBackupPrepare.create(instance_name="inst1", mode="remote"))
    assert set(prepared) == {"handshake", "x509_key_name", "x509_ca"}
    key_name = prepared["x509_key_name"][0]
    assert (x509.x509_dir(src.roots["node2"].paths) / key_name / x509.KEY_FILE).is_file()
    imp = Import(src, dst, prepared)
    entry = imp.endpoints()
    assert len(entry["disks"]) == 2
    assert [d[0] for d in entry["disks"]] == ["127.0.0.3", "127.0.0.3"]
    assert src.run(remote_export_op(prepared, entry, remove_instance=True)) == (True, [True, True])
    assert imp.join() == ["node3"]
    moved = dst.inst("moved")
    assert [d.size for d in moved.disks] == [4, 2] and moved.disks[1].name == "data"
    assert [digest(d.logical_id[1]) for d in moved.disks] == digests
    assert src.cfg.get_instance_info_by_name("inst1") is None
    assert src.disk_files() == []
    # the destination's key is removed after the import; hooks saw the remote mode
    assert list(x509.x509_dir(dst.roots["node3"].paths).iterdir()) == []
    export_hooks = [h for h in src.rpc.hooks if h["hpath"] == "instance-export"]
    assert export_hooks and all(h["env"]["GANETI_EXPORT_MODE"] == "remote"
                                for h in export_hooks)
    assert {h["node"] for h in export_hooks} == {"node1", "node2"}


def test_failed_stream_leaves_nothing_at_the_destination(pair: tuple[Env, Env]) -> None:
    src, dst = pair
    digests = fill_source(src)
    prepared = src.run(opcodes.OpBackupPrepare.create(instance_name="inst1", mode="remote"))
    imp = Import(src, dst, prepared)
    entry = imp.endpoints()
    host, port, _magic, _hmac, _salt = entry["disks"][1]
    bad = {**entry, "disks": [entry["disks"][0],
                              remote.sign_disk_info(SECRET, 1, host, port, "z" * 32)]}
    with pytest.raises(errors.OpExecError) as info:
        src.run(remote_export_op(prepared, bad, remove_instance=True))
    text = info.value.args[0]
    assert text.startswith("Export failed, errors in disk export: disk(s) 1")
    assert "Wrong stream magic" in text
    result = imp.join()
    assert isinstance(result, errors.OpExecError) and "disk/1" in result.args[0]
    assert dst.cfg.get_instance_info_by_name("moved") is None
    assert dst.disk_files("node3") == []
    # the source kept its instance and data (the failed export removed nothing)
    assert [digest(d.logical_id[1]) for d in src.inst("inst1").disks] == digests


def test_opcode_arguments_are_checked(pair: tuple[Env, Env]) -> None:
    src, dst = pair
    fill_source(src)
    prepared = src.run(opcodes.OpBackupPrepare.create(instance_name="inst1", mode="remote"))
    entry = {"disks": [], "x509_ca": prepared["x509_ca"]}
    for extra, message in (({"target_node": "node2"}, "target_node: in remote mode"),
                           ({"x509_key_name": None}, "x509_key_name is required"),
                           ({"long_sleep": True, "shutdown": False}, "needs shutdown"),
                           ({"note": "nightly"}, "'note': notes are kept with local")):
        with pytest.raises(errors.OpPrereqError, match=message):
            src.run(remote_export_op(prepared, entry, **extra))
    base = {"instance_name": "x", "mode": "remote-import", "source_handshake": [0, "a", "b"],
            "source_x509_ca": "ca", "source_instance_name": "x", "disks": [{"size": 1}]}
    for change, message in (({"disks": []}, "disks: a remote import needs"),
                            ({"src_node": "node1"}, "src_node/src_path"),
                            ({"source_instance_name": None}, "source_instance_name is")):
        with pytest.raises(errors.OpPrereqError, match=message):
            dst.run(opcodes.OpInstanceCreate.create(**{**base, **change}))
    # the local export path is unchanged
    with pytest.raises(errors.OpPrereqError, match="must be a node name"):
        src.run(opcodes.OpBackupExport.create(instance_name="inst1",
                                              target_node=[["h", 1, "m", "d", "s"]]))
