"""Signed inter-cluster data (ganeti.backup.remote): round trips and every refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ganeti import crypto, errors, pathutils
from ganeti.backup import remote

SECRET = "a" * 128
OTHER = "b" * 128


def _refused(match: str) -> Any:
    return pytest.raises(errors.OpPrereqError, match=match)


def test_handshake_round_trip_and_refusals() -> None:
    handshake = remote.compute_handshake(SECRET)
    assert handshake[0] == remote.RIE_VERSION and len(handshake[2]) == 16
    remote.check_handshake(SECRET, handshake)
    remote.check_handshake(SECRET, tuple(handshake))
    with _refused("source_handshake: HMAC does not match"):
        remote.check_handshake(OTHER, handshake)
    with _refused("source_handshake: HMAC does not match"):
        remote.check_handshake(SECRET, [handshake[0] + 1, *handshake[1:]])
    with _refused("source_handshake: HMAC"):
        remote.check_handshake(SECRET, [handshake[0], handshake[1], "00" + handshake[2]])
    # a correctly signed but unknown version is refused for the version
    salt = crypto.generate_salt()
    future = [9, crypto.hmac_sign(SECRET, f"9:{remote.HANDSHAKE_TEXT}", salt), salt]
    with _refused("version 9 is not supported"):
        remote.check_handshake(SECRET, future)
    for bad in (None, [], [0, "x"], "0:x:y", [True, handshake[1], handshake[2]],
                [0, handshake[1], "not hex"], [0, 5, handshake[2]]):
        with pytest.raises(errors.OpPrereqError) as info:
            remote.check_handshake(SECRET, bad)
        assert info.value.args[0].startswith("source_handshake:")
        assert info.value.ecode == errors.ECODE_INVAL


def test_key_name_round_trip_and_refusals() -> None:
    signed = remote.sign_key_name(SECRET, "x509-1700000000-0123456789abcdef")
    assert remote.check_key_name(SECRET, signed) == "x509-1700000000-0123456789abcdef"
    name, digest, salt = signed
    for bad in ([name + "0", digest, salt], [name, digest[::-1], salt], [name, digest, "ff"],
                [name, digest], [name, digest, 5], "name"):
        with _refused("x509_key_name:"):
            remote.check_key_name(SECRET, bad)
    with _refused("x509_key_name: HMAC does not match"):
        remote.check_key_name(OTHER, signed)


def test_signed_certificate_round_trip_and_refusals() -> None:
    cert_pem, _key = crypto.generate_self_signed("peer", 3600)
    signed = remote.sign_certificate(SECRET, cert_pem)
    assert signed.startswith(f"{remote.SIGNATURE_HEADER}: ")
    pem, cert = remote.load_signed_certificate(SECRET, signed, "source_x509_ca")
    assert pem.strip() == cert_pem.strip()
    assert cert.subject.rfc4514_string() == "CN=peer"
    lines = signed.splitlines(keepends=True)
    tampered = "".join([*lines[:3], lines[3].swapcase(), *lines[4:]])
    cases = [(OTHER, signed, "signature does not match"),
             (SECRET, tampered, "signature does not match"),
             (SECRET, "".join(lines[1:]), "is not signed"),
             (SECRET, signed.replace("X-Ganeti-Signature", "X-Other"), "is not signed"),
             (SECRET, None, "expected a signed PEM"),
             (SECRET, remote.sign_certificate(SECRET, "no certificate here"),
              "No certificate found")]
    for secret, text, message in cases:
        with _refused(f"destination_x509_ca: .*{message}"):
            remote.load_signed_certificate(secret, text, "destination_x509_ca")
    expired_pem, _ = crypto.generate_self_signed("old", -60)
    with _refused("source_x509_ca: Certificate CN=old expired"):
        remote.load_signed_certificate(SECRET, remote.sign_certificate(SECRET, expired_pem),
                                       "source_x509_ca")


def test_disk_info_round_trip_and_refusals() -> None:
    info = remote.sign_disk_info(SECRET, 1, "192.0.2.7", 40001, "m" * 32)
    assert info[:3] == ["192.0.2.7", 40001, "m" * 32]
    assert remote.check_disk_info(SECRET, 1, info) == ("192.0.2.7", 40001, "m" * 32)
    host, port, magic, digest, salt = info
    for idx, bad in ((0, info),                                   # another disk's entry
                     (1, ["192.0.2.8", port, magic, digest, salt]),
                     (1, [host, port + 1, magic, digest, salt]),
                     (1, [host, port, "n" * 32, digest, salt]),
                     (1, [host, port, magic, "0" * 40, salt])):
        with _refused(rf"target_node\[{idx}\]: HMAC does not match"):
            remote.check_disk_info(SECRET, idx, bad)
    bad_shapes: list[Any] = [
        [host, port, magic, digest], [host, "1", magic, digest, salt],
        [host, 0, magic, digest, salt], ["", port, magic, digest, salt],
        [host, True, magic, digest, salt], None]
    for bad in bad_shapes:
        with _refused(r"target_node\[1\]: (expected|invalid)"):
            remote.check_disk_info(SECRET, 1, bad)


def test_domain_secret_file(tmp_path: Path) -> None:
    paths = pathutils.Paths.for_root(tmp_path)
    with pytest.raises(errors.OpPrereqError, match="renew-crypto") as info:
        remote.read_domain_secret(paths)
    assert info.value.ecode == errors.ECODE_ENVIRON
    paths.data_dir.mkdir(parents=True)
    remote.write_domain_secret(paths.cluster_domain_secret_file, "  s3cret\n")
    assert paths.cluster_domain_secret_file.stat().st_mode & 0o777 == 0o600
    assert remote.read_domain_secret(paths) == "s3cret"
    paths.cluster_domain_secret_file.write_text("\n")
    with pytest.raises(errors.OpPrereqError, match="is empty"):
        remote.read_domain_secret(paths)
