"""Layout of a node's export directory and every filesystem change made in it.

The bottom of the export modules (``export_txn``, ``export`` and
``export_generations`` build on it, never the other way round).  Layout under
the node's export dir (instance names start with a letter or digit, so the
hidden names below never collide with an export):

- ``<instance>/``: the newest complete export (``config.ini`` plus dumps),
  Ganeti's layout;
- ``.staging/<instance>/``: an export being written (any valid name fits,
  ``inst.new`` included, and nothing is appended to it);
- ``.generations/<instance>/<name>/``: older generations, named by the UTC
  time of their ``[export] timestamp`` (e.g. ``20261129T031500Z``; see
  ``ganeti.backend.export_generations``);
- ``.journal/<id>.json``: the intent record of a finalize in progress
  (``ganeti.backend.export_txn``);
- ``<dir>/.removed-<id>``: a tree being deleted (renamed first, so no
  half-deleted export is ever visible under its name), and
  ``.previous-<id>``: the previous export set aside when the filesystem
  cannot exchange two directories.  Neither grows with the instance name.

Every filesystem change of finalize, remove and recovery goes through the
``fs_*`` functions below, so a test can make the N-th one fail
(:data:`FAULT_HOOK`).
"""

from __future__ import annotations

import configparser
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ganeti import constants
from ganeti.backend import NodeContext, RpcFail

STAGING_DIR = ".staging"
JOURNAL_DIR = ".journal"
GENERATIONS_DIR = ".generations"
# the generation name of an export whose timestamp name was already taken
GEN_NAME_FILE = ".generation"
GEN_RE = re.compile(r"^\d{8}T\d{6}Z(-\d{1,4})?$")
_MAX_SUFFIX = 9999
# where a removed tree waits for deletion (hidden, so never listed)
TRASH_PREFIX = ".removed-"
ASIDE_PREFIX = ".previous-"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100

# Tests set this to a callable(op, paths) that may raise before an operation runs.
FAULT_HOOK: Callable[[str, tuple[Path, ...]], None] | None = None


def check_name(instance_name: Any) -> str:
    """The name, if it is a valid instance name (journals on disk are checked too)."""
    if not isinstance(instance_name, str) or not NAME_RE.match(instance_name):
        raise RpcFail(f"Invalid instance name for an export: {instance_name!r}")
    return instance_name


def export_path(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / check_name(instance_name)


def staging_path(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / STAGING_DIR / check_name(instance_name)


def new_token() -> str:
    """A short unique id (time-ordered): names that do not grow with the instance name."""
    return f"{time.time_ns():x}{secrets.token_hex(3)}"


# --- filesystem operations (one place for fault injection) ----------------------------


def _fault(op: str, *paths: Path) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(op, paths)


def fs_mkdir(path: Path, mode: int = 0o750) -> None:
    _fault("mkdir", path)
    os.mkdir(path, mode)


def fs_makedirs(path: Path, mode: int = 0o750) -> list[Path]:
    """mkdir -p; returns the directories it created, outermost first."""
    missing = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        probe = probe.parent
    created = []
    for directory in reversed(missing):
        try:
            fs_mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue            # a concurrent export of another instance made it
        created.append(directory)
    return created


def fs_rename(src: Path, dst: Path) -> None:
    _fault("rename", src, dst)
    os.rename(src, dst)


def _exchange(a: Path, b: Path) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 not available")
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                 _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def fs_exchange(a: Path, b: Path) -> None:
    _fault("exchange", a, b)
    _exchange(a, b)


def fs_fsync(path: Path) -> None:
    """fsync a file or directory; unlike fileutils.fsync_dir a failure is raised."""
    _fault("fsync", path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fs_write(path: Path, data: str, mode: int = 0o640) -> None:
    """Write a file durably under its final name (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_name(f".{new_token()}.tmp")
    _fault("create", tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
            _fault("fsync", tmp)
            os.fsync(fd)
        finally:
            os.close(fd)
        fs_rename(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fs_fsync(path.parent)


def fs_unlink(path: Path) -> None:
    _fault("unlink", path)
    os.unlink(path)


def fs_rmdir(path: Path) -> None:
    _fault("rmdir", path)
    os.rmdir(path)


def fs_rmtree(path: Path) -> None:
    _fault("rmtree", path)
    shutil.rmtree(path)


def remove_tree(path: Path) -> bool:
    """Remove ``path`` so that no half-deleted export is ever visible under its name.

    The rename to a hidden trash name is the step that counts (an OSError
    there leaves everything as it was); deleting the trash may fail (EIO),
    then it stays a leftover for ``export_cleanup``.  Returns whether the
    tree is gone completely.
    """
    if not path.exists():
        return True
    trash = path.with_name(f"{TRASH_PREFIX}{new_token()}")
    fs_rename(path, trash)
    try:
        fs_fsync(path.parent)
        fs_rmtree(trash)
    except OSError:
        return False
    return True


# --- generation names ---------------------------------------------------------------


_DUMP_KEY_RE = re.compile(r"^disk\d{1,2}_dump$")


def dump_sizes(path: Path, config_text: str) -> dict[str, int]:
    """Byte sizes of the dumps config.ini names that are regular files in the export.

    The import takes a disk's size from its dump where config.ini says 0 (as
    Ganeti's exports may) and creates a disk blank whose dump is absent.  Names
    are looked up below ``path`` only (no absolute names, no "..", no symlinks);
    an unreadable config.ini gives {} (the master's parse refuses it anyway).
    """
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(config_text)
        names = [value for key, value in parser.items("instance") if _DUMP_KEY_RE.match(key)]
    except (configparser.Error, ValueError):
        return {}
    sizes: dict[str, int] = {}
    for name in names:
        parts = name.split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            continue
        target = path
        try:
            for part in parts:
                target = target / part
                if target.is_symlink():
                    raise FileNotFoundError(target)
            st = target.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[name] = st.st_size
    return sizes


def generation_name(timestamp: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(timestamp))


def check_generation(generation: Any) -> str:
    if not isinstance(generation, str) or not GEN_RE.match(generation):
        raise RpcFail(f"Invalid export generation {generation!r} (expected e.g."
                      " 20261129T031500Z)")
    return generation


def generations_root(ctx: NodeContext, instance_name: str) -> Path:
    return ctx.paths.export_dir / GENERATIONS_DIR / export_path(ctx, instance_name).name


def export_timestamp(path: Path) -> float:
    """The export's own timestamp; the directory's mtime if config.ini lacks one."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string((path / constants.EXPORT_CONF_FILE).read_text())
        return float(parser.get("export", "timestamp"))
    except (OSError, configparser.Error, ValueError):
        return path.stat().st_mtime


def export_name(path: Path) -> str:
    """The generation name of an export directory (newest or older)."""
    try:
        recorded = (path / GEN_NAME_FILE).read_text().strip()
    except OSError:
        recorded = ""
    return recorded if GEN_RE.match(recorded) else generation_name(export_timestamp(path))


def taken_names(ctx: NodeContext, instance_name: str) -> set[str]:
    """Names in use by the instance's generations on this node, the newest included."""
    root = generations_root(ctx, instance_name)
    names = {e.name for e in root.iterdir()} if root.is_dir() else set()
    newest = export_path(ctx, instance_name)
    if (newest / constants.EXPORT_CONF_FILE).is_file():
        names.add(export_name(newest))
    return names


def free_name(base: str, taken: set[str]) -> str:
    """``base`` or the first ``base-<n>`` not in ``taken``."""
    name, stem, suffix = base, base.split("-", 1)[0], 0
    while name in taken:
        suffix += 1
        if suffix > _MAX_SUFFIX:
            raise RpcFail(f"No free export generation name left for {stem}")
        name = f"{stem}-{suffix}"
    return name


def retire_target(ctx: NodeContext, instance_name: str, old_export: Path,
                  avoid: set[str]) -> Path:
    """Where a replaced export goes: its own name, unless that is taken (older data)."""
    root = generations_root(ctx, instance_name)
    own = export_name(old_export)
    taken = ({e.name for e in root.iterdir()} if root.is_dir() else set()) | avoid
    return root / (own if own not in taken else free_name(own, taken))
