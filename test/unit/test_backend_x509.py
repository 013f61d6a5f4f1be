"""Per-transfer keys on a node: creation, TLS that trusts only the peer, the cleaner."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ganeti import crypto, pathutils
from ganeti.backend import NodeContext, RpcFail, x509
from ganeti.server import noded
from ganeti.tools import x509_cleaner


def _ctx(tmp_path: Path, name: str = "node") -> NodeContext:
    return NodeContext(paths=pathutils.Paths.for_root(tmp_path / name))


def test_create_keeps_the_key_private_and_returns_the_certificate(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    name, cert_pem = x509.x509_cert_create(ctx, 3600)
    folder = x509.x509_dir(ctx.paths) / name
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / x509.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in (folder / x509.KEY_FILE).read_text()
    assert "PRIVATE KEY" not in cert_pem
    assert (folder / x509.CERT_FILE).read_text() == cert_pem
    cert = crypto.load_certificate(cert_pem)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3600 <= lifetime.total_seconds() <= 3600 + 600
    assert x509.key_file(ctx.paths, name) == folder / x509.KEY_FILE
    assert x509.x509_cert_remove(ctx, name) is True
    assert not folder.exists() and x509.x509_cert_remove(ctx, name) is False


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    for validity in (0, -5, 10**9):
        with pytest.raises(RpcFail, match="validity"):
            x509.x509_cert_create(ctx, validity)
    # wrong types are refused at the daemon's boundary (the signature)
    for bad in (True, "3600"):
        with pytest.raises(RpcFail, match="argument 'validity'"):
            noded.TABLE["x509_cert_create"].run(ctx, [bad])
    for name in ("../../etc", "x509-1-2", "x509-1700000000-0123456789abcdeg"):
        with pytest.raises(RpcFail, match="Invalid certificate name"):
            x509.x509_cert_remove(ctx, name)
    with pytest.raises(RpcFail, match="argument 'name'"):
        noded.TABLE["x509_cert_remove"].run(ctx, [None])
    with pytest.raises(RpcFail, match="does not exist on this node"):
        x509.key_file(ctx.paths, "x509-1700000000-0123456789abcdef")


def _plant(ctx: NodeContext, validity: int, stamp: int | None = None) -> Path:
    """A key directory as the node creates it, with any validity (negative: expired)."""
    name = f"x509-{stamp or int(time.time())}-{os.urandom(8).hex()}"
    folder = x509.x509_dir(ctx.paths) / name
    folder.mkdir(parents=True)
    cert, key = crypto.generate_self_signed(name, validity)
    crypto.write_pem_pair(folder / x509.KEY_FILE, cert, key)
    (folder / x509.CERT_FILE).write_text(cert)
    return folder


def test_expired_key_is_refused_and_cleaned(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    expired = _plant(ctx, -60)
    fresh = _plant(ctx, 3600)
    with pytest.raises(RpcFail, match="expired"):
        x509.key_file(ctx.paths, expired.name)
    broken_old = _plant(ctx, 3600)
    (broken_old / x509.CERT_FILE).write_text("garbage")
    os.utime(broken_old, (time.time() - 2 * x509.BROKEN_GRACE,) * 2)
    broken_new = _plant(ctx, 3600)
    (broken_new / x509.CERT_FILE).unlink()
    other = x509.x509_dir(ctx.paths) / "not-ours"
    other.mkdir()
    assert x509_cleaner.main(["--root", str(ctx.paths.root)]) == 0
    left = sorted(p.name for p in x509.x509_dir(ctx.paths).iterdir())
    assert left == sorted([fresh.name, broken_new.name, "not-ours"])
    assert x509.remove_expired(pathutils.Paths.for_root(tmp_path / "empty")) == []


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[Any, Any]:
    """Both sides' outcome of one TLS handshake plus one byte from server to client."""
    a, b = socket.socketpair()
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                tls.sendall(b"!")
                outcome["server"] = "ok"
        except (ssl.SSLError, OSError) as err:
            outcome["server"] = err

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b) as tls:
            outcome["client"] = "ok" if tls.recv(1) == b"!" else "no data"
    except (ssl.SSLError, OSError) as err:
        outcome["client"] = err
    thread.join(10)
    return outcome.get("server"), outcome["client"]


def test_transfer_tls_trusts_exactly_the_peer(tmp_path: Path) -> None:
    src, dst = _ctx(tmp_path, "src"), _ctx(tmp_path, "dst")
    src_name, src_cert = x509.x509_cert_create(src, 3600)
    dst_name, dst_cert = x509.x509_cert_create(dst, 3600)
    stranger_name, stranger_cert = x509.x509_cert_create(src, 3600)

    def tls(ctx: NodeContext, name: str, peer: str, server: bool) -> ssl.SSLContext:
        return x509.transfer_ssl_context(ctx, {"x509_key_name": name, "x509_peer_ca": peer},
                                         server)

    server = tls(dst, dst_name, src_cert, True)
    assert _handshake(server, tls(src, src_name, dst_cert, False)) == ("ok", "ok")
    # a client with another key (even from the same node) is turned away
    srv, cli = _handshake(server, tls(src, stranger_name, dst_cert, False))
    assert isinstance(srv, ssl.SSLError) and cli != "ok"
    # and a client never talks to a server it was not told about
    srv, cli = _handshake(tls(src, stranger_name, src_cert, True),
                          tls(src, src_name, dst_cert, False))
    assert isinstance(cli, ssl.SSLError) and "certificate verify failed" in str(cli)
    expired = crypto.generate_self_signed("old", -60)[0]
    for options, message in (({"x509_key_name": src_name}, "x509_peer_ca"),
                             ({"x509_key_name": src_name, "x509_peer_ca": "junk"},
                              "No certificate"),
                             ({"x509_key_name": src_name, "x509_peer_ca": expired},
                              "expired")):
        with pytest.raises(RpcFail, match=message):
            x509.transfer_ssl_context(src, options, False)
    assert stranger_cert != src_cert
