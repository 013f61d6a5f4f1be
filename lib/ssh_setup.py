"""Master side of "node add over SSH": hand a new node its certificates and start noded.

One SSH session runs :data:`REMOTE_COMMAND` on the node and feeds it the join
request (certificate, key, CA, address) as JSON on stdin, so secrets never
appear on a command line.  Host keys are trusted on first use and recorded in
a known_hosts file under the cluster's data directory; a changed key is
refused, since it may mean someone else answers for the node.  The SSH
library is asyncssh; the master calls this from a worker thread, which gets an
event loop of its own for the duration of the call.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import asyncssh

from ganeti import bootstrap, errors, pathutils
from ganeti.config import ConfigStore

REMOTE_COMMAND: Final = "ganeti-prepare-node-join"
# Private key file to log in with; without it the user's default keys and agent
SSH_KEY_ENV: Final = "GANETI_SSH_KEY"
KNOWN_HOSTS_NAME: Final = "known_hosts"
DEFAULT_SSH_PORT: Final = 22
CONNECT_TIMEOUT: Final = 30.0
# The remote side waits up to 30 s for the daemon to listen, plus restarts
COMMAND_TIMEOUT: Final = 180.0

FeedbackFn = Callable[[str], None]


def known_hosts_file(paths: pathutils.Paths) -> Path:
    return paths.data_dir / KNOWN_HOSTS_NAME


def host_pattern(address: str, ssh_port: int) -> str:
    """The known_hosts host field OpenSSH uses for this address and port."""
    return address if ssh_port == DEFAULT_SSH_PORT else f"[{address}]:{ssh_port}"


def known_host_keys(path: Path, address: str, ssh_port: int) -> list[asyncssh.SSHKey]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise errors.OpPrereqError(f"Cannot read known hosts file {path}: {err}",
                                   errors.ECODE_ENVIRON) from None
    port = None if ssh_port == DEFAULT_SSH_PORT else ssh_port
    try:
        matched = asyncssh.import_known_hosts(text).match(address, address, port)
    except (ValueError, asyncssh.KeyImportError) as err:
        raise errors.OpPrereqError(f"Known hosts file {path} is corrupt: {err}",
                                   errors.ECODE_ENVIRON) from None
    # the address matches both as host name and as address: drop the repeats
    return list({key.public_data: key for key in matched[0]}.values())


def record_host_key(path: Path, address: str, ssh_port: int, key: asyncssh.SSHKey) -> None:
    # OpenSSH's format; the key's own comment is dropped
    key_type, key_data = key.export_public_key("openssh").decode("ascii").split()[:2]
    line = f"{host_pattern(address, ssh_port)} {key_type} {key_data}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "a", encoding="ascii") as handle:
        handle.write(line)


def describe_key(key: asyncssh.SSHKey) -> str:
    return f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"


class _HostKeyPolicy(asyncssh.SSHClient):
    """Trust on first use: called only for keys not already in known_hosts."""

    def __init__(self, known: list[asyncssh.SSHKey]) -> None:
        self.known = known
        self.new_key: asyncssh.SSHKey | None = None
        self.rejected_key: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        if self.known:
            self.rejected_key = key
            return False
        self.new_key = key
        return True


def build_request(cluster_name: str, node_name: str, files: bootstrap.NodeFiles,
                  address: str, port: int) -> dict[str, Any]:
    """The JSON document ``ganeti-prepare-node-join`` reads on stdin."""
    return {"cluster_name": cluster_name, "node_name": node_name,
            "node_cert": files.node_cert_pem, "node_key": files.node_key_pem,
            "ca_cert": files.ca_cert_pem, "bind": address, "port": port,
            "start_daemon": True}


def install_node(paths: pathutils.Paths, name: str, address: str, port: int, user: str,
                 ssh_port: int, feedback_fn: FeedbackFn, *,
                 cluster_name: str | None = None,
                 timeout: float = COMMAND_TIMEOUT) -> None:
    """Install ``name``'s certificates over SSH and leave its daemon listening on
    ``address:port``, so that ``node_join.check_node_daemon`` can reach it.

    Connection and authentication problems raise OpPrereqError (nothing was
    changed on the node); a failure of the remote tool raises OpExecError.
    """
    if cluster_name is None:
        cluster_name = ConfigStore(paths.cluster_conf_file).get_cluster_name()
    files = bootstrap.prepare_node_files(paths, name, [address])
    request = json.dumps(build_request(cluster_name, name, files, address, port))
    asyncio.run(_install(paths, name, address, user, ssh_port, request, feedback_fn,
                         timeout))


def _connect_options(address: str, user: str, ssh_port: int,
                     known: list[asyncssh.SSHKey]) -> asyncssh.SSHClientConnectionOptions:
    key_file = os.environ.get(SSH_KEY_ENV)
    extra: dict[str, Any] = {}
    if key_file:
        extra = {"client_keys": [key_file], "agent_path": None}
    try:
        return asyncssh.SSHClientConnectionOptions(
            username=user, port=ssh_port, known_hosts=(known, [], []), config=None,
            connect_timeout=CONNECT_TIMEOUT, login_timeout=CONNECT_TIMEOUT, **extra)
    except (OSError, ValueError, asyncssh.KeyImportError) as err:
        raise errors.OpPrereqError(f"Cannot load the SSH key to log in to {address}:{ssh_port}"
                                   f" with: {err}", errors.ECODE_ENVIRON) from None


async def _connect(paths: pathutils.Paths, address: str, user: str,
                   ssh_port: int, feedback_fn: FeedbackFn) -> asyncssh.SSHClientConnection:
    """Log in, applying the trust-on-first-use host key policy."""
    hosts_file = known_hosts_file(paths)
    known = known_host_keys(hosts_file, address, ssh_port)
    policy = _HostKeyPolicy(known)
    options = _connect_options(address, user, ssh_port, known)
    where = f"{user}@{address}:{ssh_port}"
    try:
        conn = await asyncssh.connect(address, client_factory=lambda: policy,
                                      options=options)
    except asyncssh.HostKeyNotVerifiable as err:
        if policy.rejected_key is None:
            raise errors.OpPrereqError(f"Host key of {address}:{ssh_port} not accepted: "
                                       f"{err.reason}", errors.ECODE_ENVIRON) from None
        expected = ", ".join(describe_key(k) for k in known)
        raise errors.OpPrereqError(
            f"The SSH host key of {address}:{ssh_port} has CHANGED: it presented"
            f" {describe_key(policy.rejected_key)}, {hosts_file} expects {expected}."
            " Someone may be impersonating the node; if it was reinstalled, remove its"
            " entry from that file", errors.ECODE_ENVIRON) from None
    except asyncssh.PermissionDenied as err:
        raise errors.OpPrereqError(f"SSH authentication as {where} failed: {err.reason}",
                                   errors.ECODE_ENVIRON) from None
    except (OSError, asyncssh.Error) as err:  # TimeoutError is an OSError
        detail = err.reason if isinstance(err, asyncssh.Error) else (str(err) or "timeout")
        raise errors.OpPrereqError(f"Cannot connect over SSH to {where}: {detail}",
                                   errors.ECODE_ENVIRON) from None
    if policy.new_key is not None:
        # only now: the server has proven it holds the key, and we logged in
        record_host_key(hosts_file, address, ssh_port, policy.new_key)
        feedback_fn(f"Permanently added the SSH host key of {address}:{ssh_port}"
                    f" ({describe_key(policy.new_key)}) to {hosts_file}")
    return conn


async def _install(paths: pathutils.Paths, name: str, address: str, user: str,
                   ssh_port: int, request: str, feedback_fn: FeedbackFn,
                   timeout: float) -> None:
    where = f"{user}@{address}:{ssh_port}"
    async with await _connect(paths, address, user, ssh_port, feedback_fn) as conn:
        try:
            async with asyncio.timeout(timeout):
                failure, stderr = await _run_remote(conn, name, request, feedback_fn)
        except TimeoutError:
            raise errors.OpExecError(f"{REMOTE_COMMAND} on {name} ({address}) did not finish"
                                     f" within {timeout:.0f}s") from None
        except asyncssh.Error as err:
            raise errors.OpExecError(f"SSH session to {where} failed while running"
                                     f" {REMOTE_COMMAND}: {err.reason}") from None
    if failure is not None:
        raise errors.OpExecError(f"{REMOTE_COMMAND} on {name} ({address}) failed ({failure}):"
                                 f" {stderr.strip() or 'no error output'}")
    for line in stderr.splitlines():
        feedback_fn(f"{name}: {line}")


async def _run_remote(conn: asyncssh.SSHClientConnection, name: str, request: str,
                      feedback_fn: FeedbackFn) -> tuple[str | None, str]:
    """Run the remote tool, relaying its stdout as it comes.

    Returns ``(failure, stderr)`` where ``failure`` is None on success.
    """
    process = await conn.create_process(REMOTE_COMMAND, encoding="utf-8")
    process.stdin.write(request)
    process.stdin.write_eof()
    stderr_task = asyncio.ensure_future(process.stderr.read())
    async for line in process.stdout:
        feedback_fn(f"{name}: {line.rstrip()}")
    stderr = await stderr_task
    result = await process.wait()
    if result.exit_signal is not None:
        return f"killed by signal {result.exit_signal[0]}", stderr
    if result.exit_status is None:
        return "no exit status", stderr
    return (None if result.exit_status == 0 else f"exit code {result.exit_status}"), stderr
