"""The node daemon: answers the master's RPC calls over mutually authenticated HTTPS.

Wire protocol: ``POST /<procedure>`` with a JSON list of arguments; the reply is
``200`` with ``[true, payload]`` or ``[false, "message"]``.  The procedures are
the functions of the backend modules marked with
:func:`ganeti.rpc.contract.procedure`; each call's arguments are checked
against the function's signature before it runs (a bad one is a
``[false, "Invalid argument 'name' ..."]`` reply).  Transport-level
problems (no Content-Length, oversized body, bad JSON, unknown procedure) get an
HTTP error status with a ``[false, "message"]`` body.  Only peers presenting a
certificate signed by the cluster CA get past the TLS handshake.

Connection limits are those of :mod:`ganeti.server.connlimit`: at most
``--max-connections`` connections (the next few get a 503, the rest are
closed), a handshake deadline, an idle timeout between requests and a
deadline for receiving a started request (line, headers and body).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ganeti import constants, crypto, daemon, errors, pathutils, serializer
from ganeti.backend import NodeContext, RpcFail, files, hooks, info
from ganeti.backend import export as bk_export
from ganeti.backend import export_base as bk_export_base
from ganeti.backend import export_generations as bk_export_generations
from ganeti.backend import export_verify as bk_export_verify
from ganeti.backend import instance as bk_instance
from ganeti.backend import storage as bk_storage
from ganeti.backend import transfer as bk_transfer
from ganeti.backend import x509 as bk_x509
from ganeti.rpc import contract
from ganeti.server import connlimit, https

LOG = logging.getLogger("ganeti.noded")

MAX_BODY_SIZE = 64 * 1024 * 1024
# Connections served at once (beyond them new ones are refused, so a flood of
# even unauthenticated handshakes cannot exhaust threads); the idle timeout is
# how long a kept-alive connection waits for the master's next request
DEFAULT_LIMITS = connlimit.Limits(
    max_connections=constants.NODED_MAX_CONNECTIONS,
    idle_timeout=constants.NODED_IDLE_TIMEOUT,
    request_timeout=constants.NODED_REQUEST_TIMEOUT,
    handshake_timeout=constants.NODED_HANDSHAKE_TIMEOUT)
OPTION_FIELDS = ("max_connections", "idle_timeout", "request_timeout", "handshake_timeout")
_PROCEDURE_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

Procedure = Callable[..., Any]

# The backend modules this daemon serves: every marked function is a procedure
# (its signature is the call's contract; ganeti.tools.rpc_gen derives the master side)
SERVED_MODULES = (info, files, hooks, bk_storage, bk_instance, bk_transfer, bk_export,
                  bk_export_generations, bk_export_base, bk_export_verify, bk_x509)
TABLE: Mapping[str, contract.Procedure] = contract.collect(*SERVED_MODULES)
# wire name -> backend function(ctx, *args)
PROCEDURES: Mapping[str, Procedure] = MappingProxyType(
    {name: proc.func for name, proc in TABLE.items()})


def _procedure_table(procedures: Mapping[str, Procedure | contract.Procedure]
                     ) -> Mapping[str, contract.Procedure]:
    """Procedures (with validators) for a server; the served ones are built only once."""
    table: dict[str, contract.Procedure] = {}
    plain: dict[str, Procedure] = {}
    for name, proc in procedures.items():
        known = TABLE.get(name)
        if isinstance(proc, contract.Procedure):
            table[name] = proc
        elif known is not None and known.func is proc:
            table[name] = known
        else:
            plain[name] = proc
    table.update(contract.procedures(plain))
    return MappingProxyType(table)


class NodeRpcServer(https.TlsHttpServer):
    """HTTPS server running each connection in its own thread (TLS handshake included)."""

    thread_prefix = "noded"

    def __init__(self, address: tuple[str, int], ssl_context: ssl.SSLContext,
                 node_context: NodeContext,
                 procedures: Mapping[str, Procedure | contract.Procedure] = TABLE,
                 max_body_size: int = MAX_BODY_SIZE,
                 max_connections: int | None = None,
                 limits: connlimit.Limits = DEFAULT_LIMITS) -> None:
        self.node_context = node_context
        self.procedures = _procedure_table(procedures)
        self.max_body_size = max_body_size
        if max_connections is not None:
            limits = dataclasses.replace(limits, max_connections=max_connections)
        super().__init__(address, ssl_context, _RequestHandler, limits, "node daemon", LOG)

    def busy_body(self) -> tuple[bytes, str]:
        return json.dumps([False, self.gate.busy_message()]).encode(), "application/json"

    def dispatch(self, name: str, args: list[Any]) -> tuple[bool, Any]:
        """Run one procedure; failures become ``(False, message)``, never exceptions."""
        proc = self.procedures.get(name)
        if proc is None:
            return False, f"Unknown procedure '{name}'"
        try:
            args = proc.validate(args)
        except contract.ArgumentError as err:
            LOG.warning("Procedure %s refused: %s", name, err)
            return False, str(err)
        try:
            return True, proc.func(self.node_context, *args)
        except RpcFail as err:
            LOG.warning("Procedure %s failed: %s", name, err)
            return False, str(err)
        except errors.GenericError as err:
            LOG.warning("Procedure %s failed: %s", name, errors.format_error(err))
            return False, errors.format_error(err)
        except Exception as err:
            LOG.exception("Unexpected error in procedure %s", name)
            return False, f"Error while executing procedure '{name}': {type(err).__name__}: {err}"


class _RequestHandler(https.GuardedHandler):
    server_version = f"{constants.NODED}/{constants.PROTOCOL_VERSION}"
    server: NodeRpcServer

    def _reply(self, status: int, body: list[Any], close: bool = False) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self, status: int, message: str, close: bool = False) -> None:
        LOG.warning("Refused request %s %s from %s: %s", self.command, self.path,
                    https.format_peer(self.client_address), message)
        self._reply(status, [False, message], close)

    def _read_args(self) -> list[Any] | None:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            self._refuse(411, "Content-Length required", close=True)
            return None
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self._refuse(400, f"Invalid Content-Length {length_text!r}", close=True)
            return None
        if length > self.server.max_body_size:
            # The body is not read, so the connection cannot be reused
            self._refuse(413, f"Request body too large ({length} bytes, limit "
                              f"{self.server.max_body_size})", close=True)
            return None
        raw = self.rfile.read(length)
        if len(raw) != length:
            self.close_connection = True
            return None
        try:
            args = serializer.load_json(raw, "request body")
        except errors.ParseError as err:
            self._refuse(400, str(err.args[0]))
            return None
        if not isinstance(args, list):
            self._refuse(400, "Request body must be a JSON list of arguments")
            return None
        return args

    def do_POST(self) -> None:
        start = time.monotonic()
        peer = https.format_peer(self.client_address)
        name = self.path.lstrip("/").split("?", 1)[0]
        args = self._read_args()
        self.request_read()
        if args is None:
            return
        if not _PROCEDURE_RE.match(name) or name not in self.server.procedures:
            self._refuse(404, f"Unknown procedure '{name}'")
            return
        LOG.debug("RPC %s from %s started", name, peer)
        ok, payload = self.server.dispatch(name, args)
        try:
            data = json.dumps([ok, payload]).encode("utf-8")
        except (TypeError, ValueError) as err:
            LOG.error("Result of procedure %s cannot be encoded: %s", name, err)
            ok, data = False, json.dumps(
                [False, f"Result of procedure '{name}' cannot be encoded: {err}"]).encode()
        LOG.info("RPC %s from %s %s in %.3fs", name, peer, "succeeded" if ok else "failed",
                 time.monotonic() - start)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_allowed(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


def build_parser() -> argparse.ArgumentParser:
    return https.daemon_parser(constants.NODED, "Ganeti node daemon (RPC server)",
                               constants.DEFAULT_NODED_PORT, DEFAULT_LIMITS, OPTION_FIELDS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return https.parse_daemon_args(build_parser(), argv)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.root:
        # Absolute before daemonizing changes the directory; exported so that
        # hook scripts and helpers started by procedures see the same root.
        os.environ[pathutils.ROOT_ENV] = os.path.abspath(opts.root)
    paths = pathutils.current()

    def start() -> Any:
        ssl_context = crypto.server_ssl_context(paths.node_cert_file, paths.cluster_ca_file)
        server, stop = https.serve(
            lambda: NodeRpcServer((opts.bind, opts.port), ssl_context,
                                  NodeContext(paths=paths),
                                  limits=connlimit.from_options(opts, DEFAULT_LIMITS)),
            opts, "noded-accept", LOG, "Node daemon stopped")
        LOG.info("Listening on %s:%d (root %s)", opts.bind, server.port, paths.root)
        return stop

    return daemon.run(constants.NODED, paths.pid_file(constants.NODED),
                      paths.log_file(constants.NODED), opts.foreground, opts.debug, start)


if __name__ == "__main__":
    sys.exit(main())
