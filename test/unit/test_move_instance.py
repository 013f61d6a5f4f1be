"""move-instance without clusters: argument errors and the import opcode it builds."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ganeti import constants
from ganeti.tools import move_instance

DATA = {
    "disk_template": "file", "os": "", "hypervisor": "process", "config_state": "up",
    "disks": [{"size": 8, "mode": "rw", "name": None}, {"size": 2, "mode": "ro",
                                                         "name": "data"}],
    # Ganeti's NIC tuples: name, uuid, ip, mac, mode, link, vlan, network, netinfo
    "nics": [[None, "5e1c", None, "aa:00:00:00:00:01", "bridged", "br0", "", None, None]],
    "be_instance": {"maxmem": 256}, "hv_instance": {"blocks": 64}, "os_instance": {},
    "tags": ["web"],
}
PREPARED = {"handshake": [0, "h" * 40, "ab"], "x509_key_name": ["k", "d", "s"],
            "x509_ca": "X-Ganeti-Signature: ab/cd\n"}


def _opts(*argv: str) -> argparse.Namespace:
    return move_instance.build_parser().parse_args([*argv, "inst1"])


def test_import_opcode_carries_the_source_instance() -> None:
    op = move_instance.import_opcode(DATA, _opts("-n", "node2"), PREPARED, "inst1")
    data = op.to_dict()
    assert data["mode"] == constants.INSTANCE_REMOTE_IMPORT
    assert data["instance_name"] == "inst1" and data["source_instance_name"] == "inst1"
    assert data["disks"] == [{"size": 8, "mode": "rw"}, {"size": 2, "mode": "ro",
                                                          "name": "data"}]
    assert data["nics"] == [{"mac": "aa:00:00:00:00:01", "mode": "bridged", "link": "br0"}]
    assert data["beparams"] == {"maxmem": 256} and data["hvparams"] == {"blocks": 64}
    assert data["os_type"] is None and data["tags"] == ["web"] and data["pnode"] == "node2"
    assert data["start"] is True          # the source was up
    assert data["source_handshake"] == PREPARED["handshake"]
    assert data["source_x509_ca"] == PREPARED["x509_ca"]
    op = move_instance.import_opcode(DATA, _opts("--no-start", "--dest-instance-name", "b"),
                                     PREPARED, "inst1")
    assert op.to_dict()["start"] is False and op.to_dict()["instance_name"] == "b"


@pytest.mark.parametrize("argv, message", [
    ((), "--src-root or --src-socket is required"),
    (("--src-root", "/a"), "--dest-root or --dest-socket is required"),
    (("--src-root", "/a", "--dest-root", "/a"), "the same cluster"),
    (("--src-socket", "/s", "--dest-socket", "/d", "--dest-instance-name", "x", "other"),
     "needs exactly one instance"),
    (("--src-root", "/nonexistent/a", "--dest-root", "/nonexistent/b"),
     "Master daemon is not running"),
])
def test_bad_arguments_fail_clearly(argv: tuple[str, ...], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert move_instance.main([*argv, "inst1"]) == 1
    assert message in capsys.readouterr().err


def test_socket_paths_come_from_the_roots(tmp_path: Path) -> None:
    path = move_instance._socket_of(str(tmp_path), None, "src")
    assert path.startswith(str(tmp_path)) and path.endswith("ganeti-master")
    assert move_instance._socket_of(None, "/x/sock", "dest") == "/x/sock"
