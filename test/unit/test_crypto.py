"""Cluster CA, node certificates, TLS contexts and HMAC helpers."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ganeti import crypto, errors


@pytest.fixture(scope="module")
def ca() -> tuple[str, str]:
    return crypto.generate_cluster_ca("cluster.example.com", 30)


def _issue(ca_cert_pem: str, ca_key_pem: str, name: str, not_before: dt.datetime,
           not_after: dt.datetime) -> tuple[str, str]:
    """A certificate with an arbitrary validity window, signed by the given CA."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca_key_pem.encode(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def test_node_certificate_chains_to_ca(ca: tuple[str, str]) -> None:
    cert_pem, key_pem = crypto.generate_node_certificate(
        ca[0], ca[1], "node1.example.com", ["192.0.2.10", "2001:db8::1"], 10)
    cert = crypto.verify_certificate(cert_pem, ca[0])
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "node1.example.com"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node1.example.com"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == \
        {"192.0.2.10", "2001:db8::1"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=9) < remaining <= dt.timedelta(days=10)
    assert "PRIVATE KEY" in key_pem


def test_ca_is_a_ca(ca: tuple[str, str]) -> None:
    cert = crypto.load_certificate(ca[0])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    crypto.verify_certificate(ca[0], ca[0])  # self-signed


def test_certificate_from_other_ca_detected(ca: tuple[str, str]) -> None:
    other = crypto.generate_cluster_ca("other.example.com", 30)
    cert_pem, _ = crypto.generate_node_certificate(other[0], other[1], "n1", [], 10)
    with pytest.raises(errors.X509CertError, match="not issued by"):
        crypto.verify_certificate(cert_pem, ca[0])


def test_same_name_impostor_ca_detected(ca: tuple[str, str]) -> None:
    # Same subject as the real CA, different key: only the signature check catches it
    impostor = crypto.generate_cluster_ca("cluster.example.com", 30)
    cert_pem, _ = crypto.generate_node_certificate(impostor[0], impostor[1], "n1", [], 10)
    with pytest.raises(errors.X509CertError, match="invalid signature"):
        crypto.verify_certificate(cert_pem, ca[0])


def test_expired_certificate_detected(ca: tuple[str, str]) -> None:
    now = dt.datetime.now(dt.UTC)
    cert_pem, _ = _issue(ca[0], ca[1], "old", now - dt.timedelta(days=10),
                         now - dt.timedelta(days=1))
    with pytest.raises(errors.X509CertError, match="expired"):
        crypto.verify_certificate(cert_pem, ca[0])


def test_not_yet_valid_certificate_detected(ca: tuple[str, str]) -> None:
    now = dt.datetime.now(dt.UTC)
    cert_pem, _ = _issue(ca[0], ca[1], "future", now + dt.timedelta(days=1),
                         now + dt.timedelta(days=10))
    with pytest.raises(errors.X509CertError, match="not yet valid"):
        crypto.verify_certificate(cert_pem, ca[0])


def test_garbage_is_not_a_certificate() -> None:
    with pytest.raises(errors.X509CertError, match="No certificate"):
        crypto.load_certificate("hello")
    with pytest.raises(errors.X509CertError, match="Cannot load"):
        crypto.load_certificate("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_self_signed_validity() -> None:
    cert_pem, _ = crypto.generate_self_signed("transfer-1", 3600)
    cert = crypto.verify_certificate(cert_pem, cert_pem)
    remaining = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < remaining <= dt.timedelta(hours=1)
    other_pem, _ = crypto.generate_self_signed("transfer-1", 3600)
    with pytest.raises(errors.X509CertError):
        crypto.verify_certificate(cert_pem, other_pem)


def test_write_pem_pair_is_private(tmp_path: Path, ca: tuple[str, str]) -> None:
    target = tmp_path / "sub" / "server.pem"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o644)
    cert_pem, key_pem = crypto.generate_node_certificate(ca[0], ca[1], "n1", [], 10)
    crypto.write_pem_pair(target, cert_pem, key_pem)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert key_pem.strip() in text and cert_pem.strip() in text
    loaded = crypto.load_certificate_file(target)
    assert loaded == crypto.load_certificate(cert_pem)
    assert [p.name for p in target.parent.iterdir()] == ["server.pem"]  # no temp left


def test_write_private_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    crypto.write_private_file(target, "s3cret\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "s3cret\n"


def _tls_material(tmp_path: Path, ca: tuple[str, str], name: str) -> tuple[Path, Path]:
    cert_pem, key_pem = crypto.generate_node_certificate(ca[0], ca[1], name, ["127.0.0.1"], 5)
    pem = tmp_path / f"{name}.pem"
    crypto.write_pem_pair(pem, cert_pem, key_pem)
    ca_file = tmp_path / f"{name}-ca.pem"
    ca_file.write_text(ca[0])
    return pem, ca_file


def test_ssl_contexts_settings(tmp_path: Path, ca: tuple[str, str]) -> None:
    pem, ca_file = _tls_material(tmp_path, ca, "n1")
    for ctx in (crypto.server_ssl_context(pem, ca_file), crypto.client_ssl_context(pem, ca_file)):
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert not ctx.check_hostname
    with pytest.raises(errors.X509CertError, match="Cannot load TLS material"):
        crypto.server_ssl_context(tmp_path / "missing.pem", ca_file)


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[bool, bool]:
    """Handshake over a socket pair, then one byte each way; (server ok, client ok)."""
    left, right = socket.socketpair()
    left.settimeout(30)
    right.settimeout(30)
    outcome = {"server": False}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(left, server_side=True) as tls:
                tls.sendall(tls.recv(1))
                outcome["server"] = True
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    client_ok = False
    try:
        with client_ctx.wrap_socket(right) as tls:
            tls.sendall(b"x")
            client_ok = tls.recv(1) == b"x"
    except (ssl.SSLError, OSError):
        pass
    finally:
        right.close()
    thread.join(30)
    return outcome["server"], client_ok


def test_mutual_tls_accepts_cluster_members(tmp_path: Path, ca: tuple[str, str]) -> None:
    spem, sca = _tls_material(tmp_path, ca, "server")
    cpem, cca = _tls_material(tmp_path, ca, "client")
    assert _handshake(crypto.server_ssl_context(spem, sca),
                      crypto.client_ssl_context(cpem, cca)) == (True, True)


def test_mutual_tls_refuses_foreign_client(tmp_path: Path, ca: tuple[str, str]) -> None:
    other = crypto.generate_cluster_ca("evil", 30)
    spem, sca = _tls_material(tmp_path, ca, "server")
    cpem, _ = _tls_material(tmp_path, other, "client")
    client_ctx = crypto.client_ssl_context(cpem, sca)  # trusts the server, foreign cert
    assert _handshake(crypto.server_ssl_context(spem, sca), client_ctx) == (False, False)


def test_mutual_tls_refuses_client_without_certificate(tmp_path: Path,
                                                       ca: tuple[str, str]) -> None:
    spem, sca = _tls_material(tmp_path, ca, "server")
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.load_verify_locations(cafile=str(sca))
    assert _handshake(crypto.server_ssl_context(spem, sca), client_ctx) == (False, False)


# RFC 2202 test case 2 for HMAC-SHA1
_RFC2202_KEY = b"Jefe"
_RFC2202_DATA = "what do ya want for nothing?"
_RFC2202_DIGEST = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"


def test_hmac_matches_rfc2202() -> None:
    assert crypto.hmac_sign(_RFC2202_KEY, _RFC2202_DATA) == _RFC2202_DIGEST
    # the salt is prepended to the text
    assert crypto.hmac_sign(_RFC2202_KEY, "do ya want for nothing?", salt="what ") == \
        _RFC2202_DIGEST


def test_hmac_sign_verify_and_tamper() -> None:
    secret = crypto.generate_cluster_domain_secret()
    salt = crypto.generate_salt()
    digest = crypto.hmac_sign(secret, "payload", salt)
    assert crypto.hmac_verify(secret, "payload", digest, salt)
    assert crypto.hmac_verify(secret, "payload", digest.upper(), salt)
    assert not crypto.hmac_verify(secret, "payload!", digest, salt)
    assert not crypto.hmac_verify(secret, "payload", digest, crypto.generate_salt())
    assert not crypto.hmac_verify(secret + "x", "payload", digest, salt)
    tampered = ("0" if digest[0] != "0" else "1") + digest[1:]
    assert not crypto.hmac_verify(secret, "payload", tampered, salt)
    assert not crypto.hmac_verify(secret, "payload", "zzz\u00e9", salt)


def test_secrets_are_random_hex() -> None:
    secrets_seen = {crypto.generate_cluster_domain_secret() for _ in range(5)}
    assert len(secrets_seen) == 5
    for value in secrets_seen:
        assert len(value) == 128
        int(value, 16)
    salt = crypto.generate_salt()
    assert len(salt) == 16 and int(salt, 16) >= 0
