"""Per-transfer keys and certificates of remote exports, on the node that streams.

Each key lives in ``<crypto dir>/x509/<name>/`` (``key.pem``: key and
certificate, mode 0600; ``cert.pem``: the certificate alone).  Only the name
and the certificate leave the node; the master signs them for the other
cluster.  A transfer that names a key (option ``x509_key_name``) presents
it and trusts exactly one peer certificate (option ``x509_peer_ca``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import shutil
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ganeti import crypto, errors, pathutils
from ganeti.backend import NodeContext, RpcFail
from ganeti.fileutils import atomic_write
from ganeti.rpc.contract import procedure

_NAME_RE = re.compile(r"^x509-[0-9]{8,12}-[0-9a-f]{16}$")
MAX_VALIDITY = 7 * 24 * 3600
KEY_FILE = "key.pem"
CERT_FILE = "cert.pem"
# A directory without a readable certificate is removed once it is this old
BROKEN_GRACE = 3600.0


def x509_dir(paths: pathutils.Paths) -> Path:
    return paths.crypto_dir / "x509"


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RpcFail(f"Invalid certificate name {name!r}")
    return name


@procedure("normal", single_node=True)
def x509_cert_create(ctx: NodeContext, validity: int) -> list[str]:
    """New key and self-signed certificate; payload [name, cert PEM]."""
    if not 0 < validity <= MAX_VALIDITY:
        raise RpcFail(f"Invalid certificate validity {validity!r}")
    name = f"x509-{int(time.time())}-{secrets.token_hex(8)}"
    base = x509_dir(ctx.paths)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = base / name
    target.mkdir(mode=0o700)
    cert, key = crypto.generate_self_signed(f"ganeti-transfer-{name}", validity)
    crypto.write_pem_pair(target / KEY_FILE, cert, key)
    atomic_write(target / CERT_FILE, cert, 0o644)
    return [name, cert]


@procedure("fast", single_node=True)
def x509_cert_remove(ctx: NodeContext, name: str) -> bool:
    """Remove a per-transfer key and certificate."""
    target = x509_dir(ctx.paths) / _check_name(name)
    if not target.exists():
        return False
    shutil.rmtree(target)
    return True


def key_file(paths: pathutils.Paths, name: Any) -> Path:
    """The key+certificate file of ``name``, refused when missing or expired."""
    path = x509_dir(paths) / _check_name(name) / KEY_FILE
    if not path.is_file():
        raise RpcFail(f"Certificate {name} does not exist on this node (expired and"
                      " cleaned up, or created on another node)")
    try:
        crypto.check_validity(crypto.load_certificate_file(path))
    except errors.X509CertError as err:
        raise RpcFail(f"Certificate {name}: {err}") from None
    return path


def transfer_ssl_context(ctx: NodeContext, options: Mapping[str, Any],
                         server: bool) -> ssl.SSLContext:
    """TLS with the named key; the peer must present exactly ``x509_peer_ca``."""
    pair = key_file(ctx.paths, options.get("x509_key_name"))
    peer = options.get("x509_peer_ca")
    if not isinstance(peer, str):
        raise RpcFail("Remote transfer without the peer certificate (x509_peer_ca)")
    try:
        crypto.check_validity(crypto.load_certificate(peer))
    except errors.X509CertError as err:
        raise RpcFail(f"Peer certificate: {err}") from None
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    sslctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # the peer is identified by its certificate alone, not by a host name
    sslctx.check_hostname = False
    sslctx.verify_mode = ssl.CERT_REQUIRED
    try:
        sslctx.load_cert_chain(os.fspath(pair))
        sslctx.load_verify_locations(cadata=peer)
    except (OSError, ssl.SSLError) as err:
        raise RpcFail(f"Cannot load the transfer certificates: {err}") from None
    return sslctx


def remove_expired(paths: pathutils.Paths, now: dt.datetime | None = None) -> list[str]:
    """Remove keys whose certificate expired (the cleaner runs this from cron)."""
    base = x509_dir(paths)
    if not base.is_dir():
        return []
    now = now or dt.datetime.now(dt.UTC)
    removed = []
    for entry in sorted(base.iterdir()):
        if not entry.is_dir() or not _NAME_RE.match(entry.name):
            continue
        try:
            cert = crypto.load_certificate_file(entry / CERT_FILE)
            expired = now > cert.not_valid_after_utc
        except errors.X509CertError:
            expired = time.time() - entry.stat().st_mtime > BROKEN_GRACE
        if expired:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return removed


@procedure("fast")
def x509_cleanup(ctx: NodeContext) -> list[str]:
    """Remove expired per-transfer keys; payload: removed names."""
    return remove_expired(ctx.paths)
