"""Node add over SSH against a real (in-process) SSH server and a real node daemon.

The SSH server runs each requested command with ``/bin/sh -c`` like sshd, in
an environment that makes it look like another machine: ``GANETI_ROOT`` is the
"remote" node's root and PATH holds ``ganeti-prepare-node-join``.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import socket
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from ganeti import bootstrap, constants, crypto, daemon, errors, node_join, pathutils, ssh_setup

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
USER = "ganeti-test"
WAIT = 60.0


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


class SshServer:
    """An asyncssh server on its own event loop thread, running commands locally."""

    def __init__(self, address: str, host_key: asyncssh.SSHKey,
                 authorized: asyncssh.SSHKey, env: dict[str, str]) -> None:
        self.address = address
        self.host_key = host_key
        self.authorized = authorized
        self.env = env
        self.commands: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncssh.SSHAcceptor | None = None
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        pub = self.authorized.export_public_key().decode("ascii")

        async def listen() -> asyncssh.SSHAcceptor:
            return await asyncssh.create_server(
                asyncssh.SSHServer, self.address, 0, server_host_keys=[self.host_key],
                authorized_client_keys=asyncssh.import_authorized_keys(pub),
                process_factory=self._handle)

        self.server = asyncio.run_coroutine_threadsafe(listen(), self.loop).result(WAIT)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, process: asyncssh.SSHServerProcess[str]) -> None:
        command = process.command or ""
        self.commands.append(command)
        data = await process.stdin.read()
        child = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command, env=self.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await child.communicate(data.encode())
        process.stdout.write(out.decode())
        process.stderr.write(err.decode())
        process.exit(child.returncode or 0)

    def stop(self) -> None:
        async def close() -> None:
            if self.server is not None:
                self.server.close()
                await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(WAIT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


def _stop_noded(paths: pathutils.Paths) -> None:
    pid = daemon.read_pid(paths.pid_file(constants.NODED))
    if pid is None:
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        assert select.select([fd], [], [], WAIT)[0], f"noded {pid} ignored SIGTERM"
    finally:
        os.close(fd)


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.address = f"127.0.77.{random.randint(2, 254)}"
        self.noded_port = _free_port(self.address)
        self.master = pathutils.Paths.for_root(tmp_path / "master")
        bootstrap.init_cluster(self.master, "cluster.test", "node1", "127.0.77.1",
                               noded_port=self.noded_port)
        self.node = pathutils.Paths.for_root(tmp_path / "node2")
        bindir = tmp_path / "bin"
        bindir.mkdir()
        tool = bindir / ssh_setup.REMOTE_COMMAND
        tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" '
                        f'"{REPO / "tools" / "prepare-node-join"}" "$@"\n')
        tool.chmod(0o755)
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin", pathutils.ROOT_ENV: str(self.node.root),
                    "HOME": str(tmp_path), "LANG": "C.UTF-8"}
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key_file = tmp_path / "id_ed25519"
        self.client_key.write_private_key(str(self.client_key_file))
        self.client_key_file.chmod(0o600)
        self.feedback: list[str] = []
        self.server = SshServer(self.address, self.host_key, self.client_key, self.env)

    def install(self) -> None:
        ssh_setup.install_node(self.master, "node2", self.address, self.noded_port, USER,
                               self.server.port, self.feedback.append)


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    s = Setup(tmp_path)
    monkeypatch.setenv(ssh_setup.SSH_KEY_ENV, str(s.client_key_file))
    try:
        s.server.start()
        yield s
    finally:
        s.server.stop()
        _stop_noded(s.node)


def test_install_node_starts_a_daemon_the_master_can_reach(setup: Setup) -> None:
    setup.install()
    assert node_join.check_node_daemon(setup.master, "node2", setup.address,
                                       setup.noded_port) == constants.PROTOCOL_VERSION
    # one command, no secrets on its command line
    assert setup.server.commands == [ssh_setup.REMOTE_COMMAND]
    pem = setup.node.node_cert_file
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    crypto.verify_certificate(pem.read_text(), setup.master.cluster_ca_file.read_text())
    fingerprint = setup.host_key.get_fingerprint()
    added = [m for m in setup.feedback if "Permanently added" in m]
    assert len(added) == 1 and fingerprint in added[0]
    assert any(m.startswith("node2: ") and "running" in m for m in setup.feedback)
    known = ssh_setup.known_host_keys(ssh_setup.known_hosts_file(setup.master),
                                      setup.address, setup.server.port)
    assert [k.get_fingerprint() for k in known] == [fingerprint]

    # a re-add: the key is known now, and the running daemon is replaced
    first_pid = daemon.read_pid(setup.node.pid_file(constants.NODED))
    setup.feedback.clear()
    setup.install()
    assert not any("Permanently added" in m for m in setup.feedback)
    assert any(f"Restarting {constants.NODED} (pid {first_pid})" in m for m in setup.feedback)
    second_pid = daemon.read_pid(setup.node.pid_file(constants.NODED))
    assert second_pid is not None and second_pid != first_pid
    assert node_join.check_node_daemon(setup.master, "node2", setup.address,
                                       setup.noded_port) == constants.PROTOCOL_VERSION


def test_changed_host_key_is_refused(setup: Setup) -> None:
    hosts = ssh_setup.known_hosts_file(setup.master)
    old_key = asyncssh.generate_private_key("ssh-ed25519")
    ssh_setup.record_host_key(hosts, setup.address, setup.server.port, old_key)
    before = hosts.read_text()
    with pytest.raises(errors.OpPrereqError) as info:
        setup.install()
    message = info.value.args[0]
    assert info.value.ecode == errors.ECODE_ENVIRON
    assert "CHANGED" in message and f"{setup.address}:{setup.server.port}" in message
    assert setup.host_key.get_fingerprint() in message
    assert old_key.get_fingerprint() in message
    assert setup.server.commands == []
    assert hosts.read_text() == before


def test_authentication_failure_names_the_host(setup: Setup, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = tmp_path / "stranger_key"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(stranger))
    stranger.chmod(0o600)
    monkeypatch.setenv(ssh_setup.SSH_KEY_ENV, str(stranger))
    with pytest.raises(errors.OpPrereqError) as info:
        setup.install()
    assert info.value.ecode == errors.ECODE_ENVIRON
    assert f"{USER}@{setup.address}:{setup.server.port}" in info.value.args[0]
    assert "authentication" in info.value.args[0]
    assert setup.server.commands == []


def test_remote_tool_failure_surfaces_its_stderr(setup: Setup) -> None:
    other_ca = crypto.generate_cluster_ca("other.test", 30)
    cert, key = crypto.generate_node_certificate(*other_ca, "node2", [setup.address], 30)
    bootstrap.NodeFiles(cert, key, other_ca[0]).install(setup.node)
    with pytest.raises(errors.OpExecError) as info:
        setup.install()
    message = info.value.args[0]
    assert "different CA" in message and "ganeti-ca.other.test" in message
    assert "exit code 1" in message
    assert not setup.node.pid_file(constants.NODED).exists()
    assert setup.node.node_cert_file.read_text().startswith(key.rstrip("\n"))


def test_missing_remote_command_is_reported(setup: Setup) -> None:
    setup.env["PATH"] = "/usr/bin:/bin"
    with pytest.raises(errors.OpExecError) as info:
        setup.install()
    assert ssh_setup.REMOTE_COMMAND in info.value.args[0]
    assert "exit code 127" in info.value.args[0]
