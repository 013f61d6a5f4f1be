"""The guest-agent layer of a kvm quiesce: freeze before QMP stop, thaw after cont.

A fake qemu-guest-agent (a thread on a unix socket, speaking the agent's
protocol) takes the place of QEMU's ``qga.sock`` of a real qemu with no
guest, so QMP stop/cont are real and only the agent is played.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti import errors
from ganeti.hypervisor import base, hv_kvm, procutil
from ganeti.hypervisor.hv_kvm import KvmHypervisor
from ganeti.hypervisor.qga import AgentUnavailable, QgaClient
from ganeti.objects import Instance
from ganeti.pathutils import Paths


class FakeAgent:
    """Answers guest-sync-delimited / fsfreeze like qemu-ga; records what it got."""

    def __init__(self, path: Path, freeze: Callable[[], Any] = lambda: 2,
                 answer: bool = True, stale: bytes = b"") -> None:
        self.path = path
        self.freeze = freeze
        self.answer = answer
        self.stale = stale
        self.commands: list[tuple[str, float]] = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # xdist's tmp paths can pass sun_path's 108 bytes: bind through the dir's fd
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.server.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.close()

    def names(self) -> list[str]:
        return [name for name, _when in self.commands]

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.server.accept()
            except OSError:
                return
            with conn:
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        buffer = b""
        if self.stale:
            conn.sendall(self.stale)       # what an older session left in the channel
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line.lstrip(b"\xff"))
                name = request["execute"]
                self.commands.append((name, time.monotonic()))
                if not self.answer:
                    continue
                conn.sendall(self._reply(name, request.get("arguments") or {}))

    def _reply(self, name: str, args: dict[str, Any]) -> bytes:
        if name == "guest-sync-delimited":
            return b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n"
        if name == "guest-fsfreeze-freeze":
            try:
                value = self.freeze()
            except RuntimeError as err:
                return json.dumps({"error": {"class": "GenericError",
                                             "desc": str(err)}}).encode() + b"\n"
            return json.dumps({"return": value}).encode() + b"\n"
        if name == "guest-fsfreeze-thaw":
            return json.dumps({"return": 2}).encode() + b"\n"
        return json.dumps({"error": {"desc": f"unknown {name}"}}).encode() + b"\n"


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "qga.sock"


def test_client_syncs_past_stale_output(sock_path: Path) -> None:
    agent = FakeAgent(sock_path, stale=b'{"return": 12345}\n\xff{"return": 99}\n')
    try:
        with QgaClient(sock_path, timeout=5) as client:
            assert client.execute("guest-fsfreeze-freeze") == 2
        assert agent.names() == ["guest-sync-delimited", "guest-fsfreeze-freeze"]
    finally:
        agent.close()


def test_client_times_out_when_nobody_answers(sock_path: Path) -> None:
    agent = FakeAgent(sock_path, answer=False)
    try:
        started = time.monotonic()
        with pytest.raises(AgentUnavailable, match="No answer"):
            QgaClient(sock_path, timeout=0.3).connect()
        assert time.monotonic() - started < 30
    finally:
        agent.close()
    with pytest.raises(AgentUnavailable, match="No guest agent channel"):
        QgaClient(sock_path.with_name("missing.sock")).connect()


def test_agent_errors_are_hypervisor_errors(sock_path: Path) -> None:
    def refuse() -> Any:
        raise RuntimeError("fsfreeze is disabled")
    agent = FakeAgent(sock_path, freeze=refuse)
    try:
        with QgaClient(sock_path, timeout=5) as client, \
                pytest.raises(errors.HypervisorError, match="fsfreeze is disabled"):
            client.execute("guest-fsfreeze-freeze")
    finally:
        agent.close()


# --- with a real qemu ------------------------------------------------------------------

needs_qemu = pytest.mark.skipif(
    shutil.which(hv_kvm.QEMU_BINARY) is None,
    reason=f"{hv_kvm.QEMU_BINARY} is not installed (Debian package qemu-system-x86)")


@pytest.fixture
def kvm(tmp_path: Path) -> Iterator[KvmHypervisor]:
    paths = Paths.for_root(tmp_path / "node")
    hyp = KvmHypervisor(paths)
    disk = tmp_path / "disk0.img"
    disk.write_bytes(b"\0" * (1 << 20))
    hyp.start_instance(Instance(name="vm1", primary_node="n1", hypervisor="kvm",
                                beparams={"maxmem": 64, "vcpus": 1}), [disk])
    yield hyp
    hyp.stop_instance("vm1", timeout=0, force=True)
    assert procutil.find_processes(str(paths.root)) == [], "qemu processes leaked"


def _agent_instead_of_qemus(kvm: KvmHypervisor, **kwargs: Any) -> FakeAgent:
    path = kvm.qga_socket("vm1")
    assert path.exists(), "qemu was started without the guest agent channel"
    path.unlink()                           # qemu keeps listening on its own socket
    return FakeAgent(path, **kwargs)


def _paused(kvm: KvmHypervisor) -> bool:
    session = kvm.quiesce_session("vm1")
    assert session is not None
    return bool(session.execute("query-status")["status"] == "paused")


@needs_qemu
def test_frozen_around_the_pause(kvm: KvmHypervisor) -> None:
    agent = _agent_instead_of_qemus(kvm)
    try:
        with kvm.quiesce("vm1") as held:
            assert _paused(kvm)
            inside = time.monotonic()
        assert held.level == base.LEVEL_FROZEN and held.notes == []
        assert held.frozen_ms is not None and held.frozen_ms >= held.pause_ms > 0
        assert agent.names() == ["guest-sync-delimited", "guest-fsfreeze-freeze",
                                 "guest-fsfreeze-thaw"]
        (_s, _t0), (_f, frozen_at), (_th, thawed_at) = agent.commands
        assert frozen_at < inside < thawed_at
        with kvm.qmp("vm1") as client:
            assert client.execute("query-status")["status"] == "running"
    finally:
        agent.close()


@needs_qemu
def test_failed_freeze_is_thawed_and_crash_consistent(kvm: KvmHypervisor) -> None:
    def refuse() -> Any:
        raise RuntimeError("fsfreeze is disabled")
    agent = _agent_instead_of_qemus(kvm, freeze=refuse)
    try:
        with kvm.quiesce("vm1") as held:
            assert _paused(kvm)
        assert held.level == base.LEVEL_CRASH and held.frozen_ms is None
        assert any("could not freeze" in note for note in held.notes), held.notes
        # a freeze that failed half-way may have frozen some: thawed to be sure
        assert agent.names()[-1] == "guest-fsfreeze-thaw"
    finally:
        agent.close()


@needs_qemu
def test_hung_agent_costs_only_its_timeout(kvm: KvmHypervisor) -> None:
    agent = _agent_instead_of_qemus(kvm, answer=False)
    try:
        with kvm.quiesce("vm1") as held:
            assert _paused(kvm)
        assert held.level == base.LEVEL_CRASH
        assert held.notes == [f"no guest agent answered within {hv_kvm.AGENT_TIMEOUT:g}s"]
        assert agent.names() == ["guest-sync-delimited"]     # no freeze without a sync
    finally:
        agent.close()


@needs_qemu
def test_thawed_when_the_snapshot_fails(kvm: KvmHypervisor) -> None:
    agent = _agent_instead_of_qemus(kvm)
    try:
        with pytest.raises(OSError), kvm.quiesce("vm1"):
            raise OSError("clone failed")
        assert agent.names()[-1] == "guest-fsfreeze-thaw"
        with kvm.qmp("vm1") as client:
            assert client.execute("query-status")["status"] == "running"
    finally:
        agent.close()
