"""The RAPI users file (Ganeti's format) and HTTP Basic authentication against it.

Each line is ``user password [options]``; ``#`` starts a comment.  The
password is clear text unless it starts with ``{``: then a scheme prefix
(case-insensitive) says what follows, ``{cleartext}`` or ``{HA1}`` (the MD5
of ``user:Ganeti Remote API:password``, RFC 2617's H(A1)).  Options are
comma-separated: ``write`` allows changes and implies ``read``; every
authenticated user can read (Ganeti's plain GET resources need no option).

The file is re-read when its stat changes (checked on each request, a
single ``stat``), so users are added or removed without a restart.  A bad
line is logged and skipped; a missing or unreadable file means no users.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from ganeti.fileutils import file_stamp
from ganeti.rapi import routes

LOG = logging.getLogger(__name__)

CLEARTEXT = "{CLEARTEXT}"
HA1 = "{HA1}"
OPTIONS = frozenset({routes.READ, routes.WRITE})
# compared against for unknown users, so their answer takes as long as a wrong password
_UNREAD = object()
_DUMMY = hashlib.md5(b"nobody:" + routes.REALM.encode() + b":").hexdigest()


@dataclass(frozen=True)
class Entry:
    """One user of the file: the scheme (upper case) and its secret, and the options."""

    name: str
    scheme: str
    secret: str
    options: frozenset[str]

    def user(self) -> routes.User:
        return routes.User(self.name, read=True, write=routes.WRITE in self.options)


def ha1(user: str, password: str, realm: str = routes.REALM) -> str:
    """RFC 2617's H(A1), the ``{HA1}`` form of a password."""
    return hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()


def _split_password(text: str) -> tuple[str, str] | None:
    """(scheme, secret) of a users-file password; None for a malformed scheme."""
    if not text.startswith("{"):
        return CLEARTEXT, text
    end = text.find("}", 1)
    if end <= 1:
        return None
    return text[:end + 1].upper(), text[end + 1:]


def parse(text: str, source: str = "users file") -> dict[str, Entry]:
    """The users of a file's contents; bad lines are logged (with their number) and skipped."""
    users: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            LOG.warning("%s line %d: ignored, a user needs a name and a password",
                        source, number)
            continue
        name, password = parts[0], parts[1]
        split = _split_password(password)
        if split is None or split[0] not in (CLEARTEXT, HA1):
            LOG.warning("%s line %d: ignored user %r, unknown password scheme"
                        " (known: {cleartext}, {HA1})", source, number, name)
            continue
        options = frozenset(o.strip() for o in parts[2].split(",")) - {""} \
            if len(parts) > 2 else frozenset()
        unknown = options - OPTIONS
        if unknown:
            LOG.warning("%s line %d: user %r: unknown option(s) %s ignored", source, number,
                        name, ", ".join(sorted(unknown)))
        if name in users:
            LOG.warning("%s line %d: user %r defined again; the last line counts",
                        source, number, name)
        users[name] = Entry(name, split[0], split[1], options & OPTIONS)
    return users


def check_password(entry: Entry | None, name: str, password: str) -> bool:
    """Whether ``password`` is ``entry``'s, in time independent of where they differ."""
    if entry is None:
        hmac.compare_digest(_DUMMY, ha1(name, password))
        return False
    if entry.scheme == HA1:
        return hmac.compare_digest(entry.secret.lower().encode(),
                                   ha1(name, password).encode())
    return hmac.compare_digest(entry.secret.encode(), password.encode())


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic ...`` header; None if absent or bad."""
    if not header:
        return None
    parts = header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(parts[1].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if ":" not in decoded:
        return None
    user, password = decoded.split(":", 1)
    return user, password


class UsersFile:
    """The users file, re-read whenever its stat (inode, size, mtime, ctime) changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: object = _UNREAD
        self._users: dict[str, Entry] = {}
        self._lock = threading.Lock()

    def _current_stamp(self) -> tuple[int, ...] | None:
        return file_stamp(self.path)

    def users(self) -> dict[str, Entry]:
        stamp = self._current_stamp()
        with self._lock:
            if stamp != self._stamp:
                self._stamp = stamp
                self._users = self._load()
            return self._users

    def _load(self) -> dict[str, Entry]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            LOG.warning("No RAPI users file at %s: every request is refused", self.path)
            return {}
        except OSError as err:
            LOG.error("Cannot read the RAPI users file %s: %s", self.path, err)
            return {}
        users = parse(text, str(self.path))
        LOG.info("Read %d user(s) from %s", len(users), self.path)
        return users

    def authenticate(self, header: str | None) -> routes.User | None:
        """The user an Authorization header proves, or None (answer 401)."""
        creds = parse_basic(header)
        if creds is None:
            return None
        name, password = creds
        entry = self.users().get(name)
        if not check_password(entry, name, password):
            return None
        assert entry is not None
        return entry.user()
