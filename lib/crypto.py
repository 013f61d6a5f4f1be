"""Cluster crypto material: X.509 certificates, TLS contexts and HMAC secrets.

Nodes authenticate each other with certificates signed by the cluster CA
(mutual TLS), not with DNS names; the CA key stays on the master.  Data that
travels between clusters through a third party is signed with an HMAC keyed
by the cluster domain secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import os
import secrets
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ganeti import errors
from ganeti.fileutils import atomic_write

# Clock skew tolerated between nodes when a certificate becomes valid
_NOT_BEFORE_SLACK = dt.timedelta(minutes=5)
_SIGNING_HASH = hashes.SHA256()

PemData = str | bytes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: fast to generate (tests and per-transfer certificates create
    # many) and accepted by every TLS 1.2+ implementation.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _as_bytes(data: PemData) -> bytes:
    return data.encode("ascii") if isinstance(data, str) else data


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, key_agreement: bool = False, key_cert_sign: bool = False,
               crl_sign: bool = False) -> x509.KeyUsage:
    """Every certificate here signs (ECDSA); the flags say what else its key may do."""
    return x509.KeyUsage(digital_signature=True, content_commitment=False,
                         key_encipherment=False, data_encipherment=False,
                         key_agreement=key_agreement, key_cert_sign=key_cert_sign,
                         crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _alt_names(names: Iterable[str], ips: Iterable[str]) -> list[x509.GeneralName]:
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt.extend(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)
    return alt


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             lifetime: dt.timedelta) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _NOT_BEFORE_SLACK)
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def generate_cluster_ca(cluster_name: str, validity_days: int) -> tuple[str, str]:
    """Create the cluster CA; returns ``(cert_pem, key_pem)``."""
    key = _new_key()
    name = _name(f"ganeti-ca.{cluster_name}")
    cert = (
        _builder(name, name, key.public_key(), dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True),
            critical=True)
        .sign(key, _SIGNING_HASH)
    )
    return _cert_pem(cert), _key_pem(key)


def _load_private_key(key_pem: PemData) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_as_bytes(key_pem), password=None)
    except ValueError as err:
        raise errors.X509CertError(f"Cannot load private key: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise errors.X509CertError(f"Unsupported key type {type(key).__name__}")
    return key


def generate_node_certificate(ca_cert_pem: PemData, ca_key_pem: PemData, node_name: str,
                              ips: Iterable[str], validity_days: int) -> tuple[str, str]:
    """Issue a node certificate usable both as TLS server and TLS client."""
    ca_cert = load_certificate(ca_cert_pem)
    ca_key = _load_private_key(ca_key_pem)
    key = _new_key()
    alt_names = _alt_names([node_name], ips)
    cert = (
        _builder(_name(node_name), ca_cert.subject, key.public_key(),
                 dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(key_agreement=True),
            critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False)
        .sign(ca_key, _SIGNING_HASH)
    )
    return _cert_pem(cert), _key_pem(key)


def generate_self_signed(common_name: str, validity_seconds: int) -> tuple[str, str]:
    """A short-lived self-signed certificate (one per disk transfer)."""
    key = _new_key()
    name = _name(common_name)
    cert = (
        _builder(name, name, key.public_key(), dt.timedelta(seconds=validity_seconds))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, _SIGNING_HASH)
    )
    return _cert_pem(cert), _key_pem(key)


def generate_server_certificate(common_name: str, names: Iterable[str], ips: Iterable[str],
                                validity_days: int) -> tuple[str, str]:
    """A self-signed TLS server certificate (RAPI's rapi.pem), usable as its own CA file.

    Its subjectAltName lists ``names`` and ``ips``, so clients that verify
    (curl --cacert rapi.pem) accept it for the master's name and address.
    """
    key = _new_key()
    name = _name(common_name)
    alt_names = _alt_names(dict.fromkeys(names), dict.fromkeys(ips))
    cert = (
        _builder(name, name, key.public_key(), dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(key_agreement=True, key_cert_sign=True),
            critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .sign(key, _SIGNING_HASH)
    )
    return _cert_pem(cert), _key_pem(key)


def plain_server_ssl_context(cert_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS server side without client certificates (RAPI: clients log in with a password)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(os.fspath(cert_file))
    except (OSError, ssl.SSLError) as err:
        raise errors.X509CertError(f"Cannot load TLS material ({cert_file}): {err}") from err
    return ctx


def _write_private(path: Path, data: str) -> None:
    # created 0600 from the start and renamed into place: never readable by
    # others, not even briefly, and never half written
    atomic_write(path, data, 0o600)


def write_pem_pair(path: str | os.PathLike[str], cert: PemData, key: PemData) -> None:
    """Store key and certificate in one file (mode 0600), as TLS contexts load them."""
    key_text = _as_bytes(key).decode("ascii").rstrip("\n") + "\n"
    cert_text = _as_bytes(cert).decode("ascii").rstrip("\n") + "\n"
    _write_private(Path(path), key_text + cert_text)


def write_private_file(path: str | os.PathLike[str], text: str) -> None:
    """Write a secret (e.g. the CA key or domain secret) atomically with mode 0600."""
    _write_private(Path(path), text)


def load_certificate(data: PemData) -> x509.Certificate:
    """Parse the first certificate of a PEM text (a key in front of it is skipped)."""
    raw = _as_bytes(data)
    start = raw.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise errors.X509CertError("No certificate found in PEM data")
    try:
        return x509.load_pem_x509_certificate(raw[start:])
    except ValueError as err:
        raise errors.X509CertError(f"Cannot load certificate: {err}") from err


def load_certificate_file(path: str | os.PathLike[str]) -> x509.Certificate:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise errors.X509CertError(f"Cannot read certificate file {path}: {err}") from err
    return load_certificate(data)


def check_validity(cert: x509.Certificate, now: dt.datetime | None = None) -> None:
    """Raise X509CertError if ``cert`` is not yet or no longer valid."""
    now = now or _now()
    subject = cert.subject.rfc4514_string()
    if now < cert.not_valid_before_utc:
        raise errors.X509CertError(
            f"Certificate {subject} is not yet valid (valid from "
            f"{cert.not_valid_before_utc.isoformat()})")
    if now > cert.not_valid_after_utc:
        raise errors.X509CertError(
            f"Certificate {subject} expired on {cert.not_valid_after_utc.isoformat()}")


def verify_certificate(cert_pem: PemData, ca_pem: PemData) -> x509.Certificate:
    """Check that ``cert_pem`` was signed by ``ca_pem`` and both are valid now."""
    cert = load_certificate(cert_pem)
    ca_cert = load_certificate(ca_pem)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except ValueError as err:
        raise errors.X509CertError(
            f"Certificate {cert.subject.rfc4514_string()} was not issued by "
            f"{ca_cert.subject.rfc4514_string()}: {err}") from err
    except InvalidSignature as err:
        raise errors.X509CertError(
            f"Certificate {cert.subject.rfc4514_string()} has an invalid signature "
            f"(not signed by {ca_cert.subject.rfc4514_string()})") from err
    except TypeError as err:
        raise errors.X509CertError(f"Unsupported CA key type: {err}") from err
    check_validity(ca_cert)
    check_validity(cert)
    return cert


def _base_context(protocol: int, cert_file: str | os.PathLike[str],
                  ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Peers are cluster members identified by the CA, not by DNS names
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(os.fspath(cert_file))
        ctx.load_verify_locations(cafile=os.fspath(ca_file))
    except (OSError, ssl.SSLError) as err:
        raise errors.X509CertError(
            f"Cannot load TLS material ({cert_file}, {ca_file}): {err}") from err
    return ctx


def server_ssl_context(cert_file: str | os.PathLike[str],
                       ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS server side: requires a client certificate signed by the cluster CA."""
    return _base_context(ssl.PROTOCOL_TLS_SERVER, cert_file, ca_file)


def client_ssl_context(cert_file: str | os.PathLike[str],
                       ca_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS client side: presents our certificate, accepts only CA-signed servers."""
    return _base_context(ssl.PROTOCOL_TLS_CLIENT, cert_file, ca_file)


def generate_secret(num_bytes: int = 32) -> str:
    return secrets.token_hex(num_bytes)


def generate_cluster_domain_secret() -> str:
    """A new secret shared by clusters that exchange instances."""
    return generate_secret(64)


def generate_salt() -> str:
    return generate_secret(8)


def hmac_sign(secret: str | bytes, text: str | bytes, salt: str | bytes = "") -> str:
    """HMAC-SHA1 over ``salt + text`` as a hex digest (Ganeti's wire format)."""
    key = _as_utf8(secret)
    return hmac.new(key, _as_utf8(salt) + _as_utf8(text), hashlib.sha1).hexdigest()


def hmac_verify(secret: str | bytes, text: str | bytes, digest: str,
                salt: str | bytes = "") -> bool:
    """Constant-time check of a digest made by :func:`hmac_sign`."""
    if not isinstance(digest, str):
        return False
    expected = hmac_sign(secret, text, salt)
    return hmac.compare_digest(expected.encode("ascii"), digest.lower().encode("utf-8"))


def _as_utf8(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value
