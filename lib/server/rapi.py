"""The RAPI daemon: Ganeti's REST API over HTTPS, a stateless LUXI client of masterd.

Each request: the body's size is checked from Content-Length before any of
it is read (413), the body is read within the request deadline, the
caller is authenticated against the users file (re-read when it changes),
and :func:`ganeti.rapi.routes.dispatch` answers it, talking to masterd over
the LUXI connection of its HTTP connection when the resource needs one.

The certificate is ``rapi.pem`` (created at cluster init; created here at
start when a cluster made before lacks it), self-signed, so clients can use
it as their CA file; a replaced file serves the next connections.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ganeti import bootstrap, constants, crypto, daemon, errors, limits, luxi, pathutils
from ganeti.fileutils import file_stamp
from ganeti.rapi import auth, http, resources, routes
from ganeti.server import connlimit, https

LOG = logging.getLogger("ganeti.rapi")

DEFAULT_LIMITS = connlimit.Limits(
    max_connections=constants.RAPI_MAX_CONNECTIONS,
    idle_timeout=constants.RAPI_IDLE_TIMEOUT,
    request_timeout=constants.RAPI_REQUEST_TIMEOUT,
    handshake_timeout=constants.RAPI_HANDSHAKE_TIMEOUT)
OPTION_FIELDS = ("max_connections", "idle_timeout", "request_timeout", "handshake_timeout")
# LUXI calls of one request; a long poll (/2/jobs/ID/wait) asks masterd for less
LUXI_TIMEOUT = 60.0


class _KeptClient(luxi.Client):
    """A LUXI client that stays connected after ``with``: the next request of the same
    HTTP connection reuses it (a new one costs masterd an accept and a thread)."""

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:  # the exchange may have stopped half-way
            self.close()


class LuxiBackend:
    """What handlers reach: masterd over LUXI, one connection per HTTP connection.

    Each HTTP connection has its own thread, so the LUXI client is kept per
    thread and closed when the HTTP connection ends (:meth:`end_thread`).
    """

    def __init__(self, address: str, timeout: float = LUXI_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._local = threading.local()

    def client(self) -> luxi.Client:
        cl: luxi.Client | None = getattr(self._local, "client", None)
        if cl is None:
            cl = self._local.client = _KeptClient(address=self.address, timeout=self.timeout)
        return cl

    def end_thread(self) -> None:
        cl: luxi.Client | None = getattr(self._local, "client", None)
        if cl is not None:
            self._local.client = None
            cl.close()


class CertificateFile:
    """rapi.pem as a TLS context, loaded again when the file changes (renew-crypto)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._current_stamp()
        self.context = crypto.plain_server_ssl_context(path)
        self._lock = threading.Lock()

    def _current_stamp(self) -> tuple[int, ...] | None:
        return file_stamp(self.path)

    def current(self) -> ssl.SSLContext:
        stamp = self._current_stamp()
        with self._lock:
            if stamp is not None and stamp != self._stamp:
                try:
                    self.context = crypto.plain_server_ssl_context(self.path)
                    LOG.info("Loaded the new certificate %s", self.path)
                except errors.X509CertError as err:  # half-written or broken: keep the old
                    LOG.error("Keeping the old certificate: %s", err)
                self._stamp = stamp
            return self.context


class RapiServer(https.TlsHttpServer):
    thread_prefix = "rapi"

    def __init__(self, address: tuple[str, int], certificate: CertificateFile,
                 users: auth.UsersFile, backend: routes.Backend,
                 limits_: connlimit.Limits = DEFAULT_LIMITS,
                 max_body_size: int = limits.RAPI_BODY.maximum) -> None:
        self.certificate = certificate
        self.users = users
        self.backend = backend
        self.max_body_size = max_body_size
        super().__init__(address, certificate.context, _RapiHandler, limits_, "ganeti-rapi",
                         LOG)

    def connection_context(self) -> ssl.SSLContext:
        return self.certificate.current()

    def busy_body(self) -> tuple[bytes, str]:
        return (http.HttpServiceUnavailable(self.gate.busy_message()).body_bytes(),
                http.CONTENT_JSON)


class _RapiHandler(https.GuardedHandler):
    server: RapiServer
    server_version = f"{constants.RAPI}/{constants.RELEASE_VERSION}"
    # buffered: headers and body leave in one write (one TLS record, one packet);
    # http.server flushes after each request
    wbufsize = -1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            end_thread = getattr(self.server.backend, "end_thread", None)
            if end_thread is not None:
                end_thread()

    def _send(self, answer: routes.Response, close: bool = False) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def _error(self, err: http.HttpError, close: bool = False) -> None:
        self._send(routes.Response(err.body_bytes(), err.code, headers=err.headers), close)

    def handle_expect_100(self) -> bool:
        """curl asks before sending a body: an oversized one is refused right away."""
        too_large = self._oversized()
        if too_large is not None:
            self._error(too_large, close=True)
            self.wfile.flush()
            return False
        invited = super().handle_expect_100()
        self.wfile.flush()  # the client waits for the 100 before sending the body
        return invited

    def _oversized(self) -> http.HttpError | None:
        text = self.headers.get("Content-Length") or "0"
        if text.isdigit() and int(text) > self.server.max_body_size:
            return http.HttpRequestEntityTooLarge(
                f"Request body of {int(text)} bytes exceeds the limit of"
                f" {self.server.max_body_size} bytes")
        return None

    def _read_body(self) -> bytes | None:
        """The body (b"" if none); None once an error was answered."""
        if self.headers.get("Transfer-Encoding"):
            self._error(http.HttpLengthRequired(
                "Chunked bodies are not accepted; send Content-Length"), close=True)
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            return b""
        try:
            length = int(text)
            if length < 0:
                raise ValueError
        except ValueError:
            self._error(http.HttpBadRequest(f"Invalid Content-Length {text!r:.40}"),
                        close=True)
            return None
        too_large = self._oversized()
        if too_large is not None:  # refused unread: the connection cannot be reused
            self._error(too_large, close=True)
            return None
        raw = self.rfile.read(length)
        if len(raw) != length:
            self.close_connection = True
            return None
        return raw

    def _serve(self) -> None:
        start = time.monotonic()
        body = self._read_body()
        self.request_read()
        if body is None:
            return
        path, _, query = self.path.partition("?")
        user = self.server.users.authenticate(self.headers.get("Authorization"))
        answer = routes.dispatch(self.server.backend, self.command, path, query, body,
                                 user, dict(self.headers.items()),
                                 self.headers.get("Content-Type") or "")
        self._send(answer)
        LOG.info("%s %s %s %s: %d in %.3fs", https.format_peer(self.client_address),
                 user.name if user else "-", self.command, path[:200], answer.status,
                 time.monotonic() - start)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve


def ensure_certificate(paths: pathutils.Paths, bind: str) -> None:
    """Create ``rapi.pem`` for a cluster made before RAPI existed (master's name, address)."""
    if paths.rapi_cert.exists():
        return
    names = [socket.getfqdn()]
    ips = [bind] if bind not in ("0.0.0.0", "::") else []
    try:
        with luxi.Client(address=str(paths.master_socket), timeout=10) as cl:
            info = cl.query_cluster_info()
        names = [str(info["master"]), str(info["name"]), *names]
        ips += [str(ip) for ip in (info.get("master_ip"),) if ip]
    except (errors.GenericError, KeyError) as err:
        LOG.warning("Cannot ask masterd for the master's name (%s); certificate for %s",
                    err, ", ".join(names + ips))
    bootstrap.write_rapi_certificate(paths, names, ips)
    LOG.info("Created %s for %s", paths.rapi_cert, ", ".join(names + ips))


def build_parser() -> argparse.ArgumentParser:
    return https.daemon_parser(constants.RAPI, "Ganeti remote API",
                               constants.DEFAULT_RAPI_PORT, DEFAULT_LIMITS, OPTION_FIELDS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return https.parse_daemon_args(build_parser(), argv)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.root:
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    paths = pathutils.current()

    def start() -> Any:
        resources.load_all()
        ensure_certificate(paths, opts.bind)
        certificate = CertificateFile(paths.rapi_cert)
        users = auth.UsersFile(paths.rapi_users)
        users.users()  # logs a missing or bad file at start
        server, stop = https.serve(
            lambda: RapiServer((opts.bind, opts.port), certificate, users,
                               LuxiBackend(str(paths.master_socket)),
                               connlimit.from_options(opts, DEFAULT_LIMITS)),
            opts, "rapi-accept", LOG, "RAPI daemon stopped")
        daemon.record_address(paths.address_file(constants.RAPI), opts.bind, server.port)
        LOG.info("Listening on %s:%d (root %s), %d resources", opts.bind, server.port,
                 paths.root, len(routes.TABLE))
        return stop

    return daemon.run(constants.RAPI, paths.pid_file(constants.RAPI),
                      paths.log_file(constants.RAPI), opts.foreground, opts.debug, start)


if __name__ == "__main__":
    sys.exit(main())
