"""Signed data exchanged between two clusters for a remote export (doc/remote-export.md).

Everything that travels from one cluster to the other goes through a third
party (move-instance, an administrator's script), so each piece carries an
HMAC keyed by the cluster domain secret both clusters share:

* handshake ``(version, hmac, salt)`` over ``"<version>:<HANDSHAKE_TEXT>"``;
* x509 key name ``(name, hmac, salt)`` over the name of the source node's key;
* signed certificate: the PEM text preceded by one line
  ``X-Ganeti-Signature: <salt>/<hex hmac over salt + PEM>``;
* per-disk destination ``(host, port, magic, hmac, salt)`` over
  ``"<disk index>:<host>:<port>:<magic>"``.

A check failure raises OpPrereqError (``wrong_input``) naming the opcode field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cryptography import x509

from ganeti import crypto, errors, pathutils

RIE_VERSION = 0
HANDSHAKE_TEXT = "ganeti-ng remote instance export"
# Per-transfer certificates live one day; the cleaner removes them afterwards
CERT_VALIDITY = 24 * 3600
SIGNATURE_HEADER = "X-Ganeti-Signature"
_SIGNATURE_RE = re.compile(
    rf"^{SIGNATURE_HEADER}:\s*(?P<salt>[0-9a-fA-F]{{1,64}})/(?P<hmac>[0-9a-fA-F]{{40}})\s*\n")
_SALT_RE = re.compile(r"^[0-9a-fA-F]{1,64}$")


def _invalid(field: str, message: str) -> errors.OpPrereqError:
    return errors.OpPrereqError(f"{field}: {message}", errors.ECODE_INVAL)


def read_domain_secret(paths: pathutils.Paths) -> str:
    """The cluster domain secret of this cluster (master only)."""
    try:
        secret = paths.cluster_domain_secret_file.read_text().strip()
    except OSError as err:
        raise errors.OpPrereqError(
            f"Cluster domain secret not readable ({err}); create one with"
            " gnt-cluster renew-crypto --new-cluster-domain-secret",
            errors.ECODE_ENVIRON) from None
    if not secret:
        raise errors.OpPrereqError(
            f"Cluster domain secret file {paths.cluster_domain_secret_file} is empty",
            errors.ECODE_ENVIRON)
    return secret


def _handshake_message(version: int) -> str:
    return f"{version}:{HANDSHAKE_TEXT}"


def compute_handshake(secret: str) -> list[Any]:
    salt = crypto.generate_salt()
    return [RIE_VERSION, crypto.hmac_sign(secret, _handshake_message(RIE_VERSION), salt),
            salt]


def check_handshake(secret: str, handshake: Any, field: str = "source_handshake") -> None:
    if not isinstance(handshake, list | tuple) or len(handshake) != 3:
        raise _invalid(field, "expected [version, hmac, salt]")
    version, digest, salt = handshake
    if isinstance(version, bool) or not isinstance(version, int):
        raise _invalid(field, f"invalid version {version!r}")
    if not isinstance(salt, str) or not _SALT_RE.match(salt):
        raise _invalid(field, "invalid salt")
    if not crypto.hmac_verify(secret, _handshake_message(version), digest, salt):
        raise _invalid(field, "HMAC does not match: the clusters do not share the same"
                              " cluster domain secret, or the data was altered")
    if version != RIE_VERSION:
        raise _invalid(field, f"remote export version {version} is not supported (this"
                              f" cluster speaks {RIE_VERSION})")


def sign_key_name(secret: str, name: str) -> list[str]:
    salt = crypto.generate_salt()
    return [name, crypto.hmac_sign(secret, name, salt), salt]


def check_key_name(secret: str, key_name: Any, field: str = "x509_key_name") -> str:
    """The verified key name."""
    if not isinstance(key_name, list | tuple) or len(key_name) != 3 \
            or not all(isinstance(v, str) for v in key_name):
        raise _invalid(field, "expected [name, hmac, salt]")
    name, digest, salt = key_name
    if not _SALT_RE.match(salt) or not crypto.hmac_verify(secret, name, digest, salt):
        raise _invalid(field, "HMAC does not match: wrong cluster domain secret or"
                              " tampered key name")
    return str(name)


def sign_certificate(secret: str, cert_pem: str) -> str:
    salt = crypto.generate_salt()
    pem = cert_pem.strip() + "\n"
    return f"{SIGNATURE_HEADER}: {salt}/{crypto.hmac_sign(secret, pem, salt)}\n{pem}"


def load_signed_certificate(secret: str, signed: Any, field: str
                            ) -> tuple[str, x509.Certificate]:
    """``(PEM, certificate)`` of a signed certificate that is valid now."""
    if not isinstance(signed, str):
        raise _invalid(field, "expected a signed PEM certificate")
    match = _SIGNATURE_RE.match(signed)
    if match is None:
        raise _invalid(field, f"certificate is not signed (no {SIGNATURE_HEADER} line)")
    pem = signed[match.end():]
    if not crypto.hmac_verify(secret, pem, match["hmac"], match["salt"]):
        raise _invalid(field, "certificate signature does not match: wrong cluster domain"
                              " secret or tampered certificate")
    try:
        cert = crypto.load_certificate(pem)
        crypto.check_validity(cert)
    except errors.X509CertError as err:
        raise _invalid(field, str(err)) from None
    return pem, cert


def _disk_message(index: int, host: str, port: int, magic: str) -> str:
    return f"{index}:{host}:{port}:{magic}"


def sign_disk_info(secret: str, index: int, host: str, port: int, magic: str) -> list[Any]:
    salt = crypto.generate_salt()
    digest = crypto.hmac_sign(secret, _disk_message(index, host, port, magic), salt)
    return [host, port, magic, digest, salt]


def check_disk_info(secret: str, index: int, info: Any,
                    field: str = "target_node") -> tuple[str, int, str]:
    """The verified ``(host, port, magic)`` of disk ``index``."""
    where = f"{field}[{index}]"
    if not isinstance(info, list | tuple) or len(info) != 5:
        raise _invalid(where, "expected [host, port, magic, hmac, salt]")
    host, port, magic, digest, salt = info
    if not isinstance(host, str) or not host or isinstance(port, bool) \
            or not isinstance(port, int) or not 0 < port < 65536 \
            or not isinstance(magic, str) or not isinstance(salt, str):
        raise _invalid(where, "invalid host, port, magic or salt")
    if not _SALT_RE.match(salt) or not crypto.hmac_verify(
            secret, _disk_message(index, host, port, magic), digest, salt):
        raise _invalid(where, "HMAC does not match: wrong cluster domain secret or"
                              " tampered destination")
    return host, port, magic


def write_domain_secret(path: Path, secret: str) -> None:
    crypto.write_private_file(path, secret.strip() + "\n")
