"""The RAPI users file: every password form, options, bad lines, reloading."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path

import pytest

from ganeti.rapi import auth, routes


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _write(path: Path, text: str) -> None:
    """Replace the file as an editor would (new inode), so the change is always seen."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_ha1_is_rfc2617_with_ganetis_realm() -> None:
    # the example of Ganeti's rapi.rst: echo -n 'jack:Ganeti Remote API:abc123' | md5sum
    expected = hashlib.md5(b"jack:Ganeti Remote API:abc123").hexdigest()
    assert auth.ha1("jack", "abc123") == expected


def test_every_password_form_and_option() -> None:
    text = "\n".join([
        "# Give Jack and Fred read-only access",
        "jack abc123",
        "fred {cleartext}foo555",
        "",
        "autocreator xyz789 write",
        f"jessica {{HA1}}{auth.ha1('jessica', 'pw1')} write",
        f"monitoring {{ha1}}{auth.ha1('monitoring', 'pw2').upper()} read",
        f"superuser {{Ha1}}{auth.ha1('superuser', 'pw3')} read,write",
        "   indented   {CLEARTEXT}{brace   write",
    ])
    users = auth.parse(text)
    assert sorted(users) == ["autocreator", "fred", "indented", "jack", "jessica",
                             "monitoring", "superuser"]
    cases = [("jack", "abc123", False), ("fred", "foo555", False),
             ("autocreator", "xyz789", True), ("jessica", "pw1", True),
             ("monitoring", "pw2", False), ("superuser", "pw3", True),
             ("indented", "{brace", True)]
    for name, password, write in cases:
        entry = users[name]
        assert auth.check_password(entry, name, password), name
        assert not auth.check_password(entry, name, password + "x"), name
        assert entry.user() == routes.User(name, read=True, write=write)
    # {cleartext} is a scheme, not part of the password; the HA1 is not a password
    assert not auth.check_password(users["fred"], "fred", "{cleartext}foo555")
    assert not auth.check_password(users["jessica"], "jessica", auth.ha1("jessica", "pw1"))
    # an HA1 is bound to its user name
    assert not auth.check_password(users["jessica"], "someone", "pw1")


def test_bad_lines_are_logged_with_their_number_and_skipped(
        caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join([
        "lonely",                      # 1: no password
        "weird {md5}abc write",        # 2: unknown scheme
        "broken {nobrace write",       # 3: no closing brace
        "empty {} write",              # 4: empty scheme
        "good pw write,admin",         # 5: unknown option, user kept
        "good pw2 read",               # 6: defined again
    ])
    with caplog.at_level(logging.WARNING, logger="ganeti.rapi.auth"):
        users = auth.parse(text, "users")
    assert list(users) == ["good"]
    assert users["good"].options == frozenset({"read"})
    assert auth.check_password(users["good"], "good", "pw2")
    log = caplog.text
    for number in (1, 2, 3, 4, 5, 6):
        assert f"users line {number}:" in log
    assert "admin" in log


def test_unknown_user_and_bad_headers_fail() -> None:
    assert not auth.check_password(None, "nobody", "")
    for header in (None, "", "Basic", "Bearer abc", "Basic !!!notbase64",
                   "Basic " + base64.b64encode(b"no-colon").decode(),
                   "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
        assert auth.parse_basic(header) is None, header
    assert auth.parse_basic(_basic("a", "b:c")) == ("a", "b:c")
    assert auth.parse_basic("basic " + base64.b64encode(b"a:").decode()) == ("a", "")


def test_users_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "rapi" / "users"
    users = auth.UsersFile(path)
    assert users.authenticate(_basic("admin", "secret")) is None  # no file: nobody
    path.parent.mkdir()
    _write(path, "admin secret write\n")
    assert users.authenticate(_basic("admin", "secret")) == routes.User("admin", True, True)
    assert users.authenticate(_basic("admin", "wrong")) is None
    assert users.authenticate(_basic("new", "pw")) is None
    _write(path, "admin secret write\nnew pw\n")
    assert users.authenticate(_basic("new", "pw")) == routes.User("new", True, False)
    # in place, same size: the mtime/ctime still differ
    with open(path, "w") as handle:
        handle.write("admin secreT write\nnew pw\n")
    os.utime(path, ns=(1, 1))
    assert users.authenticate(_basic("admin", "secret")) is None
    assert users.authenticate(_basic("admin", "secreT")) is not None
    path.unlink()
    assert users.authenticate(_basic("admin", "secreT")) is None


def test_unreadable_file_means_no_users(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                        ) -> None:
    path = tmp_path / "users"
    path.mkdir()  # reading a directory fails
    with caplog.at_level(logging.ERROR, logger="ganeti.rapi.auth"):
        assert auth.UsersFile(path).authenticate(_basic("a", "b")) is None
    assert "Cannot read the RAPI users file" in caplog.text


def test_undecodable_file_does_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"\xff\xfe garbage\nok pw\n")
    assert auth.UsersFile(path).authenticate(_basic("ok", "pw")) is not None
