"""Node join over SSH: the request format, the node-side tool and known_hosts handling."""

from __future__ import annotations

import io
import json
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from ganeti import bootstrap, constants, crypto, daemon, errors, pathutils, ssh_setup
from ganeti.tools import prepare_node_join as pnj


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return crypto.generate_cluster_ca("cluster.test", 30)


@pytest.fixture(scope="module")
def other_ca() -> tuple[str, str]:
    return crypto.generate_cluster_ca("other.test", 30)


def _files(ca: tuple[str, str], name: str = "node2", ip: str = "127.0.77.2"
           ) -> bootstrap.NodeFiles:
    cert, key = crypto.generate_node_certificate(ca[0], ca[1], name, [ip], 30)
    return bootstrap.NodeFiles(cert, key, ca[0])


def _request(ca: tuple[str, str], **changes: Any) -> dict[str, Any]:
    doc = ssh_setup.build_request("cluster.test", "node2", _files(ca), "127.0.77.2", 1811)
    doc["start_daemon"] = False
    doc.update(changes)
    return doc


def _run_tool(doc: Any, *args: str) -> tuple[int, str, str]:
    stdin = io.StringIO(doc if isinstance(doc, str) else json.dumps(doc))
    out, err = io.StringIO(), io.StringIO()
    code = pnj.main(list(args), stdin=stdin, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def node_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pathutils.Paths:
    root = tmp_path / "node"
    monkeypatch.setenv(pathutils.ROOT_ENV, str(root))
    return pathutils.Paths.for_root(root)


def test_master_request_is_accepted_by_node_tool(ca: tuple[str, str]) -> None:
    files = _files(ca)
    doc = ssh_setup.build_request("cluster.test", "node2", files, "127.0.77.2", 1900)
    request = pnj.parse_request(json.dumps(doc))
    assert request.node_name == "node2"
    assert request.cluster_name == "cluster.test"
    assert (request.bind, request.port, request.start_daemon) == ("127.0.77.2", 1900, True)
    assert request.files == files


def test_start_daemon_defaults_to_true(ca: tuple[str, str]) -> None:
    doc = _request(ca)
    del doc["start_daemon"]
    assert pnj.parse_request(json.dumps(doc)).start_daemon is True


@pytest.mark.parametrize(("doc", "fragment"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object, not list"),
    ({"node_name": None}, "'node_name' is missing"),
    ({"node_name": "  "}, "'node_name' is missing or not a non-empty string"),
    ({"ca_cert": 5}, "'ca_cert'"),
    ({"port": 0}, "'port' must be an integer"),
    ({"port": 70000}, "'port' must be an integer"),
    ({"port": True}, "'port' must be an integer"),
    ({"port": "1811"}, "'port' must be an integer"),
    ({"start_daemon": "yes"}, "'start_daemon' must be a boolean"),
    ({"bind": "node2.example"}, "'bind' is not an IP address"),
    ({"node_key": "garbage"}, "'node_key' is not an unencrypted PEM key"),
])
def test_invalid_requests_are_rejected(ca: tuple[str, str], doc: Any, fragment: str) -> None:
    text = doc if isinstance(doc, str) else json.dumps(_request(ca, **doc))
    with pytest.raises(pnj.InvalidRequest, match=fragment):
        pnj.parse_request(text)


def test_missing_field_is_named(ca: tuple[str, str]) -> None:
    doc = _request(ca)
    del doc["ca_cert"]
    with pytest.raises(pnj.InvalidRequest, match="'ca_cert' is missing"):
        pnj.parse_request(json.dumps(doc))


def test_certificate_of_another_ca_is_rejected(ca: tuple[str, str],
                                               other_ca: tuple[str, str]) -> None:
    foreign = _files(other_ca)
    with pytest.raises(pnj.InvalidRequest, match="'node_cert' is not usable"):
        pnj.parse_request(json.dumps(_request(ca, node_cert=foreign.node_cert_pem)))


def test_certificate_for_another_node_is_rejected(ca: tuple[str, str]) -> None:
    node3 = _files(ca, name="node3")
    doc = _request(ca, node_cert=node3.node_cert_pem, node_key=node3.node_key_pem)
    with pytest.raises(pnj.InvalidRequest, match="not to node node2"):
        pnj.parse_request(json.dumps(doc))


def test_key_of_another_certificate_is_rejected(ca: tuple[str, str]) -> None:
    doc = _request(ca, node_key=_files(ca).node_key_pem)
    with pytest.raises(pnj.InvalidRequest, match="does not belong to the certificate"):
        pnj.parse_request(json.dumps(doc))


def test_tool_installs_files_under_ganeti_root(ca: tuple[str, str],
                                               node_root: pathutils.Paths) -> None:
    doc = _request(ca)
    code, out, err = _run_tool(doc)
    assert (code, err) == (0, "")
    assert "node2" in out and str(node_root.data_dir) in out
    pem = node_root.node_cert_file
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert doc["node_key"].strip() in pem.read_text()
    assert crypto.load_certificate_file(pem).subject == \
        crypto.load_certificate(doc["node_cert"]).subject
    assert node_root.cluster_ca_file.read_text() == doc["ca_cert"]
    # the installed pair is what a node daemon's TLS context loads
    crypto.server_ssl_context(pem, node_root.cluster_ca_file)


def test_invalid_input_exits_nonzero_without_writing(node_root: pathutils.Paths) -> None:
    code, out, err = _run_tool('{"node_name": "node2"}')
    assert code == pnj.EXIT_INVALID
    assert "invalid request" in err and "'cluster_name'" in err
    assert out == ""
    assert not node_root.node_cert_file.exists()


def test_oversized_input_is_refused(node_root: pathutils.Paths) -> None:
    code, _, err = _run_tool(" " * (pnj.MAX_REQUEST_SIZE + 1))
    assert code == pnj.EXIT_INVALID
    assert "larger than" in err


def test_certificate_of_different_ca_is_not_overwritten(
        ca: tuple[str, str], other_ca: tuple[str, str], node_root: pathutils.Paths) -> None:
    _files(other_ca).install(node_root)
    before = node_root.node_cert_file.read_text()
    code, out, err = _run_tool(_request(ca))
    assert code == pnj.EXIT_FAILURE
    assert "different CA" in err and "ganeti-ca.other.test" in err and "--force" in err
    assert out == ""
    assert node_root.node_cert_file.read_text() == before


def test_force_replaces_certificate_of_different_ca(
        ca: tuple[str, str], other_ca: tuple[str, str], node_root: pathutils.Paths) -> None:
    _files(other_ca).install(node_root)
    doc = _request(ca)
    code, _, err = _run_tool(doc, "--force")
    assert (code, err) == (0, "")
    crypto.verify_certificate(node_root.node_cert_file.read_text(), ca[0])


def test_certificate_of_same_ca_is_replaced(ca: tuple[str, str],
                                            node_root: pathutils.Paths) -> None:
    _files(ca).install(node_root)
    doc = _request(ca)
    code, _, err = _run_tool(doc)
    assert (code, err) == (0, "")
    assert doc["node_key"].strip() in node_root.node_cert_file.read_text()


def test_unreadable_existing_certificate_needs_force(ca: tuple[str, str],
                                                     node_root: pathutils.Paths) -> None:
    bootstrap.ensure_dirs(node_root)
    node_root.node_cert_file.write_text("junk")
    code, _, err = _run_tool(_request(ca))
    assert code == pnj.EXIT_FAILURE and "unreadable" in err
    assert node_root.node_cert_file.read_text() == "junk"


def test_find_noded_prefers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pnj.NODED_ENV, "/opt/x/noded")
    assert pnj.find_noded("/nowhere/tools/prepare-node-join") == ["/opt/x/noded"]


def test_find_noded_in_source_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pnj.NODED_ENV, raising=False)
    (tmp_path / "tools").mkdir()
    (tmp_path / "daemons").mkdir()
    tool = tmp_path / "tools" / "prepare-node-join"
    tool.write_text("")
    (tmp_path / "daemons" / constants.NODED).write_text("")
    link = tmp_path / "bin" / "ganeti-prepare-node-join"
    link.parent.mkdir()
    link.symlink_to(tool)
    assert pnj.find_noded(str(link)) == [sys.executable,
                                         str(tmp_path / "daemons" / constants.NODED)]


def test_find_noded_on_path_or_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pnj.NODED_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pnj.JoinRefused, match=pnj.NODED_ENV):
        pnj.find_noded(str(tmp_path / "tool"))
    noded = tmp_path / constants.NODED
    noded.write_text("#!/bin/sh\n")
    noded.chmod(0o755)
    assert pnj.find_noded(str(tmp_path / "tool")) == [str(noded)]


def test_running_daemon_is_detected_by_its_pid_file_lock(tmp_path: Path) -> None:
    paths = pathutils.Paths.for_root(tmp_path)
    assert pnj.running_daemon_pid(paths) is None
    pid_file = daemon.PidFile(paths.pid_file(constants.NODED))
    pid_file.acquire()
    try:
        pid_file.write_pid(4242)
        assert pnj.running_daemon_pid(paths) == 4242
    finally:
        pid_file.release()
    assert pnj.running_daemon_pid(paths) is None


def test_wait_for_port_times_out_on_closed_port() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(pnj.JoinRefused, match="does not accept connections"):
            pnj.wait_for_port("127.0.0.1", port, timeout=0.3)


def test_known_hosts_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    key = asyncssh.generate_private_key("ssh-ed25519")
    other = asyncssh.generate_private_key("ssh-ed25519")
    assert ssh_setup.known_host_keys(path, "127.0.77.9", 2222) == []
    ssh_setup.record_host_key(path, "127.0.77.9", 2222, key)
    ssh_setup.record_host_key(path, "127.0.77.8", 22, other)
    assert path.read_text().splitlines()[0].startswith("[127.0.77.9]:2222 ssh-ed25519 ")
    assert path.read_text().splitlines()[1].startswith("127.0.77.8 ssh-ed25519 ")
    found = ssh_setup.known_host_keys(path, "127.0.77.9", 2222)
    assert [k.get_fingerprint() for k in found] == [key.get_fingerprint()]
    assert [k.get_fingerprint() for k in ssh_setup.known_host_keys(path, "127.0.77.8", 22)] \
        == [other.get_fingerprint()]
    assert ssh_setup.known_host_keys(path, "127.0.77.7", 2222) == []


def test_corrupt_known_hosts_is_an_environment_error(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("127.0.77.9\n")  # no key at all
    with pytest.raises(errors.OpPrereqError) as info:
        ssh_setup.known_host_keys(path, "127.0.77.9", 22)
    assert info.value.ecode == errors.ECODE_ENVIRON


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def test_unreachable_ssh_port_names_host_and_port(tmp_path: Path) -> None:
    paths = pathutils.Paths.for_root(tmp_path / "master")
    bootstrap.init_cluster(paths, "cluster.test", "node1", "127.0.77.1")
    port = _free_port("127.0.0.1")
    with pytest.raises(errors.OpPrereqError) as info:
        ssh_setup.install_node(paths, "node2", "127.0.0.1", 1811, "root", port,
                               lambda _msg: None)
    assert f"127.0.0.1:{port}" in info.value.args[0]
    assert info.value.ecode == errors.ECODE_ENVIRON


def test_unreadable_client_key_is_an_environment_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = pathutils.Paths.for_root(tmp_path / "master")
    bootstrap.init_cluster(paths, "cluster.test", "node1", "127.0.77.1")
    monkeypatch.setenv(ssh_setup.SSH_KEY_ENV, str(tmp_path / "missing_key"))
    with pytest.raises(errors.OpPrereqError) as info:
        ssh_setup.install_node(paths, "node2", "127.0.0.1", 1811, "root", 22,
                               lambda _msg: None)
    assert "SSH key" in info.value.args[0]
    assert info.value.ecode == errors.ECODE_ENVIRON


def test_master_runs_the_node_tool_by_its_program_name() -> None:
    assert ssh_setup.REMOTE_COMMAND == pnj.PROG


def test_daemon_start_failure_is_reported(ca: tuple[str, str], node_root: pathutils.Paths,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-noded"
    fake.write_text('#!/bin/sh\necho "cannot listen on $2:$4" >&2\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv(pnj.NODED_ENV, str(fake))
    code, out, err = _run_tool(_request(ca, start_daemon=True))
    assert code == pnj.EXIT_FAILURE
    assert "failed to start: cannot listen on 127.0.77.2:1811" in err
    assert "Installed" in out  # the files are in place; only the daemon failed
