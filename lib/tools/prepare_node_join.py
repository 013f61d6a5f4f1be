"""Node side of "node add over SSH": install the cluster certificates, start noded.

The master runs this program over SSH (``ganeti-prepare-node-join``) and feeds
a JSON document on stdin, so the node's private key never shows up on a command
line or in a process listing.  The files land where this process's
``GANETI_ROOT`` says; then the node daemon is (re)started so it serves with the
new certificate, and the program only returns once the daemon accepts
connections, so the master can call it right away.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ganeti import bootstrap, constants, crypto, daemon, errors, pathutils

PROG = "ganeti-prepare-node-join"
# Explicit path of the node daemon executable (wins over every lookup)
NODED_ENV = "GANETI_NODED"
DAEMON_TIMEOUT = 30.0
MAX_REQUEST_SIZE = 1024 * 1024

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2

Output = Callable[[str], None]


class InvalidRequest(errors.ParameterError):
    """The JSON document on stdin is malformed or inconsistent."""


class JoinRefused(errors.GenericError):
    """Installing would break something that exists (e.g. membership of another cluster)."""


@dataclass(frozen=True)
class JoinRequest:
    cluster_name: str
    node_name: str
    node_cert: str
    node_key: str
    ca_cert: str
    bind: str
    port: int
    start_daemon: bool = True

    @property
    def files(self) -> bootstrap.NodeFiles:
        return bootstrap.NodeFiles(self.node_cert, self.node_key, self.ca_cert)


_STRING_FIELDS = ("cluster_name", "node_name", "node_cert", "node_key", "ca_cert", "bind")


def parse_request(text: str) -> JoinRequest:
    """Decode and check the master's request; every problem names the field."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidRequest(f"Input is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"Input must be a JSON object, not {type(data).__name__}")
    values: dict[str, Any] = {}
    for name in _STRING_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"Field '{name}' is missing or not a non-empty string")
        values[name] = value
    port = data.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidRequest(f"Field 'port' must be an integer in 1..65535, got {port!r}")
    start = data.get("start_daemon", True)
    if not isinstance(start, bool):
        raise InvalidRequest(f"Field 'start_daemon' must be a boolean, got {start!r}")
    try:
        values["bind"] = str(ipaddress.ip_address(values["bind"]))
    except ValueError:
        raise InvalidRequest(f"Field 'bind' is not an IP address: {values['bind']!r}") from None
    request = JoinRequest(port=port, start_daemon=start, **values)
    _check_crypto(request)
    return request


def _check_crypto(request: JoinRequest) -> None:
    """Refuse material that could never work, before touching any file."""
    try:
        cert = crypto.verify_certificate(request.node_cert, request.ca_cert)
    except errors.X509CertError as err:
        raise InvalidRequest(f"Field 'node_cert' is not usable: {err.args[0]}") from None
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not names or names[0].value != request.node_name:
        raise InvalidRequest(
            f"Field 'node_cert' is issued to {cert.subject.rfc4514_string()}, not to node"
            f" {request.node_name}")
    try:
        key = serialization.load_pem_private_key(request.node_key.encode("ascii"), None)
    except (ValueError, TypeError, UnicodeEncodeError) as err:
        raise InvalidRequest(f"Field 'node_key' is not an unencrypted PEM key: {err}") from None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise InvalidRequest("Field 'node_key' does not belong to the certificate in 'node_cert'")


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def check_existing_certificate(paths: pathutils.Paths, ca_cert_pem: str, force: bool) -> None:
    """A node certificate from another CA means the node belongs to another cluster."""
    path = paths.node_cert_file
    if force or not path.exists():
        return
    try:
        existing = crypto.load_certificate_file(path)
    except errors.X509CertError as err:
        raise JoinRefused(f"Existing node certificate {path} is unreadable ({err.args[0]});"
                          " use --force to replace it") from None
    ca_cert = crypto.load_certificate(ca_cert_pem)
    try:
        existing.verify_directly_issued_by(ca_cert)
    except Exception:  # wrong issuer name, bad signature or unusable key type
        raise JoinRefused(
            f"Node certificate {path} was issued by a different CA"
            f" ({existing.issuer.rfc4514_string()}, not {ca_cert.subject.rfc4514_string()});"
            " the node may belong to another cluster. Use --force to replace it") from None


def find_noded(argv0: str | None = None) -> list[str]:
    """Command that starts the node daemon: env override, source tree, then PATH."""
    explicit = os.environ.get(NODED_ENV)
    if explicit:
        return [explicit]
    own = Path(argv0 if argv0 is not None else sys.argv[0]).resolve()
    in_tree = own.parent.parent / "daemons" / constants.NODED
    if in_tree.is_file():
        # a source tree's daemon needs the interpreter that can import ganeti
        return [sys.executable, str(in_tree)]
    found = shutil.which(constants.NODED)
    if found:
        return [found]
    raise JoinRefused(f"Cannot find {constants.NODED} (not on PATH); set {NODED_ENV}")


def running_daemon_pid(paths: pathutils.Paths) -> int | None:
    """Pid of a live noded: its pid file lock is held for the daemon's whole life."""
    pid_file = paths.pid_file(constants.NODED)
    try:
        fd = os.open(pid_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return daemon.read_pid(pid_file)
        return None
    finally:
        os.close(fd)


def _wait_for_exit(pid: int, timeout: float) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:  # no pidfd support: poll instead
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.1)
        return False
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def stop_daemon(pid: int, timeout: float = DAEMON_TIMEOUT) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not _wait_for_exit(pid, timeout):
        raise JoinRefused(f"{constants.NODED} (pid {pid}) did not stop within {timeout:.0f}s")


def wait_for_port(address: str, port: int, timeout: float = DAEMON_TIMEOUT) -> None:
    """Return once ``address:port`` accepts TCP connections."""
    host = address
    if ipaddress.ip_address(address).is_unspecified:
        host = "::1" if ":" in address else "127.0.0.1"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise JoinRefused(f"{constants.NODED} does not accept connections on"
                                  f" {address}:{port} after {timeout:.0f}s: {err}") from None
        time.sleep(0.1)


def start_daemon(paths: pathutils.Paths, bind: str, port: int, out: Output,
                 argv0: str | None = None) -> int | None:
    """(Re)start noded on ``bind:port``; returns the new daemon's pid."""
    command = find_noded(argv0)
    old = running_daemon_pid(paths)
    if old is not None:
        out(f"Restarting {constants.NODED} (pid {old}) to load the new certificate")
        stop_daemon(old)
    try:
        done = subprocess.run([*command, "--bind", bind, "--port", str(port)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=DAEMON_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise JoinRefused(f"Cannot start {constants.NODED}: {err}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise JoinRefused(f"{constants.NODED} failed to start: {detail}")
    wait_for_port(bind, port)
    pid = daemon.read_pid(paths.pid_file(constants.NODED))
    out(f"{constants.NODED} running (pid {pid}) on {bind}:{port}")
    return pid


def prepare(request: JoinRequest, paths: pathutils.Paths, out: Output, *,
            force: bool = False, argv0: str | None = None) -> None:
    """Everything the node needs to join, in an order that fails before damage."""
    check_existing_certificate(paths, request.ca_cert, force)
    request.files.install(paths)
    out(f"Installed the certificate of node {request.node_name} for cluster"
        f" {request.cluster_name} in {paths.data_dir}")
    if request.start_daemon:
        start_daemon(paths, request.bind, request.port, out, argv0)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Install cluster certificates (JSON on stdin) and start the"
                               " node daemon; run by the master over SSH on node add")
    parser.add_argument("--force", action="store_true",
                        help="replace a node certificate issued by a different CA")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    opts = _parse_args(argv)
    source = stdin or sys.stdin
    out_stream = stdout or sys.stdout
    err_stream = stderr or sys.stderr

    def out(line: str) -> None:
        out_stream.write(line + "\n")
        out_stream.flush()

    if source.isatty():
        err_stream.write(f"{PROG}: expects the join request as JSON on stdin\n")
        return EXIT_INVALID
    try:
        text = source.read(MAX_REQUEST_SIZE + 1)
        if len(text) > MAX_REQUEST_SIZE:
            raise InvalidRequest(f"Input is larger than {MAX_REQUEST_SIZE} bytes")
        request = parse_request(text)
        prepare(request, pathutils.current(), out, force=opts.force)
    except InvalidRequest as err:
        err_stream.write(f"{PROG}: invalid request: {err.args[0]}\n")
        return EXIT_INVALID
    except (errors.GenericError, OSError) as err:
        message = err.args[0] if isinstance(err, errors.GenericError) and err.args else err
        err_stream.write(f"{PROG}: {message}\n")
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
